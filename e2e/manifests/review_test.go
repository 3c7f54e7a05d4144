package manifests

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// reviewMode is the review mode the rendering's issuer runs with: "watch"
// when its arguments say --review=watch, else "tokenreview" (the default).
func reviewMode(t *testing.T, r Objects) string {
	t.Helper()
	mode := ""
	for _, d := range typed[appsv1.Deployment](t, r.Objs, "Deployment") {
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Name != "sts-issuer" {
				continue
			}
			mode = "tokenreview"
			for _, a := range c.Args {
				if v, ok := strings.CutPrefix(a, "--review="); ok {
					mode = v
				}
			}
		}
	}
	if mode == "" {
		t.Fatal("no sts-issuer container in the rendering")
	}
	return mode
}

// TestReviewModeRights applies each rendering's RBAC to the real API server
// and asks it (SubjectAccessReview) what the issuer's ServiceAccount may do
// with Pods, ServiceAccounts and Events (create and patch, in every mode:
// the Events of refused Pods): in review mode tokenreview get Pods and
// nothing more (no list: a list reads every Pod spec); in mode watch list and
// watch Pods and ServiceAccounts cluster-wide and get both, which its caches
// need. A rendering that runs the mode without its rights, or grants them
// without the mode, fails. At least one rendering of each mode is checked.
func TestReviewModeRights(t *testing.T) {
	env := cp.Require(t)
	cs := env.Clientset
	ctx := context.Background()
	seen := map[string]bool{}
	for i, r := range renderings(t) {
		t.Run(r.Name, func(t *testing.T) {
			ns := fmt.Sprintf("rbac-review-%d", i)
			issuer := withRBAC(ctx, t, cs, r, ns, "issuer")
			mode := reviewMode(t, r)
			seen[mode] = true
			watch := mode == "watch"
			checkRights(ctx, t, cs, ns, issuer, "review mode "+mode, []right{
				{"get", "pods", true},
				{"list", "pods", watch},
				{"watch", "pods", watch},
				{"get", "serviceaccounts", watch},
				{"list", "serviceaccounts", watch},
				{"watch", "serviceaccounts", watch},
				{"create", "pods", false},
				{"delete", "pods", false},
				{"update", "serviceaccounts", false},
				{"create", "events", true},
				{"patch", "events", true},
				{"delete", "events", false},
				{"list", "events", false},
			})
		})
	}
	if !seen["tokenreview"] || !seen["watch"] {
		t.Errorf("renderings checked cover review modes %v; want both", seen)
	}
}

// withRBAC applies the rendering's RBAC for namespace ns (created here) and
// returns the name of its ServiceAccount whose name contains component.
func withRBAC(ctx context.Context, t *testing.T, cs kubernetes.Interface, r Objects, ns, component string) string {
	t.Helper()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	applyRBAC(ctx, t, cs, r, ns)
	for _, sa := range typed[corev1.ServiceAccount](t, r.Objs, "ServiceAccount") {
		if strings.Contains(sa.Name, component) {
			return sa.Name
		}
	}
	t.Fatalf("no %s ServiceAccount in the rendering", component)
	return ""
}

// right is a verb on a core resource, and whether a ServiceAccount should
// have it cluster-wide.
type right struct {
	verb, resource string
	want           bool
}

// checkRights asks the API server (SubjectAccessReview) whether
// ServiceAccount sa of ns has each right cluster-wide, as the binaries ask.
// The authorizer sees new bindings moments after their create: what must
// be allowed is awaited (the first check is one), so the refusals after it
// are the rules', not the delay's.
func checkRights(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, sa, what string, rights []right) {
	t.Helper()
	for _, r := range rights {
		got := may(ctx, t, cs, ns, sa, r.verb, r.resource)
		for deadline := time.Now().Add(5 * time.Second); r.want && !got && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
			got = may(ctx, t, cs, ns, sa, r.verb, r.resource)
		}
		if got != r.want {
			t.Errorf("%s: %s may %s %s cluster-wide: %v, want %v", what, sa, r.verb, r.resource, got, r.want)
		}
	}
}

// may asks the API server whether ServiceAccount sa of ns may verb resource
// (core group) in every namespace.
func may(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, sa, verb, resource string) bool {
	t.Helper()
	res, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User:               "system:serviceaccount:" + ns + ":" + sa,
		Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
		ResourceAttributes: &authzv1.ResourceAttributes{Verb: verb, Resource: resource},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SubjectAccessReview: %v", err)
	}
	return res.Status.Allowed
}
