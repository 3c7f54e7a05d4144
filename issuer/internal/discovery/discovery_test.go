package discovery

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kube-sts/kube-sts/issuer/internal/keys"
)

func TestJWKSHasNoPrivateMaterial(t *testing.T) {
	var all []*keys.Key
	for _, alg := range []string{keys.RS256, keys.ES256, keys.EdDSA} {
		k, err := keys.Generate(alg, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, k)
	}
	set, err := keys.NewSet(all[1], all)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := Render("https://sts.example/vault", []string{"iss"}, set)
	if err != nil {
		t.Fatal(err)
	}
	data := docs.JWKS
	var raw struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(data, &raw); err != nil || len(raw.Keys) != 3 {
		t.Fatalf("JWKS %s: %v", data, err)
	}
	for _, k := range raw.Keys {
		for _, private := range []string{"d", "p", "q", "dp", "dq", "qi"} {
			if _, ok := k[private]; ok {
				t.Fatalf("JWK %v holds private member %q", k["kid"], private)
			}
		}
		if k["use"] != "sig" || k["kid"] == "" || k["alg"] == "" {
			t.Fatalf("JWK %v lacks use/kid/alg", k)
		}
	}
	if got := strings.Join(set.Algorithms(), ","); got != "RS256,ES256,EdDSA" {
		t.Fatalf("algorithms %s", got)
	}
}

// TestDiscoveryBytes: the typed document renders the same bytes as the map
// earlier releases rendered (keys in alphabetical order).
func TestDiscoveryBytes(t *testing.T) {
	k, err := keys.Generate(keys.ES256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	set, _ := keys.NewSet(k, []*keys.Key{k})
	docs, err := Render("https://sts.example/vault", []string{"iss", "sub"}, set)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"claims_supported":["iss","sub"],"grant_types_supported":["urn:ietf:params:oauth:grant-type:token-exchange"],"id_token_signing_alg_values_supported":["ES256"],"issuer":"https://sts.example/vault","jwks_uri":"https://sts.example/vault/jwks","response_types_supported":["id_token"],"subject_types_supported":["public"],"token_endpoint":"https://sts.example/vault/token"}`
	if string(docs.Discovery) != want {
		t.Fatalf("discovery:\n got %s\nwant %s", docs.Discovery, want)
	}
}
