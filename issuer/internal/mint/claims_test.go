package mint

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestLabelClaim(t *testing.T) {
	for in, want := range map[string]string{"app": "app", "app.kubernetes.io/name": "app_kubernetes_io_name", "team-name": "team_name", "Tier_2": "Tier_2"} {
		if got := LabelClaim(in); got != want {
			t.Errorf("LabelClaim(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestStandardClaimsFromTags: the one list of claim names is the struct's
// tags, in token order, with the optional ones marked.
func TestStandardClaimsFromTags(t *testing.T) {
	want := []string{"iss", "aud", "exp", "nbf", "iat", "jti", "sub", "cluster", "namespace", "saname", "pod", "pod_uid", "node"}
	if !slices.Equal(StandardClaims, want) {
		t.Errorf("StandardClaims = %v, want %v", StandardClaims, want)
	}
	for n := range optionalClaims {
		if _, ok := (Options{}).optional()[n]; !ok {
			t.Errorf("claim %q is optional (omitempty) but no option turns it on", n)
		}
	}
	for n := range (Options{}).optional() {
		if !optionalClaims[n] {
			t.Errorf("an option turns on %q, which is not an optional claim of Claims", n)
		}
	}
}

func TestSupported(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{}, "iss aud exp nbf iat jti sub cluster namespace saname"},
		{Options{Node: true}, "iss aud exp nbf iat jti sub cluster namespace saname node"},
		{Options{Pod: true, PodUID: true, Node: true, Static: map[string]string{"zone": "a", "env": "prod"}, FromPodLabels: []string{"team", "app.kubernetes.io/name"}},
			"iss aud exp nbf iat jti sub cluster namespace saname pod pod_uid node env zone team app_kubernetes_io_name"},
	} {
		if got := strings.Join(c.o.Supported(), " "); got != c.want {
			t.Errorf("%+v: Supported() = %q, want %q", c.o, got, c.want)
		}
	}
}

func TestAdd(t *testing.T) {
	p := Pod{Name: "web-0", UID: "u-1", Node: "node-a", Labels: map[string]string{"team": "blue", "app.kubernetes.io/name": "web"}}
	var r Request
	Options{}.Add(&r, p)
	if r.Pod != "" || r.PodUID != "" || r.Node != "" || r.Extra != nil {
		t.Errorf("no options added %+v", r)
	}
	static := map[string]string{"env": "prod"}
	Options{Pod: true, Node: true, Static: static, FromPodLabels: []string{"app.kubernetes.io/name", "missing"}}.Add(&r, p)
	if r.Pod != "web-0" || r.PodUID != "" || r.Node != "node-a" {
		t.Errorf("pod claims: %+v", r)
	}
	if got := fmt.Sprint(r.Extra); got != "map[app_kubernetes_io_name:web env:prod]" {
		t.Errorf("extra claims: %s", got)
	}
	if len(static) != 1 {
		t.Errorf("Add changed the endpoint's static claims: %v", static)
	}
}

func TestValidate(t *testing.T) {
	var errs []string
	Options{Static: map[string]string{"Sub": "x", "env": "p", "bad-name": "y", "Groups": "z"}, FromPodLabels: []string{"ENV", "team", "not a label"}}.
		Validate("claims", func(f, format string, args ...any) { errs = append(errs, f+": "+fmt.Sprintf(format, args...)) })
	got := strings.Join(errs, "\n")
	for _, w := range []string{
		`claims.static: claim "Groups" would override a reserved claim`,
		`claims.static: claim "Sub" would override a standard claim`,
		`claims.static: claim name "bad-name" must be letters`,
		`claims.fromPodLabels[0]: label "ENV" would be claim "ENV", which is already the static claim "env"`,
		`claims.fromPodLabels[2]: "not a label" is not a label key`,
	} {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in:\n%s", w, got)
		}
	}
	if len(errs) != 5 {
		t.Errorf("want 5 problems, got %d:\n%s", len(errs), got)
	}
}

// TestClaimsJSONAsEncodingJSON: MarshalJSON writes what encoding/json
// writes for the struct (omitempty honoured) followed by the extra claims
// as a map (sorted, reserved names dropped), for plain and awkward values.
func TestClaimsJSONAsEncodingJSON(t *testing.T) {
	reference := func(c Claims) string {
		type standard Claims
		b, err := json.Marshal(standard(c))
		if err != nil {
			t.Fatal(err)
		}
		extra := map[string]string{}
		for k, v := range c.Extra {
			if !IsReserved(k) {
				extra[k] = v
			}
		}
		if len(extra) == 0 {
			return string(b)
		}
		e, err := json.Marshal(extra)
		if err != nil {
			t.Fatal(err)
		}
		return string(b[:len(b)-1]) + "," + string(e[1:])
	}
	full := Claims{Issuer: "https://sts.example/vault", Audience: "https://vault.example/", Expiry: 1768237089, NotBefore: 1768236129, IssuedAt: -1,
		ID: "ZAnw_QfexOtJPQ_v1ZNoSA", Subject: "c:ns:sa", Cluster: "c", Namespace: "ns", SAName: "sa", Pod: "web-0", PodUID: "u-1", Node: "node-a"}
	awkward := full
	awkward.Pod, awkward.Node = "", ""
	awkward.Extra = map[string]string{"team": `"quoted" <b>&\`, "zone": "ü\x00\n", "Sub": "x", "a": "", "groups": "admins"}
	for name, c := range map[string]Claims{"zero": {}, "standard": full, "optional unset, awkward extras": awkward} {
		got, err := c.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if want := reference(c); string(got) != want {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
	}
}
