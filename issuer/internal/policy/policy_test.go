package policy

import (
	"strings"
	"testing"
)

func TestDecide(t *testing.T) {
	p := New(
		[]Rule{{Namespace: "test-*"}, {Namespace: "prod", ServiceAccount: "vault-*"}, {ServiceAccount: "[ab]ot"}},
		[]Rule{{Namespace: "test-secret"}, {Namespace: "prod", ServiceAccount: "vault-admin"}},
	)
	tests := map[string]struct {
		ns, sa string
		ok     bool
		why    string
	}{
		"glob namespace":       {ns: "test-vault", sa: "for-vault", ok: true},
		"namespace and sa":     {ns: "prod", sa: "vault-reader", ok: true},
		"character class":      {ns: "any", sa: "bot", ok: true},
		"denied namespace":     {ns: "test-secret", sa: "for-vault", why: "deny[0]"},
		"deny wins over allow": {ns: "prod", sa: "vault-admin", why: "deny[1]"},
		"no rule matches":      {ns: "prod", sa: "default", why: "no allow rule"},
		"prefix is not a glob": {ns: "test", sa: "x", why: "no allow rule"},
		"glob does not cross":  {ns: "xtest-vault", sa: "x", why: "no allow rule"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ok, why := p.Decide(tc.ns, tc.sa)
			if ok != tc.ok || !strings.Contains(why, tc.why) {
				t.Fatalf("Decide(%s, %s) = %v %q, want %v %q", tc.ns, tc.sa, ok, why, tc.ok, tc.why)
			}
		})
	}
	if ok, _ := New(nil, nil).Decide("a", "b"); ok {
		t.Fatal("no rules allowed something")
	}
}
