package kube

import (
	"context"
	"fmt"
	"os"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	sigsyaml "sigs.k8s.io/yaml"
)

// ShippedRBAC says how to grant a test process what a shipped manifest
// grants our ServiceAccount: the same rules, bound to User instead, in
// Namespace, with the resourceNames a user would edit (a renamed Secret or
// webhook configuration) replaced per Rename. Cluster-scoped objects get
// Suffix, so that suites with different names do not collide.
type ShippedRBAC struct {
	File      string
	User      string
	Namespace string
	Rename    map[string][]string
	Suffix    string
}

// Apply creates (or updates) the Roles, ClusterRoles and their bindings of
// the manifest. Nothing broader than the shipped rules is ever granted, so
// every suite that runs our binaries proves least privilege.
func (r ShippedRBAC) Apply(ctx context.Context, c kubernetes.Interface) error {
	data, err := os.ReadFile(r.File)
	if err != nil {
		return err
	}
	err = eachDoc(data, func(doc []byte) error {
		var meta metav1.TypeMeta
		if err := sigsyaml.Unmarshal(doc, &meta); err != nil {
			return err
		}
		if err := r.apply(ctx, c, meta.Kind, doc); err != nil {
			return fmt.Errorf("%s: %w", meta.Kind, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w", r.File, err)
	}
	return nil
}

func decode(doc []byte, into any) error { return sigsyaml.UnmarshalStrict(doc, into) }

func (r ShippedRBAC) apply(ctx context.Context, c kubernetes.Interface, kind string, doc []byte) error {
	subjects := []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: r.User}}
	switch kind {
	case "Role":
		var o rbacv1.Role
		if err := decode(doc, &o); err != nil {
			return err
		}
		o.Namespace, o.Rules = r.Namespace, r.rename(o.Rules)
		return upsert(func() error {
			_, err := c.RbacV1().Roles(r.Namespace).Create(ctx, &o, metav1.CreateOptions{})
			return err
		},
			func() error {
				_, err := c.RbacV1().Roles(r.Namespace).Update(ctx, &o, metav1.UpdateOptions{})
				return err
			})
	case "RoleBinding":
		var o rbacv1.RoleBinding
		if err := decode(doc, &o); err != nil {
			return err
		}
		o.Namespace, o.Subjects = r.Namespace, subjects
		return upsert(func() error {
			_, err := c.RbacV1().RoleBindings(r.Namespace).Create(ctx, &o, metav1.CreateOptions{})
			return err
		},
			func() error {
				_, err := c.RbacV1().RoleBindings(r.Namespace).Update(ctx, &o, metav1.UpdateOptions{})
				return err
			})
	case "ClusterRole":
		var o rbacv1.ClusterRole
		if err := decode(doc, &o); err != nil {
			return err
		}
		o.Name, o.Rules = o.Name+r.Suffix, r.rename(o.Rules)
		return upsert(func() error { _, err := c.RbacV1().ClusterRoles().Create(ctx, &o, metav1.CreateOptions{}); return err },
			func() error { _, err := c.RbacV1().ClusterRoles().Update(ctx, &o, metav1.UpdateOptions{}); return err })
	case "ClusterRoleBinding":
		var o rbacv1.ClusterRoleBinding
		if err := decode(doc, &o); err != nil {
			return err
		}
		o.Name, o.RoleRef.Name, o.Subjects = o.Name+r.Suffix, o.RoleRef.Name+r.Suffix, subjects
		return upsert(func() error {
			_, err := c.RbacV1().ClusterRoleBindings().Create(ctx, &o, metav1.CreateOptions{})
			return err
		},
			func() error {
				_, err := c.RbacV1().ClusterRoleBindings().Update(ctx, &o, metav1.UpdateOptions{})
				return err
			})
	}
	return nil // not RBAC
}

// rename replaces resourceNames; a rule whose names all map to nothing is
// dropped (left without names it would grant every object of its kind).
func (r ShippedRBAC) rename(rules []rbacv1.PolicyRule) []rbacv1.PolicyRule {
	var out []rbacv1.PolicyRule
	for _, rule := range rules {
		if len(rule.ResourceNames) > 0 {
			var names []string
			for _, n := range rule.ResourceNames {
				if repl, ok := r.Rename[n]; ok {
					names = append(names, repl...)
				} else {
					names = append(names, n)
				}
			}
			if len(names) == 0 {
				continue
			}
			rule.ResourceNames = names
		}
		out = append(out, rule)
	}
	return out
}

func upsert(create, update func() error) error {
	if err := create(); !apierrors.IsAlreadyExists(err) {
		return err
	}
	return update()
}
