// Package rotation runs two sts-issuer replicas on one managed key Secret,
// with rotation periods of seconds, and checks what relying parties rely on:
// no replica signs with a key the other does not publish, a verifier holding a
// JWKS as old as its max-age verifies every new token, and tokens signed
// before a rotation keep verifying until they expire.
package rotation

import (
	"context"
	"encoding/json"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/flow"
	"github.com/kube-sts/kube-sts/e2e/internal/kube"
	"github.com/kube-sts/kube-sts/e2e/internal/stsissuer"
	"github.com/kube-sts/kube-sts/e2e/internal/testca"
)

var cp = controlplane.New()

func TestMain(m *testing.M) { os.Exit(cp.Main(m)) }

// Both replicas serve the same issuer; they are reached on their own ports.
const (
	issuerURL = "https://sts.kube-sts.test/vault"
	config    = `
cluster: c
jwksMaxAge: 1s
endpoints:
- name: vault
  issuer: ` + issuerURL + `
  audience: vault
  ttl: 1m
  keys:
    managed: {secret: vault-keys, rotateEvery: 8s, publishAhead: 3s, resync: 500ms, leeway: 6s}
  allow: [{namespace: "*"}]
`
	maxAge = time.Second
)

type snapshot struct {
	at   time.Time
	keys jose.JSONWebKeySet
}

type minted struct {
	at  time.Time
	jwt string
	kid string
	by  int
}

func TestTwoReplicasRotate(t *testing.T) {
	env := cp.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ca, err := testca.New("rotation")
	if err != nil {
		t.Fatal(err)
	}
	cfg := func(string) string { return config }
	replicas := []*stsissuer.Issuer{stsissuer.Start(t, env, ca, cfg), stsissuer.Start(t, env, ca, cfg)}
	pod := kube.Workload(ctx, t, env.Clientset, "test-vault", "for-vault", "app")
	subject := kube.PodToken(ctx, t, env.Clientset, pod, issuerURL)

	var mu sync.Mutex
	var snaps [2][]snapshot
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, r := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				at := time.Now()
				data, err := r.JWKS(ctx, r.Base+"/vault")
				if err != nil {
					t.Errorf("replica %d JWKS: %v", i, err)
					return
				}
				var set jose.JSONWebKeySet
				if err := json.Unmarshal(data, &set); err != nil || len(set.Keys) == 0 {
					t.Errorf("replica %d JWKS %s: %v", i, data, err)
					return
				}
				mu.Lock()
				snaps[i] = append(snaps[i], snapshot{at: at, keys: set})
				mu.Unlock()
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}

	var tokens []minted
	kids := map[string]bool{}
	// Until three signing keys have signed (8s rotation: ~17s), with a deadline.
	deadline := time.Now().Add(90 * time.Second)
	for n := 0; len(kids) < 3; n++ {
		if time.Now().After(deadline) {
			t.Fatalf("saw %d signing keys in 90s with an 8s rotation; want at least 3", len(kids))
		}
		by := n % 2
		r := replicas[by]
		res, err := r.Exchange(ctx, r.Base+"/vault", subject)
		if err != nil || res.Status != 200 {
			t.Fatalf("replica %d exchange: %v %+v", by, err, res)
		}
		jws, err := jose.ParseSignedCompact(res.Response.AccessToken, []jose.SignatureAlgorithm{jose.RS256})
		if err != nil {
			t.Fatal(err)
		}
		m := minted{at: time.Now(), jwt: res.Response.AccessToken, kid: jws.Signatures[0].Header.KeyID, by: by}
		tokens = append(tokens, m)
		kids[m.kid] = true
		// The other replica publishes the key this one signed with, right now.
		other := replicas[1-by]
		data, err := other.JWKS(ctx, other.Base+"/vault")
		if err != nil {
			t.Fatal(err)
		}
		if err := flow.VerifyJWKS(data, m.jwt); err != nil {
			t.Fatalf("replica %d signed with %s, which replica %d does not publish: %v", by, m.kid[:8], 1-by, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	// A verifier that fetched the JWKS (from either replica) up to max-age
	// before a token was minted verifies it without refetching.
	checked := 0
	for _, m := range tokens {
		for i := range 2 {
			for _, s := range snaps[i] {
				age := m.at.Sub(s.at)
				if age < maxAge/2 || age > maxAge {
					continue
				}
				data, _ := json.Marshal(s.keys)
				if err := flow.VerifyJWKS(data, m.jwt); err != nil {
					t.Fatalf("a JWKS of replica %d fetched %v before a token of key %s cannot verify it: %v", i, age.Round(time.Millisecond), m.kid[:8], err)
				}
				checked++
			}
		}
	}
	if checked < len(tokens) {
		t.Fatalf("only %d cached-JWKS checks for %d tokens", checked, len(tokens))
	}
	// Tokens from before the rotations still verify (they have not expired).
	for i, r := range replicas {
		data, err := r.JWKS(ctx, r.Base+"/vault")
		if err != nil {
			t.Fatal(err)
		}
		if err := flow.VerifyJWKS(data, tokens[0].jwt); err != nil {
			t.Fatalf("replica %d no longer publishes the key of the first token (%s), which is still valid: %v", i, tokens[0].kid[:8], err)
		}
	}
	sec, err := env.Clientset.CoreV1().Secrets(stsissuer.Namespace).Get(ctx, "vault-keys", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sec.Labels["app.kubernetes.io/managed-by"] != "sts-issuer" {
		t.Errorf("secret labels %v", sec.Labels)
	}
	t.Logf("%d tokens from 2 replicas across %d signing keys; %d cached-JWKS verifications", len(tokens), len(kids), checked)
}
