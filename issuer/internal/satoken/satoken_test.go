package satoken

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	clusterIssuer = "https://kubernetes.default.svc.cluster.local"
	aud           = "https://sts.example/vault"
)

// cluster is a fake API server's discovery endpoints.
type cluster struct {
	mu      sync.Mutex
	keys    []jose.JSONWebKey
	fetches int
	down    bool
}

func (c *cluster) get(_ context.Context, path string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down {
		return nil, errors.New("connection refused")
	}
	switch path {
	case PathDiscovery:
		c.fetches++
		return json.Marshal(map[string]any{"issuer": clusterIssuer, "jwks_uri": "https://10.0.0.1/openid/v1/jwks"})
	case PathJWKS:
		return json.Marshal(jose.JSONWebKeySet{Keys: c.keys})
	}
	return nil, errors.New("not found")
}

func (c *cluster) publish(k jose.JSONWebKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.keys = append(c.keys, k.Public())
}

func (c *cluster) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fetches
}

func rsaKey(t testing.TB, kid string) jose.JSONWebKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return jose.JSONWebKey{Key: k, KeyID: kid, Algorithm: string(jose.RS256), Use: "sig"}
}

func sign(t *testing.T, k jose.JSONWebKey, c jwt.Claims) string {
	t.Helper()
	alg := jose.RS256
	if _, ok := k.Key.(*ecdsa.PrivateKey); ok {
		alg = jose.ES256
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: k}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func claims(now time.Time) jwt.Claims {
	return jwt.Claims{Issuer: clusterIssuer, Subject: "system:serviceaccount:ns:sa", Audience: jwt.Audience{aud},
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(10 * time.Minute))}
}

func reason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	if err != nil {
		return "other: " + err.Error()
	}
	return ""
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestParseHeader(t *testing.T) {
	for _, tc := range []struct {
		name, token string
		ok          bool
		alg, kid    string
	}{
		{"RS256 with kid", b64(`{"alg":"RS256","kid":"abc"}`) + ".x.y", true, "RS256", "abc"},
		{"ES256 without kid", b64(`{"alg":"ES256"}`) + ".x.y", true, "ES256", ""},
		{"two segments", b64(`{"alg":"RS256"}`) + ".x", false, "", ""},
		{"four segments", b64(`{"alg":"RS256"}`) + ".x.y.z", false, "", ""},
		{"not base64url", "eyJ+.x.y", false, "", ""},
		{"not JSON", b64("alg") + ".x.y", false, "", ""},
		{"alg none: decoded, refused by VerifyHeader", b64(`{"alg":"none"}`) + ".x.y", true, "none", ""},
		{"header too long", b64(`{"alg":"RS256","kid":"`+strings.Repeat("k", 2000)+`"}`) + ".x.y", false, "", ""},
	} {
		h, ok := ParseHeader(tc.token)
		if ok != tc.ok || (ok && (h.KeyID != tc.kid || h.Algorithm != tc.alg)) {
			t.Errorf("%s: ParseHeader = %+v, %v; want ok %v, alg %q, kid %q", tc.name, h, ok, tc.ok, tc.alg, tc.kid)
		}
	}
}

