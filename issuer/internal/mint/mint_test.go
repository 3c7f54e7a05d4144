package mint

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/kube-sts/kube-sts/issuer/internal/keys"
)

func TestMintClaims(t *testing.T) {
	k, err := keys.Generate(keys.EdDSA, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1768236189, 500)
	base := Request{Issuer: "https://vault-sts.example", Audience: "https://vault.example/", Cluster: "openunison-cp",
		Namespace: "test-vault", ServiceAccount: "for-vault", TTL: 15 * time.Minute, Now: now}
	withPod := base
	withPod.Pod, withPod.PodUID = "watch", "uid-1"
	withExtra := withPod
	withExtra.Node = "node-7"
	// Extra claims come after the standard ones, in name order, and never
	// replace one (configuration refuses such names; this is the backstop).
	withExtra.Extra = map[string]string{"team": "payments", "app": "api", "sub": "forged", "node": "forged", "iss": "forged"}
	for name, tc := range map[string]struct {
		r    Request
		want string
	}{
		"reference":    {r: base, want: `{"iss":"https://vault-sts.example","aud":"https://vault.example/","exp":1768237089,"nbf":1768236129,"iat":1768236189,"jti":"JTI","sub":"openunison-cp:test-vault:for-vault","cluster":"openunison-cp","namespace":"test-vault","saname":"for-vault"}`},
		"pod claims":   {r: withPod, want: `{"iss":"https://vault-sts.example","aud":"https://vault.example/","exp":1768237089,"nbf":1768236129,"iat":1768236189,"jti":"JTI","sub":"openunison-cp:test-vault:for-vault","cluster":"openunison-cp","namespace":"test-vault","saname":"for-vault","pod":"watch","pod_uid":"uid-1"}`},
		"extra claims": {r: withExtra, want: `{"iss":"https://vault-sts.example","aud":"https://vault.example/","exp":1768237089,"nbf":1768236129,"iat":1768236189,"jti":"JTI","sub":"openunison-cp:test-vault:for-vault","cluster":"openunison-cp","namespace":"test-vault","saname":"for-vault","pod":"watch","pod_uid":"uid-1","node":"node-7","app":"api","team":"payments"}`},
	} {
		t.Run(name, func(t *testing.T) {
			tok, err := Mint(k, tc.r)
			if err != nil {
				t.Fatal(err)
			}
			payload, err := base64.RawURLEncoding.DecodeString(strings.Split(tok.JWT, ".")[1])
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Replace(string(payload), `"jti":"`+tok.ID+`"`, `"jti":"JTI"`, 1)
			if got != tc.want {
				t.Fatalf("payload\n got %s\nwant %s", got, tc.want)
			}
			if tok.Expiry.Unix() != 1768237089 || tok.KeyID != k.ID {
				t.Fatalf("token facts %+v", tok)
			}
		})
	}
	seen := map[string]bool{}
	for range 1000 {
		tok, _ := Mint(k, base)
		if seen[tok.ID] {
			t.Fatal("jti repeated")
		}
		seen[tok.ID] = true
		if b, _ := base64.RawURLEncoding.DecodeString(tok.ID); len(b) != 16 {
			t.Fatalf("jti %q is not 128 bits", tok.ID)
		}
	}
}

func TestIsReserved(t *testing.T) {
	for name, want := range map[string]bool{"sub": true, "Sub": true, "NAMESPACE": true, "azp": true, "Groups": true, "cnf": true, "env": false, "team": false, "subject": false} {
		if got := IsReserved(name); got != want {
			t.Errorf("IsReserved(%q) = %v, want %v", name, got, want)
		}
	}
}
