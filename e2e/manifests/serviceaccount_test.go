package manifests

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	admissionregv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-sts/kube-sts/shared/contract"
)

// serviceAccountOptIn says whether the rendering runs sts-webhook with
// --serviceaccount-opt-in.
func serviceAccountOptIn(t *testing.T, r Objects) bool {
	t.Helper()
	found := false
	for _, d := range typed[appsv1.Deployment](t, r.Objs, "Deployment") {
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Name == "sts-webhook" {
				found = true
				if slices.Contains(c.Args, "--serviceaccount-opt-in") {
					return true
				}
			}
		}
	}
	if !found {
		t.Fatal("no sts-webhook container in the rendering")
	}
	return false
}

// entryPath is where an entry sends its admissions: the Service's path or
// the URL's.
func entryPath(w admissionregv1.MutatingWebhook) string {
	if w.ClientConfig.Service != nil && w.ClientConfig.Service.Path != nil {
		return *w.ClientConfig.Service.Path
	}
	if u := w.ClientConfig.URL; u != nil {
		if i := strings.Index(strings.TrimPrefix(*u, "https://"), "/"); i >= 0 {
			return strings.TrimPrefix(*u, "https://")[i:]
		}
	}
	return ""
}

// selects reports whether the entry's namespaceSelector has the expression
// key op ["true"].
func selects(w admissionregv1.MutatingWebhook, key string, op metav1.LabelSelectorOperator) bool {
	if w.NamespaceSelector == nil {
		return false
	}
	return slices.ContainsFunc(w.NamespaceSelector.MatchExpressions, func(e metav1.LabelSelectorRequirement) bool {
		return e.Key == key && e.Operator == op && slices.Equal(e.Values, []string{"true"})
	})
}

// TestServiceAccountOptInRegistration: with ServiceAccount opt-in, one
// entry sends every Pod create of the enabled namespaces (labeled
// kube-sts.io/serviceaccount-opt-in: "true", no object selector) to
// /mutate-serviceaccount, and every label entry leaves those namespaces
// out (no Pod is sent twice); without it nothing names the label or the
// path, and the label entries are what they were. Both the chart and the
// kustomize component are checked.
func TestServiceAccountOptInRegistration(t *testing.T) {
	seen := map[bool]bool{}
	for _, r := range renderings(t) {
		t.Run(r.Name, func(t *testing.T) {
			on := serviceAccountOptIn(t, r)
			seen[on] = true
			cfgs := typed[admissionregv1.MutatingWebhookConfiguration](t, r.Objs, "MutatingWebhookConfiguration")
			if len(cfgs) != 1 {
				t.Fatalf("%d MutatingWebhookConfigurations", len(cfgs))
			}
			saEntries := 0
			for _, w := range cfgs[0].Webhooks {
				isSA := entryPath(w) == "/mutate-serviceaccount"
				if !isSA {
					if entryPath(w) != "/mutate" || w.ObjectSelector == nil || len(w.ObjectSelector.MatchLabels) != 1 {
						t.Errorf("label entry %s: path %q, object selector %v", w.Name, entryPath(w), w.ObjectSelector)
					}
					if selects(w, contract.LabelServiceAccountOptIn, metav1.LabelSelectorOpNotIn) != on {
						t.Errorf("label entry %s leaves the opt-in namespaces out: %v, want %v", w.Name, !on, on)
					}
					continue
				}
				saEntries++
				if w.ObjectSelector != nil && (len(w.ObjectSelector.MatchLabels) > 0 || len(w.ObjectSelector.MatchExpressions) > 0) {
					t.Errorf("ServiceAccount entry %s selects objects %v: it must see unlabeled Pods", w.Name, w.ObjectSelector)
				}
				if !selects(w, contract.LabelServiceAccountOptIn, metav1.LabelSelectorOpIn) {
					t.Errorf("ServiceAccount entry %s does not select the namespaces labeled %s", w.Name, contract.LabelServiceAccountOptIn)
				}
				if w.FailurePolicy == nil || *w.FailurePolicy != admissionregv1.Fail || w.ReinvocationPolicy == nil || *w.ReinvocationPolicy != admissionregv1.IfNeededReinvocationPolicy {
					t.Errorf("ServiceAccount entry %s: failurePolicy %v, reinvocationPolicy %v", w.Name, w.FailurePolicy, w.ReinvocationPolicy)
				}
			}
			if want := map[bool]int{true: 1, false: 0}[on]; saEntries != want {
				t.Errorf("--serviceaccount-opt-in %v: %d ServiceAccount entries, want %d", on, saEntries, want)
			}
		})
	}
	if !seen[true] || !seen[false] {
		t.Errorf("renderings cover ServiceAccount opt-in %v; want on and off", seen)
	}
}

// TestServiceAccountOptInRights applies each rendering's RBAC to the real
// API server and asks it (SubjectAccessReview) what the webhook's
// ServiceAccount may do cluster-wide: with ServiceAccount opt-in get, list
// and watch ServiceAccounts, and without it not; in no rendering change
// them, or read Pods or Secrets.
func TestServiceAccountOptInRights(t *testing.T) {
	env := cp.Require(t)
	cs := env.Clientset
	ctx := context.Background()
	for i, r := range renderings(t) {
		t.Run(r.Name, func(t *testing.T) {
			ns := fmt.Sprintf("rbac-sa-opt-in-%d", i)
			webhook := withRBAC(ctx, t, cs, r, ns, "webhook")
			on := serviceAccountOptIn(t, r)
			checkRights(ctx, t, cs, ns, webhook, fmt.Sprintf("ServiceAccount opt-in %v", on), []right{
				{"get", "serviceaccounts", on},
				{"list", "serviceaccounts", on},
				{"watch", "serviceaccounts", on},
				{"create", "serviceaccounts", false},
				{"update", "serviceaccounts", false},
				{"delete", "serviceaccounts", false},
				{"get", "pods", false},
				{"list", "pods", false},
				{"list", "secrets", false},
			})
		})
	}
}
