package manifests

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// TestSecretsStayInTheirRoom applies the RBAC of every rendering (chart
// values files, kustomize overlays) to the real API server, each in a
// namespace of its own, and asks the API server's authorizer
// (SubjectAccessReview) what each shipped ServiceAccount may do with the
// Secrets the rendering names: the issuer's managed signing keys, the
// webhook's TLS Secret, every Secret a Deployment mounts. A component may
// get its own Secrets (those its Roles name) and neither get, list nor watch
// any other; nobody may list or watch Secrets without a name (which would
// read them all). Before the third audit the webhook's Role let it list and
// watch every Secret of the namespace, the issuer's keys among them.
func TestSecretsStayInTheirRoom(t *testing.T) {
	env := cp.Require(t)
	cs := env.Clientset
	ctx := context.Background()
	sawKeys, sawTLS := false, false
	for i, r := range renderings(t) {
		t.Run(r.Name, func(t *testing.T) {
			ns := fmt.Sprintf("rbac-room-%d", i)
			if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
			own := applyRBAC(ctx, t, cs, r, ns)
			var sas []string
			for _, sa := range typed[corev1.ServiceAccount](t, r.Objs, "ServiceAccount") {
				sas = append(sas, sa.Name)
			}
			if len(sas) < 2 {
				t.Fatalf("found ServiceAccounts %v, want the issuer's and the webhook's", sas)
			}
			named := secretsNamed(t, r)
			for _, sa := range sas {
				for _, verb := range []string{"list", "watch"} {
					if allowed(ctx, t, cs, ns, sa, verb, "") {
						t.Errorf("%s may %s every Secret of its namespace", sa, verb)
					}
				}
				for _, secret := range named {
					mine := slices.Contains(own[sa], secret)
					if mine {
						if !allowed(ctx, t, cs, ns, sa, "get", secret) {
							t.Errorf("%s may not get its own Secret %s", sa, secret)
						}
						continue
					}
					for _, verb := range []string{"get", "list", "watch"} {
						if allowed(ctx, t, cs, ns, sa, verb, secret) {
							t.Errorf("%s may %s Secret %s, which is not its own (its own: %v)", sa, verb, secret, own[sa])
						}
					}
				}
			}
			for sa, secrets := range own {
				for other, theirs := range own {
					if other != sa {
						for _, s := range secrets {
							if slices.Contains(theirs, s) {
								t.Errorf("Secret %s is both %s's and %s's", s, sa, other)
							}
						}
					}
				}
				if strings.Contains(sa, "issuer") && len(secrets) > 0 {
					sawKeys = true
				}
				if strings.Contains(sa, "webhook") && len(secrets) > 0 {
					sawTLS = true
				}
			}
		})
	}
	// The check above would pass with no Secrets at all: some rendering
	// must give the issuer its keys and the webhook its TLS Secret.
	if !sawKeys || !sawTLS {
		t.Errorf("no rendering names the issuer's key Secret (%v) or the webhook's TLS Secret (%v)", sawKeys, sawTLS)
	}
}

// applyRBAC creates the rendering's Roles, ClusterRoles and their bindings
// for namespace ns (cluster-scoped names get the namespace as a suffix), and
// returns the Secrets each ServiceAccount's Roles name for get.
func applyRBAC(ctx context.Context, t *testing.T, cs kubernetes.Interface, r Objects, ns string) map[string][]string {
	t.Helper()
	suffix := "-" + ns
	subjects := func(ss []rbacv1.Subject) []rbacv1.Subject {
		out := slices.Clone(ss)
		for i := range out {
			if out[i].Kind == rbacv1.ServiceAccountKind {
				out[i].Namespace = ns
			}
		}
		return out
	}
	roleSecrets := map[string][]string{}
	for _, role := range typed[rbacv1.Role](t, r.Objs, "Role") {
		for _, rule := range role.Rules {
			if slices.Contains(rule.Resources, "secrets") && slices.Contains(rule.Verbs, "get") {
				roleSecrets[role.Name] = append(roleSecrets[role.Name], rule.ResourceNames...)
			}
		}
		role.Namespace, role.ResourceVersion = ns, ""
		if _, err := cs.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	for _, cr := range typed[rbacv1.ClusterRole](t, r.Objs, "ClusterRole") {
		cr.Name += suffix
		if _, err := cs.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cs.RbacV1().ClusterRoles().Delete(context.Background(), cr.Name, metav1.DeleteOptions{}) })
	}
	own := map[string][]string{}
	for _, rb := range typed[rbacv1.RoleBinding](t, r.Objs, "RoleBinding") {
		rb.Namespace, rb.Subjects = ns, subjects(rb.Subjects)
		if rb.RoleRef.Kind == "ClusterRole" {
			rb.RoleRef.Name += suffix
		} else {
			for _, s := range rb.Subjects {
				own[s.Name] = append(own[s.Name], roleSecrets[rb.RoleRef.Name]...)
			}
		}
		if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	for _, crb := range typed[rbacv1.ClusterRoleBinding](t, r.Objs, "ClusterRoleBinding") {
		crb.Name += suffix
		crb.RoleRef.Name += suffix
		crb.Subjects = subjects(crb.Subjects)
		if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cs.RbacV1().ClusterRoleBindings().Delete(context.Background(), crb.Name, metav1.DeleteOptions{})
		})
	}
	return own
}

// secretsNamed lists every Secret a rendering names: in RBAC rules, in
// Deployments' volumes, and as cert-manager Certificates' secretName.
func secretsNamed(t *testing.T, r Objects) []string {
	t.Helper()
	var out []string
	add := func(s string) {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, role := range typed[rbacv1.Role](t, r.Objs, "Role") {
		for _, rule := range role.Rules {
			if slices.Contains(rule.Resources, "secrets") {
				for _, n := range rule.ResourceNames {
					add(n)
				}
			}
		}
	}
	for _, o := range r.Objs {
		switch o.GetKind() {
		case "Deployment":
			vols, _, _ := unstructuredSlice(o.Object, "spec", "template", "spec", "volumes")
			for _, v := range vols {
				if m, ok := v.(map[string]any); ok {
					if s, ok := m["secret"].(map[string]any); ok {
						add(fmt.Sprint(s["secretName"]))
					}
				}
			}
		case "Certificate":
			if spec, ok := o.Object["spec"].(map[string]any); ok {
				add(fmt.Sprint(spec["secretName"]))
			}
		}
	}
	return out
}

func unstructuredSlice(obj map[string]any, path ...string) ([]any, bool, error) {
	var cur any = obj
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false, nil
		}
		cur = m[p]
	}
	s, ok := cur.([]any)
	return s, ok, nil
}

// allowed asks the API server whether ServiceAccount sa of ns may verb
// Secrets in ns (name "" for the whole collection; for list and watch a
// name is what a metadata.name field selector asks for).
func allowed(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, sa, verb, name string) bool {
	t.Helper()
	res, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User:               "system:serviceaccount:" + ns + ":" + sa,
		Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
		ResourceAttributes: &authzv1.ResourceAttributes{Namespace: ns, Verb: verb, Resource: "secrets", Name: name},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SubjectAccessReview: %v", err)
	}
	return res.Status.Allowed
}