func TestVerify(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	c := &cluster{}
	k1 := rsaKey(t, "k1")
	c.publish(k1)
	impostor := rsaKey(t, "k1") // same kid, other key
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k2 := jose.JSONWebKey{Key: ec, KeyID: "k2", Algorithm: string(jose.ES256), Use: "sig"}
	v := New(Options{Get: c.get, MinRefresh: 5 * time.Second, Now: clk.now})

	good := claims(clk.t)
	wrongIss := good
	wrongIss.Issuer = "https://elsewhere"
	wrongAud := good
	wrongAud.Audience = jwt.Audience{"vault"}
	expired := good
	expired.Expiry = jwt.NewNumericDate(clk.t.Add(-time.Minute))
	future := good
	future.NotBefore = jwt.NewNumericDate(clk.t.Add(time.Hour))

	for _, tc := range []struct {
		name, token, want string
	}{
		{"valid", sign(t, k1, good), ""},
		{"other key, same kid", sign(t, impostor, good), "bad_signature"},
		{"wrong issuer", sign(t, k1, wrongIss), "wrong_issuer"},
		{"wrong audience", sign(t, k1, wrongAud), "wrong_audience"},
		{"expired", sign(t, k1, expired), "expired"},
		{"not yet valid", sign(t, k1, future), "not_yet_valid"},
		{"not a jwt", "a.b.c", "not_a_jwt"},
		{"alg none", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "not_a_jwt"},
		{"HS256", b64(`{"alg":"HS256","kid":"k1"}`) + ".e30.c2ln", "not_a_jwt"},
		{"no alg", b64(`{"kid":"k1"}`) + ".e30.c2ln", "not_a_jwt"},
		// Refused on the header alone: the payload and signature are never
		// decoded (here they are not even base64url).
		{"ES256 under the cluster's RSA kid", b64(`{"alg":"ES256","kid":"k1"}`) + ".!!.!!", "bad_signature"},
		{"EdDSA under the cluster's RSA kid", b64(`{"alg":"EdDSA","kid":"k1"}`) + ".!!.!!", "bad_signature"},
		// The right kind of key for the header: the rest is read.
		{"RS256 under the cluster's kid, not a JWS", b64(`{"alg":"RS256","kid":"k1"}`) + ".!!.!!", "not_a_jwt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), tc.token, aud)
			if got := reason(err); got != tc.want {
				t.Fatalf("Verify = %q (%v), want %q", got, err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "eyJ") {
				t.Fatalf("error quotes the token: %v", err)
			}
		})
	}
	if n := c.count(); n != 1 {
		t.Fatalf("known keys cost %d fetches, want 1", n)
	}

	// A key the cluster starts to use: refused as retryable until a refetch
	// is allowed, then accepted.
	c.publish(k2)
	tok2 := sign(t, k2, good)
	clk.t = clk.t.Add(time.Second)
	_, err = v.Verify(context.Background(), tok2, aud)
	var e *Error
	if !errors.As(err, &e) || e.Reason != "unknown_key" || !e.Retryable || e.RetryAfter != 5*time.Second {
		t.Fatalf("new kid within MinRefresh: %v", err)
	}
	clk.t = clk.t.Add(5 * time.Second)
	if _, err := v.Verify(context.Background(), tok2, aud); err != nil {
		t.Fatalf("new kid after MinRefresh: %v", err)
	}
	if n := c.count(); n != 2 {
		t.Fatalf("fetches = %d, want 2", n)
	}

	// A kid the cluster does not have, after a refetch: not the cluster's.
	clk.t = clk.t.Add(6 * time.Second)
	if got := reason(verifyErr(v.Verify(context.Background(), sign(t, rsaKey(t, "nobody"), good), aud))); got != "bad_signature" {
		t.Fatalf("unknown kid after refetch: %q", got)
	}
}

// TestFloodFetchesBounded: a flood of tokens with ever new kids costs at most
// one fetch per MinRefresh, and so does an API server that is down.
func TestFloodFetchesBounded(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	c := &cluster{}
	c.publish(rsaKey(t, "k1"))
	v := New(Options{Get: c.get, MinRefresh: 5 * time.Second, Now: clk.now})
	garbage := rsaKey(t, "g")
	good := claims(clk.t)
	for i := range 400 {
		garbage.KeyID = "g" + string(rune('a'+i%26)) + strings.Repeat("x", i%7)
		if i%20 == 0 {
			clk.t = clk.t.Add(time.Second)
		}
		if _, err := v.Verify(context.Background(), sign(t, garbage, good), aud); err == nil {
			t.Fatal("garbage accepted")
		}
	}
	// 20 simulated seconds: the first fetch plus one per 5 s.
	if n := c.count(); n > 5 {
		t.Fatalf("400 garbage tokens over 20s caused %d fetches, want at most 5", n)
	}

	down := &cluster{down: true}
	v = New(Options{Get: down.get, MinRefresh: 5 * time.Second, Now: clk.now})
	for range 100 {
		_, err := v.Verify(context.Background(), sign(t, garbage, good), aud)
		var e *Error
		if !errors.As(err, &e) || e.Reason != "cluster_keys_unavailable" || !e.Retryable {
			t.Fatalf("API server down: %v", err)
		}
	}
	if v.Ready() {
		t.Fatal("ready without keys")
	}
}

