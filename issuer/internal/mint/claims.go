package mint

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kube-sts/kube-sts/shared/jsonstr"
)

// This file is the home of the token's claims: their names, the optional
// ones an endpoint may add (Options, the configuration's "claims"), the
// names no added claim may take, and how a Pod label becomes a claim.
// Adding a claim is a field of Claims (its json tag is its name), and, when
// optional, a field of Options and a line in Options.Add.

// Claims is the token's payload. Fields with omitempty are the optional
// claims of Options; the others are in every token.
type Claims struct {
	Issuer    string `json:"iss"`
	Audience  string `json:"aud"`
	Expiry    int64  `json:"exp"`
	NotBefore int64  `json:"nbf"`
	IssuedAt  int64  `json:"iat"`
	ID        string `json:"jti"`
	Subject   string `json:"sub"`
	Cluster   string `json:"cluster"`
	Namespace string `json:"namespace"`
	SAName    string `json:"saname"`
	Pod       string `json:"pod,omitempty"`
	PodUID    string `json:"pod_uid,omitempty"`
	Node      string `json:"node,omitempty"`
	// Extra are the endpoint's own claims; a name of the fields above is
	// dropped (configuration refuses such names at load).
	Extra map[string]string `json:"-"`
}

// MarshalJSON writes the standard claims in field order (an optional one
// only when set), then the extra ones in name order: what encoding/json
// writes for the struct and for a map, without its reflection per field
// and its second pass (a test holds the two equal).
func (c Claims) MarshalJSON() ([]byte, error) {
	v := reflect.ValueOf(&c).Elem()
	b := make([]byte, 0, 384)
	b = append(b, '{')
	for _, f := range claimFields {
		fv := v.Field(f.index)
		if f.optional && fv.IsZero() {
			continue
		}
		b = append(b, f.key...)
		if f.integer {
			b = strconv.AppendInt(b, fv.Int(), 10)
		} else {
			b = jsonstr.Append(b, fv.String())
		}
		b = append(b, ',')
	}
	for _, k := range slices.Sorted(maps.Keys(c.Extra)) {
		if IsReserved(k) {
			continue
		}
		b = jsonstr.Append(b, k)
		b = append(b, ':')
		b = jsonstr.Append(b, c.Extra[k])
		b = append(b, ',')
	}
	b[len(b)-1] = '}' // the last comma; iss is always there
	return b, nil
}

// StandardClaims are the names of the fields of Claims (read from their
// json tags), in the order a token carries them: extra claims never take
// them.
var StandardClaims, optionalClaims, claimFields = claimTable()

// claimField is how MarshalJSON writes one field of Claims.
type claimField struct {
	index    int
	key      string // "name":
	integer  bool   // int64; otherwise a string
	optional bool   // omitempty
}

func claimTable() (all []string, optional map[string]bool, fields []claimField) {
	optional = map[string]bool{}
	t := reflect.TypeFor[Claims]()
	for i := range t.NumField() {
		sf := t.Field(i)
		name, opts, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		all = append(all, name)
		f := claimField{index: i, key: `"` + name + `":`, optional: opts == "omitempty"}
		switch sf.Type.Kind() {
		case reflect.Int64:
			f.integer = true
		case reflect.String:
		default:
			panic(fmt.Sprintf("claim %s is a %s; MarshalJSON writes strings and int64s", name, sf.Type))
		}
		if f.optional {
			optional[name] = true
		}
		fields = append(fields, f)
	}
	return all, optional, fields
}

// ReservedClaims are names relying parties give a meaning of their own
// (authorized party, OAuth scope, group membership, email, delegation,
// proof of possession): no extra claim may take them either.
var ReservedClaims = []string{"azp", "scope", "groups", "email", "act", "cnf"}

// IsReserved reports whether an extra claim may not be called name: a
// standard or reserved name in any letter case. Relying parties that decode
// JSON case-insensitively (Go's encoding/json does) would otherwise read
// "Sub" or "Namespace" from a Pod label as sub or namespace.
func IsReserved(name string) bool {
	same := func(n string) bool { return strings.EqualFold(n, name) }
	return slices.ContainsFunc(StandardClaims, same) || slices.ContainsFunc(ReservedClaims, same)
}

