package server

import (
	"context"
	"encoding/json"
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

func benchServer(b *testing.B, alg string) (*Server, *keys.Key) {
	cfg, err := config.Parse([]byte(strings.Replace(testConfig, "algorithm: ES256", "algorithm: "+alg, 1)))
	if err != nil {
		b.Fatal(err)
	}
	// One token is presented thousands of times a second here: the per-token
	// limit is lifted, the path is otherwise the shipped one.
	srv, err := New(Options{Config: cfg, Reviewer: instantReviewer{}, Log: zap.NewNop(), PerTokenPerSecond: 1 << 30})
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
// reviewer faked; compare with BenchmarkSign of the same algorithm.
func BenchmarkExchange(b *testing.B) {
	for _, alg := range []string{keys.RS256, keys.ES256, keys.EdDSA} {
		b.Run(alg, func(b *testing.B) {
			srv, key := benchServer(b, alg)
			body := exchangeBody(fakeToken("bench"))
			lat := make([]time.Duration, 0, b.N)
			var last *httptest.ResponseRecorder
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				r := httptest.NewRequest(http.MethodPost, "https://sts.kube-sts.test/vault/token", strings.NewReader(body))
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				w := httptest.NewRecorder()
				srv.ServeHTTP(w, r)
				if w.Code != 200 {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
				lat = append(lat, time.Since(start))
				last = w
			}
			b.StopTimer()
			// What was measured must be a real token: it verifies with the
			// published key and carries the identity.
			var resp exchange.Response
			if err := json.Unmarshal(last.Body.Bytes(), &resp); err != nil {
				b.Fatal(err)
			}
			verifyToken(b, key, resp.AccessToken, "openunison-cp:test-vault:for-vault")
			reportPercentiles(b, lat)
		})
	}
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
