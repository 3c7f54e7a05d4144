package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"go.uber.org/zap"

	"github.com/kube-sts/kube-sts/issuer/internal/config"
	"github.com/kube-sts/kube-sts/issuer/internal/keys"
	"github.com/kube-sts/kube-sts/issuer/internal/review"
	"github.com/kube-sts/kube-sts/issuer/internal/satoken"
	"github.com/kube-sts/kube-sts/shared/exchange"
)

// instantReviewer confirms every token at once: the benchmark measures our
// own path (parsing, pre-checks, policy, claims, signing, JSON), not the API server.
type instantReviewer struct{}

func (instantReviewer) Review(context.Context, string, string, *satoken.Binding) (review.Identity, error) {
	return review.Identity{Namespace: "test-vault", ServiceAccount: "for-vault", PodName: "p", PodUID: "u"}, nil
}

// benchServer is a server with one endpoint signing with alg; verifier is
// the local screen (nil: none).
func benchServer(b *testing.B, alg string, verifier Verifier) (*Server, *keys.Key) {
	cfg, err := config.Parse([]byte(strings.Replace(testConfig, "algorithm: ES256", "algorithm: "+alg, 1)))
	if err != nil {
		b.Fatal(err)
	}
	// One token is presented thousands of times a second here: the per-token
	// limit is lifted, the path is otherwise the shipped one.
	srv, err := New(Options{Config: cfg, Reviewer: instantReviewer{}, Verifier: verifier, Log: zap.NewNop(), PerTokenPerSecond: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	k, err := keys.Generate(alg, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	set, _ := keys.NewSet(k, []*keys.Key{k})
	if err := srv.Endpoint("vault").SetKeys(set); err != nil {
		b.Fatal(err)
	}
	return srv, k
}

// BenchmarkExchange is the whole in-process exchange per algorithm, with the
// reviewer faked; compare with BenchmarkSign of the same algorithm. Each
// request is a shallow copy of one parsed request with a fresh body, answered
// into a reused writer: what is measured is the handler (parsing, limits,
// policy, claims, signing, JSON), not building requests and recorders.
// ES256/httptest builds each with httptest.NewRequest and NewRecorder, as
// the benchmark did before (that is about 4 µs and 30 allocations more).
func BenchmarkExchange(b *testing.B) {
	for _, alg := range []string{keys.RS256, keys.ES256, keys.EdDSA, keys.ES256 + "/httptest"} {
		b.Run(alg, func(b *testing.B) {
			alg, viaHTTPTest := strings.CutSuffix(alg, "/httptest")
			srv, key := benchServer(b, alg, nil)
			body := exchangeBody(fakeToken("bench"))
			tmpl := httptest.NewRequest(http.MethodPost, "https://sts.kube-sts.test/vault/token", nil)
			tmpl.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			w := &benchWriter{h: http.Header{}}
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				if viaHTTPTest {
					r := httptest.NewRequest(http.MethodPost, "https://sts.kube-sts.test/vault/token", strings.NewReader(body))
					r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
					rec := httptest.NewRecorder()
					srv.ServeHTTP(rec, r)
					w.code, w.body = rec.Code, *rec.Body
				} else {
					w.serve(srv, tmpl, body)
				}
				if w.code != 200 {
					b.Fatalf("status %d: %s", w.code, w.body.String())
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			// What was measured must be a real token: it verifies with the
			// published key and carries the identity.
			var resp exchange.Response
			if err := json.Unmarshal(w.body.Bytes(), &resp); err != nil {
				b.Fatal(err)
			}
			verifyToken(b, key, resp.AccessToken, "openunison-cp:test-vault:for-vault")
			reportPercentiles(b, lat)
		})
	}
}

// benchWriter is a ResponseWriter reused across requests.
type benchWriter struct {
	h    http.Header
	code int
	body bytes.Buffer
}

func (w *benchWriter) Header() http.Header { return w.h }
func (w *benchWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *benchWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.body.Write(p)
}

// SetReadDeadline is what the handler asks of net/http's writer through
// http.ResponseController (which answers errNotSupported, allocating, for a
// writer without it).
func (w *benchWriter) SetReadDeadline(time.Time) error { return nil }

// serve answers a shallow copy of tmpl carrying body into w.
func (w *benchWriter) serve(srv *Server, tmpl *http.Request, body string) {
	r := *tmpl
	r.Body = io.NopCloser(strings.NewReader(body))
	r.ContentLength = int64(len(body))
	w.reset()
	srv.ServeHTTP(w, &r)
}

func (w *benchWriter) reset() {
	clear(w.h)
	w.code = 0
	w.body.Reset()
}

// BenchmarkSign is the raw signing rate of the same kind of key.
func BenchmarkSign(b *testing.B) {
	payload := []byte(`{"iss":"https://sts.kube-sts.test/vault","aud":"https://vault.kube-sts.test/","exp":1768237089,"nbf":1768236129,"iat":1768236189,"jti":"ZAnw_QfexOtJPQ_v1ZNoSA","sub":"openunison-cp:test-vault:for-vault","cluster":"openunison-cp","namespace":"test-vault","saname":"for-vault"}`)
	for _, alg := range []string{keys.RS256, keys.ES256, keys.EdDSA} {
		b.Run(alg, func(b *testing.B) {
			k, err := keys.Generate(alg, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			var jws string
			b.ReportAllocs()
			for b.Loop() {
				if jws, err = k.Sign(payload); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			verifyToken(b, k, jws, "openunison-cp:test-vault:for-vault")
		})
	}
}

// verifyToken fails the benchmark unless jws verifies with k's public key
// and names sub.
func verifyToken(b *testing.B, k *keys.Key, jws, sub string) {
	b.Helper()
	tok, err := jwt.ParseSigned(jws, []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA})
	if err != nil {
		b.Fatalf("not a JWS: %v", err)
	}
	var c jwt.Claims
	pub := k.Public()
	if err := tok.Claims(pub.Key, &c); err != nil {
		b.Fatalf("does not verify with the published key: %v", err)
	}
	if c.Subject != sub {
		b.Fatalf("sub = %q, want %q", c.Subject, sub)
	}
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkGarbage compares what the issuer spends in process on a request
// whose subject token the cluster did not sign with what it spends on a
// legitimate exchange, both through ServeHTTP with the real local screen
// (satoken.Verifier holding the cluster's RSA key) and the reviewer faked:
//
//	exchange         a ServiceAccount token the cluster signed: 200
//	garbage-our-kid  ES256-signed, naming the cluster key's kid: 400 on the header alone
//	garbage-new-kid  ES256-signed, naming a kid the cluster does not have: 503 retry shortly
//
// One goroutine, so ns/op is the CPU of a request; like BenchmarkExchange,
// each request is a copy of one parsed request answered into a reused
// writer. docs/performance.md reports garbage / exchange.
func BenchmarkGarbage(b *testing.B) {
	const clusterIssuer = "https://kubernetes.default.svc.cluster.local"
	clusterKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	jwk := jose.JSONWebKey{Key: clusterKey, KeyID: "cluster-key", Algorithm: string(jose.RS256), Use: "sig"}
	get := func(_ context.Context, path string) ([]byte, error) {
		if path == satoken.PathDiscovery {
			return json.Marshal(map[string]string{"issuer": clusterIssuer, "jwks_uri": "https://10.0.0.1/openid/v1/jwks"})
		}
		return json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk.Public()}})
	}
	verifier := satoken.New(satoken.Options{Get: get, MinRefresh: time.Hour})

	cfg, err := config.Parse([]byte(testConfig))
	if err != nil {
		b.Fatal(err)
	}
	srv, _ := benchServer(b, keys.ES256, verifier)

	now := time.Now()
	sa := jwt.Claims{Issuer: clusterIssuer, Audience: jwt.Audience{cfg.Endpoints[0].SubjectAudience}, Subject: "system:serviceaccount:test-vault:for-vault",
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Hour))}
	private := map[string]any{"kubernetes.io": map[string]any{"namespace": "test-vault",
		"pod": map[string]string{"name": "p", "uid": "u"}, "serviceaccount": map[string]string{"name": "for-vault", "uid": "s"}}}
	signWith := func(key any, alg jose.SignatureAlgorithm, kid string) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
		if err != nil {
			b.Fatal(err)
		}
		tok, err := jwt.Signed(s).Claims(sa).Claims(private).Serialize()
		if err != nil {
			b.Fatal(err)
		}
		return tok
	}
	attacker, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		token  string
		status int
	}{
		{"exchange", signWith(clusterKey, jose.RS256, jwk.KeyID), http.StatusOK},
		{"garbage-our-kid", signWith(attacker, jose.ES256, jwk.KeyID), http.StatusBadRequest},
		{"garbage-new-kid", signWith(attacker, jose.ES256, "no-such-key"), http.StatusServiceUnavailable},
	} {
		b.Run(c.name, func(b *testing.B) {
			body := exchangeBody(c.token)
			tmpl := httptest.NewRequest(http.MethodPost, "https://sts.kube-sts.test/vault/token", nil)
			tmpl.Header.Set("Content-Type", exchange.ContentTypeForm)
			w := &benchWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				w.serve(srv, tmpl, body)
				if w.code != c.status {
					b.Fatalf("status %d, want %d: %s", w.code, c.status, w.body.String())
				}
			}
		})
	}
}