// LabelClaim is the claim name of a Pod label: the key with every character
// other than a-z, A-Z, 0-9 and _ replaced by _, so that relying parties
// that read '/' or '.' in claim names as paths (Vault's bound_claims) see
// one flat name.
func LabelClaim(label string) string {
	b := []byte(label)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

// Options are an endpoint's optional claims about the Pod (the
// configuration's "claims"). All are strings.
type Options struct {
	// Pod adds the Pod's name as the pod claim.
	Pod bool `json:"pod,omitempty"`
	// PodUID adds the Pod's UID as the pod_uid claim.
	PodUID bool `json:"podUID,omitempty"`
	// Node adds the name of the Pod's node (from the live Pod) as the node claim.
	Node bool `json:"node,omitempty"`
	// Static claims are added to every token of the endpoint, e.g. env: prod.
	Static map[string]string `json:"static,omitempty"`
	// FromPodLabels copies these labels of the Pod into claims named by
	// LabelClaim (app stays app, app.kubernetes.io/name becomes
	// app_kubernetes_io_name); a label the Pod lacks is no claim. Whoever
	// may create Pods in a namespace chooses them: relying parties may bind
	// on them only together with the namespace.
	FromPodLabels []string `json:"fromPodLabels,omitempty"`
}

// optional says which optional standard claims o turns on.
func (o Options) optional() map[string]bool {
	return map[string]bool{"pod": o.Pod, "pod_uid": o.PodUID, "node": o.Node}
}

// Supported are the names of every claim a token of the endpoint may carry,
// for the discovery document's claims_supported: the standard ones in token
// order, the static ones sorted, then the label claims in configured order.
func (o Options) Supported() []string {
	on := o.optional()
	var out []string
	for _, n := range StandardClaims {
		if !optionalClaims[n] || on[n] {
			out = append(out, n)
		}
	}
	out = append(out, slices.Sorted(maps.Keys(o.Static))...)
	for _, l := range o.FromPodLabels {
		out = append(out, LabelClaim(l))
	}
	return out
}

// Pod is what the issuer knows of the Pod behind a subject token (from the
// TokenReview and the live Pod).
type Pod struct {
	Name, UID, Node string
	Labels          map[string]string
}

// Add puts the optional claims o asks for about p into r.
func (o Options) Add(r *Request, p Pod) {
	if o.Pod {
		r.Pod = p.Name
	}
	if o.PodUID {
		r.PodUID = p.UID
	}
	if o.Node {
		r.Node = p.Node
	}
	if len(o.Static) == 0 && len(o.FromPodLabels) == 0 {
		return
	}
	r.Extra = maps.Clone(o.Static)
	if r.Extra == nil {
		r.Extra = map[string]string{}
	}
	for _, l := range o.FromPodLabels {
		if v, ok := p.Labels[l]; ok {
			r.Extra[LabelClaim(l)] = v
		}
	}
}

// Validate calls bad(field, format, args...) for every name of o that would
// collide, in any letter case, with a standard or reserved claim or with
// another of o's: relying parties that decode JSON case-insensitively would
// read the later one. field is o's place in the configuration.
func (o Options) Validate(field string, bad func(field, format string, args ...any)) {
	taken := map[string]string{}
	for _, n := range StandardClaims {
		taken[n] = "a standard claim"
	}
	for _, n := range ReservedClaims {
		taken[n] = "a reserved claim"
	}
	for _, k := range slices.Sorted(maps.Keys(o.Static)) {
		switch lk := strings.ToLower(k); {
		case k == "" || LabelClaim(k) != k:
			bad(field+".static", "claim name %q must be letters, digits and '_' only", k)
		case taken[lk] != "":
			bad(field+".static", "claim %q would override %s (claim names are compared in any letter case)", k, taken[lk])
		default:
			taken[lk] = fmt.Sprintf("the static claim %q", k)
		}
	}
	for i, l := range o.FromPodLabels {
		f := fmt.Sprintf("%s.fromPodLabels[%d]", field, i)
		if errs := validation.IsQualifiedName(l); len(errs) > 0 {
			bad(f, "%q is not a label key: %s", l, strings.Join(errs, "; "))
			continue
		}
		n := LabelClaim(l)
		if taken[strings.ToLower(n)] != "" {
			bad(f, "label %q would be claim %q, which is already %s (claim names are compared in any letter case)", l, n, taken[strings.ToLower(n)])
			continue
		}
		taken[strings.ToLower(n)] = fmt.Sprintf("the claim of label %q", l)
	}
}
