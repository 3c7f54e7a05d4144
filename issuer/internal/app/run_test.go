package app

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/kube-sts/kube-sts/shared/exchange"
)

// fakeCluster is the little of an API server that Run needs: its version,
// its service-account issuer discovery and keys, and TokenReviews, which it
// counts and answers "not authenticated".
type fakeCluster struct {
	*httptest.Server
	key     *ecdsa.PrivateKey
	reviews atomic.Int64
}

const fakeClusterIssuer = "https://kubernetes.default.svc.cluster.local"

func newFakeCluster(t *testing.T) *fakeCluster {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c := &fakeCluster{key: key}
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "cluster-key", Algorithm: "ES256", Use: "sig"}}})
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/version":
			_, _ = io.WriteString(w, `{"major":"1","minor":"37","gitVersion":"v1.37.2"}`)
		case r.URL.Path == "/.well-known/openid-configuration":
			_, _ = fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":%q}`, fakeClusterIssuer, fakeClusterIssuer+"/openid/v1/jwks")
		case r.URL.Path == "/openid/v1/jwks":
			_, _ = w.Write(jwks)
		case r.Method == http.MethodPost && r.URL.Path == "/apis/authentication.k8s.io/v1/tokenreviews":
			c.reviews.Add(1)
			_, _ = io.WriteString(w, `{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","status":{"authenticated":false,"error":"fake"}}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(c.Close)
	return c
}

// token signs a ServiceAccount-like token for audience with key under kid.
func token(t *testing.T, key *ecdsa.PrivateKey, kid, audience string) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	out, err := jwt.Signed(s).Claims(jwt.Claims{Issuer: fakeClusterIssuer, Subject: "system:serviceaccount:team:app",
		Audience: jwt.Audience{audience}, Expiry: jwt.NewNumericDate(now.Add(time.Hour)), IssuedAt: jwt.NewNumericDate(now)}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRunScreensSubjectTokens builds the issuer exactly as the binary does
// (Run, with its flags) against a fake API server: a token the cluster did
// not sign is refused without a TokenReview, and one it signed reaches the
// TokenReview. Dropping the local screen, or its wiring in Run, fails here.
func TestRunScreensSubjectTokens(t *testing.T) {
	cluster := newFakeCluster(t)
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
users: [{name: u, user: {token: not-a-real-token}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, cluster.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	signing, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalECPrivateKey(signing)
	keyFile := filepath.Join(dir, "signing.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "issuer.yaml")
	if err := os.WriteFile(cfgFile, []byte(fmt.Sprintf(`
cluster: c1
endpoints:
- name: vault
  issuer: https://sts.example/vault
  audience: https://vault.example/
  subjectAudience: sts-test
  algorithm: ES256
  keys: {files: [%s]}
  allow: [{namespace: "*"}]
`, keyFile)), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	logR, logW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"--config", cfgFile, "--kubeconfig", kubeconfig, "--insecure-http",
			"--listen", "127.0.0.1:0", "--metrics-listen", ""}, io.Discard, logW)
		logW.Close()
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
	// The listen address is in the "serving" log line.
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(logR)
		for sc.Scan() {
			var line struct {
				Msg    string `json:"msg"`
				Listen string `json:"listen"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "serving" {
				addr <- line.Listen
			}
		}
	}()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case err := <-done:
		t.Fatalf("Run returned: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("no serving line")
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the issuer never became ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	post := func(subject string) (int, string) {
		t.Helper()
		resp, err := http.Post(base+"/vault/token", exchange.ContentTypeForm, strings.NewReader(exchange.NewRequest(subject).Encode()))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	forger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for name, subject := range map[string]string{
		"forged with the cluster's kid":              token(t, forger, "cluster-key", "sts-test"),
		"signed by the cluster for another audience": token(t, cluster.key, "cluster-key", "https://kubernetes.default.svc"),
	} {
		if status, body := post(subject); status != http.StatusBadRequest {
			t.Errorf("%s: %d %s", name, status, body)
		}
	}
	if n := cluster.reviews.Load(); n != 0 {
		t.Fatalf("tokens the cluster did not sign for us cost %d TokenReviews: Run does not screen them", n)
	}
	// A token the cluster signed for the STS goes on to the TokenReview (the
	// fake says "not authenticated"), so the count above could have moved.
	if status, body := post(token(t, cluster.key, "cluster-key", "sts-test")); status != http.StatusBadRequest || cluster.reviews.Load() != 1 {
		t.Fatalf("a cluster-signed token: %d %s, %d TokenReviews (want 1)", status, body, cluster.reviews.Load())
	}
}
