package configfile

import (
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type keys struct {
	Managed *struct {
		Secret      string          `json:"secret"`
		RotateEvery metav1.Duration `json:"rotateEvery,omitempty"`
	} `json:"managed,omitempty"`
	Files []string `json:"files,omitempty"`
}

type endpoint struct {
	Name      string            `json:"name"`
	Audience  string            `json:"audience,omitempty"`
	TTL       metav1.Duration   `json:"ttl,omitempty"`
	Algorithm string            `json:"algorithm,omitempty"`
	Keys      keys              `json:"keys"`
	Static    map[string]string `json:"static,omitempty"`
	Pod       bool              `json:"pod,omitempty"`
	Memory    resource.Quantity `json:"memory,omitempty"`
	Replicas  int               `json:"replicas,omitempty"`
}

type config struct {
	Cluster   string     `json:"cluster"`
	Endpoints []endpoint `json:"endpoints"`
}

func decode(t *testing.T, text string) (*config, *Positions, error) {
	t.Helper()
	var c config
	p, err := Decode("issuer.yaml", []byte(strings.TrimLeft(text, "\n")), &c)
	return &c, p, err
}

func TestValidFileDecodes(t *testing.T) {
	c, p, err := decode(t, `
cluster: prod
endpoints:
- name: vault
  ttl: 15m
  algorithm: ES256
  keys: {managed: {secret: k, rotateEvery: 720h}}
  static: {env: prod, tier: "1"}
  pod: true
  memory: 16Mi
  replicas: 2
`)
	if err != nil {
		t.Fatal(err)
	}
	e := c.Endpoints[0]
	if c.Cluster != "prod" || e.TTL.Duration != 15*time.Minute || e.Keys.Managed.RotateEvery.Duration != 720*time.Hour ||
		!e.Pod || e.Memory.String() != "16Mi" || e.Replicas != 2 || e.Static["tier"] != "1" {
		t.Fatalf("decoded %+v", c)
	}
	if got := p.Line("endpoints[0].ttl"); got != 4 {
		t.Errorf("line of endpoints[0].ttl = %d, want 4", got)
	}
	if got := p.Line("endpoints[0].keys.managed.rotateEvery"); got != 6 {
		t.Errorf("line of a flow mapping's key = %d, want 6", got)
	}
}

// TestErrorsNameFileLineAndField is the promise: each mistake is
// reported with the file, the line and the field path, all of them at once.
func TestErrorsNameFileLineAndField(t *testing.T) {
	_, _, err := decode(t, `
cluster: prod
endpoints:
- name: vault
  algoritm: ES256
  ttl: 15min
  keys:
    managed: yes
  pod: on
  replicas: two
  static: [a, b]
clustr: x
`)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`issuer.yaml:4: endpoints[0]: unknown field "algoritm" (did you mean "algorithm"?)`,
		`issuer.yaml:5: endpoints[0].ttl: unknown unit "min" in duration "15min"`,
		`issuer.yaml:7: endpoints[0].keys.managed: is "yes", not a mapping`,
		`issuer.yaml:8: endpoints[0].pod: "on" is not a boolean: write true or false`,
		`issuer.yaml:9: endpoints[0].replicas: is "two", not a whole number`,
		`issuer.yaml:10: endpoints[0].static: is a list, not a mapping`,
		`issuer.yaml:11: unknown field "clustr" (did you mean "cluster"?)`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func TestYAML11BooleanRefused(t *testing.T) {
	for _, v := range []string{"yes", "no", "On", "OFF", "y"} {
		_, _, err := decode(t, "cluster: c\nendpoints:\n- name: a\n  pod: "+v+"\n")
		if err == nil || !strings.Contains(err.Error(), "issuer.yaml:4: endpoints[0].pod: \""+v+"\" is not a boolean") {
			t.Errorf("pod: %s: %v", v, err)
		}
	}
	if _, _, err := decode(t, "cluster: c\nendpoints:\n- name: a\n  pod: false\n"); err != nil {
		t.Errorf("pod: false: %v", err)
	}
}

func TestSyntaxErrorNamesLine(t *testing.T) {
	_, _, err := decode(t, "cluster: c\nendpoints:\n- name: a\n   ttl: 1m\n")
	if err == nil || !strings.HasPrefix(err.Error(), "issuer.yaml:4: ") {
		t.Fatalf("got %v, want an error at issuer.yaml:4", err)
	}
}

func TestAnnotateValidationErrors(t *testing.T) {
	_, p, err := decode(t, `
cluster: prod
endpoints:
- name: vault
  ttl: 15m
- name: aws
`)
	if err != nil {
		t.Fatal(err)
	}
	validation := errors.Join(
		errors.New("endpoints[0].ttl: 15m0s is outside the allowed 1m0s to 1h0m0s"),
		errors.New("endpoints[1].audience: is required"), // absent: the line of its endpoint
		errors.New("at least one thing is wrong"),        // no field: the file alone
	)
	got := p.Annotate(validation).Error()
	for _, want := range []string{
		"issuer.yaml:4: endpoints[0].ttl: 15m0s is outside",
		"issuer.yaml:5: endpoints[1].audience: is required",
		"issuer.yaml: at least one thing is wrong",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if p.Annotate(nil) != nil {
		t.Error("Annotate(nil) is not nil")
	}
}

func TestNoFileName(t *testing.T) {
	var c config
	_, err := Decode("", []byte("cluster: c\nendpoints: {}\n"), &c)
	if err == nil || !strings.HasPrefix(err.Error(), "line 2: endpoints: is a mapping, not a list") {
		t.Fatalf("got %v", err)
	}
}
