package manifests

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// publicPaths are the paths each endpoint's issuer serves to relying
// parties outside the cluster; the token endpoint is not one of them.
func publicPaths(endpointPath string) []string {
	return []string{endpointPath + "/.well-known/openid-configuration", endpointPath + "/jwks"}
}

// TestPublicRoutes: the Ingress and the Gateway API HTTPRoutes of the
// conventions values expose exactly each endpoint's discovery document and
// JWKS at its issuer.host (exact paths: never the token endpoint, which
// stays inside the cluster), to the issuer Service's HTTPS port; the
// BackendTLSPolicy verifies the issuer's certificate for a name the
// certificate carries, with the CA from the named ConfigMap.
func TestPublicRoutes(t *testing.T) {
	var r *Objects
	for _, o := range renderings(t) {
		if o.Name == "chart/conventions" {
			r = &o
		}
	}
	if r == nil {
		t.Fatal("no chart/conventions rendering")
	}
	// ci/conventions-values.yaml: endpoint vault at /vault on this host.
	const host, issuer, port = "sts.prod-eu-1.example.com", "sts-prod-issuer", int64(443)
	want := publicPaths("/vault")

	ingresses := typed[networkingv1.Ingress](t, r.Objs, "Ingress")
	if len(ingresses) != 1 || len(ingresses[0].Spec.Rules) != 1 || ingresses[0].Spec.Rules[0].Host != host {
		t.Fatalf("Ingresses: %+v", ingresses)
	}
	var got []string
	for _, p := range ingresses[0].Spec.Rules[0].HTTP.Paths {
		if p.PathType == nil || *p.PathType != networkingv1.PathTypeExact || p.Backend.Service.Name != issuer || p.Backend.Service.Port.Name != "https" {
			t.Errorf("Ingress path %s: type %v, backend %+v", p.Path, p.PathType, p.Backend.Service)
		}
		got = append(got, p.Path)
	}
	if !slices.Equal(got, want) {
		t.Errorf("Ingress paths %v, want %v", got, want)
	}

	routes := kinds(r.Objs, "HTTPRoute")
	if len(routes) != 1 {
		t.Fatalf("%d HTTPRoutes, want 1 (one endpoint with a host)", len(routes))
	}
	rt := routes[0].Object
	if hosts, _, _ := unstructured.NestedStringSlice(rt, "spec", "hostnames"); !slices.Equal(hosts, []string{host}) {
		t.Errorf("HTTPRoute hostnames %v", hosts)
	}
	rules, _, _ := unstructured.NestedSlice(rt, "spec", "rules")
	if len(rules) != 1 {
		t.Fatalf("HTTPRoute rules: %v", rules)
	}
	rule := rules[0].(map[string]any)
	got = nil
	for _, m := range rule["matches"].([]any) {
		path := m.(map[string]any)["path"].(map[string]any)
		if path["type"] != "Exact" {
			t.Errorf("HTTPRoute match %v is not Exact", path)
		}
		got = append(got, fmt.Sprint(path["value"]))
	}
	if !slices.Equal(got, want) {
		t.Errorf("HTTPRoute paths %v, want %v", got, want)
	}
	backends := rule["backendRefs"].([]any)
	if len(backends) != 1 || backends[0].(map[string]any)["name"] != issuer || fmt.Sprint(backends[0].(map[string]any)["port"]) != fmt.Sprint(port) {
		t.Errorf("HTTPRoute backendRefs %v, want %s:%d", backends, issuer, port)
	}
	if refs, _, _ := unstructured.NestedSlice(rt, "spec", "parentRefs"); len(refs) != 1 {
		t.Errorf("HTTPRoute parentRefs %v", refs)
	}

	policies := kinds(r.Objs, "BackendTLSPolicy")
	if len(policies) != 1 {
		t.Fatalf("%d BackendTLSPolicies, want 1", len(policies))
	}
	p := policies[0].Object
	targets, _, _ := unstructured.NestedSlice(p, "spec", "targetRefs")
	if len(targets) != 1 || targets[0].(map[string]any)["name"] != issuer || targets[0].(map[string]any)["kind"] != "Service" {
		t.Errorf("BackendTLSPolicy targetRefs %v", targets)
	}
	name, _, _ := unstructured.NestedString(p, "spec", "validation", "hostname")
	if !strings.HasPrefix(name, issuer+".") || !slices.Contains(issuerDNSNames(t, r), name) {
		t.Errorf("BackendTLSPolicy hostname %q is not one of the issuer certificate's names %v", name, issuerDNSNames(t, r))
	}
	cas, _, _ := unstructured.NestedSlice(p, "spec", "validation", "caCertificateRefs")
	if len(cas) != 1 || cas[0].(map[string]any)["name"] != "sts-issuer-ca" {
		t.Errorf("BackendTLSPolicy caCertificateRefs %v", cas)
	}
}

// kinds are the rendering's objects of kind.
func kinds(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// issuerDNSNames are the names the rendering's serving certificate (shared
// by the issuer and the webhook) carries: a cert-manager Certificate's
// dnsNames, or in self mode sts-webhook's --dns-name and --extra-dns-name.
func issuerDNSNames(t *testing.T, r *Objects) []string {
	t.Helper()
	for _, c := range kinds(r.Objs, "Certificate") {
		if names, ok, _ := unstructured.NestedStringSlice(c.Object, "spec", "dnsNames"); ok && len(names) > 0 {
			return names
		}
	}
	var names []string
	for _, d := range typed[appsv1.Deployment](t, r.Objs, "Deployment") {
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, a := range c.Args {
				if v, ok := strings.CutPrefix(a, "--dns-name="); ok {
					names = append(names, v)
				} else if v, ok := strings.CutPrefix(a, "--extra-dns-name="); ok {
					names = append(names, v)
				}
			}
		}
	}
	return names
}