// TestNoWaitingBehindAFetch: while one fetch hangs on a slow API server,
// other requests with unknown kids are answered at once, not queued.
func TestNoWaitingBehindAFetch(t *testing.T) {
	c := &cluster{}
	c.publish(rsaKey(t, "k1"))
	release := make(chan struct{})
	slow := func(ctx context.Context, path string) ([]byte, error) {
		<-release
		return c.get(ctx, path)
	}
	v := New(Options{Get: slow, MinRefresh: time.Millisecond})
	go func() { _ = v.Refresh(context.Background()) }() // hangs until release
	time.Sleep(50 * time.Millisecond)
	other := sign(t, rsaKey(t, "other"), claims(time.Now()))
	start := time.Now()
	for range 100 {
		// Were these to wait for the fetch, the loop would never end: it is
		// released only after it.
		_, err := v.Verify(context.Background(), other, aud)
		var e *Error
		if !errors.As(err, &e) || !e.Retryable {
			t.Fatalf("during a hanging fetch: %v", err)
		}
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("100 requests took %v behind a hanging fetch", took)
	}
	close(release)
}

func verifyErr(_ *Binding, err error) error { return err }

// TestBinding: Verify returns the API server's "kubernetes.io" claim as the
// token's binding, nil for a token without one or whose subject it
// contradicts (the claim must name the subject's ServiceAccount).
func TestBinding(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	c := &cluster{}
	k := rsaKey(t, "k1")
	c.publish(k)
	v := New(Options{Get: c.get, Now: clk.now})
	signPrivate := func(sub string, private map[string]any) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k}, nil)
		if err != nil {
			t.Fatal(err)
		}
		std := claims(clk.t)
		std.Subject = sub
		tok, err := jwt.Signed(s).Claims(std).Claims(private).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	podBound := map[string]any{"kubernetes.io": map[string]any{
		"namespace":      "ns",
		"pod":            map[string]any{"name": "p", "uid": "pod-uid"},
		"serviceaccount": map[string]any{"name": "sa", "uid": "sa-uid"},
		"node":           map[string]any{"name": "n", "uid": "node-uid"},
	}}
	secretBound := map[string]any{"kubernetes.io": map[string]any{
		"namespace":      "ns",
		"secret":         map[string]any{"name": "s", "uid": "secret-uid"},
		"serviceaccount": map[string]any{"name": "sa", "uid": "sa-uid"},
	}}
	b, err := v.Verify(context.Background(), signPrivate("system:serviceaccount:ns:sa", podBound), aud)
	want := Binding{Namespace: "ns", ServiceAccount: "sa", ServiceAccountUID: "sa-uid", Pod: "p", PodUID: "pod-uid", Node: "n", NodeUID: "node-uid"}
	if err != nil || b == nil || *b != want || !b.PodBound() {
		t.Fatalf("pod-bound token: %+v %v, want %+v", b, err, want)
	}
	if b, err := v.Verify(context.Background(), signPrivate("system:serviceaccount:ns:sa", secretBound), aud); err != nil || b == nil || b.PodBound() || b.ServiceAccountUID != "sa-uid" {
		t.Fatalf("secret-bound token: %+v %v, want a binding without a Pod", b, err)
	}
	if b, err := v.Verify(context.Background(), signPrivate("system:serviceaccount:other:sa", podBound), aud); err != nil || b != nil {
		t.Fatalf("claim contradicting the subject: %+v %v, want no binding", b, err)
	}
	if b, err := v.Verify(context.Background(), sign(t, k, claims(clk.t)), aud); err != nil || b != nil {
		t.Fatalf("token without the claim: %+v %v, want no binding", b, err)
	}
	// Refused, but the cluster signed it: the binding comes with the
	// refusal, so that its Pod can be told why (an Event).
	tok := signPrivate("system:serviceaccount:ns:sa", podBound)
	if b, err := v.Verify(context.Background(), tok, "https://someone-else.test"); reason(err) != "wrong_audience" || b == nil || *b != want {
		t.Fatalf("pod-bound token for another audience: %+v %v, want wrong_audience with the binding", b, err)
	}
	clk.t = clk.t.Add(time.Hour)
	if b, err := v.Verify(context.Background(), tok, aud); reason(err) != "expired" || b == nil || *b != want {
		t.Fatalf("expired pod-bound token: %+v %v, want expired with the binding", b, err)
	}
}
