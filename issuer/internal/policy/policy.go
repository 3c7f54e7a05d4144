// Package policy decides which ServiceAccounts an endpoint serves: allow and
// deny rules with globs on namespace and name. Deny wins; no matching allow
// rule means no.
package policy

import (
	"fmt"
	"path"
)

// Rule matches ServiceAccounts by namespace and name globs (path.Match
// syntax); an empty field matches everything.
type Rule struct {
	Namespace      string
	ServiceAccount string
}

// Policy is an endpoint's rules.
type Policy struct {
	allow, deny []Rule
}

// New returns the policy of allow and deny rules (validated by the caller).
func New(allow, deny []Rule) Policy { return Policy{allow: allow, deny: deny} }

// Decide reports whether namespace/serviceAccount is allowed, and if not, why.
func (p Policy) Decide(namespace, serviceAccount string) (bool, string) {
	for i, r := range p.deny {
		if match(r, namespace, serviceAccount) {
			return false, fmt.Sprintf("denied by deny[%d] (namespace %q, serviceAccount %q)", i, orStar(r.Namespace), orStar(r.ServiceAccount))
		}
	}
	for _, r := range p.allow {
		if match(r, namespace, serviceAccount) {
			return true, ""
		}
	}
	return false, "no allow rule matches"
}

func match(r Rule, ns, sa string) bool {
	return glob(r.Namespace, ns) && glob(r.ServiceAccount, sa)
}

func glob(pattern, s string) bool {
	if pattern == "" || pattern == "*" {
		return true
	}
	ok, err := path.Match(pattern, s)
	return err == nil && ok
}

func orStar(s string) string {
	if s == "" {
		return "*"
	}
	return s
}
