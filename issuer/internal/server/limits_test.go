package server

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	authnv1 "k8s.io/api/authentication/v1"

	"github.com/kube-sts/kube-sts/issuer/internal/satoken"
	"github.com/kube-sts/kube-sts/shared/exchange"
	"github.com/kube-sts/kube-sts/shared/redact"
)

// screen is a fake local verifier: tokens named "garbage*" are not the
// cluster's, "newkey*" carry a key not fetched yet.
type screen struct{}

func (screen) VerifyHeader(_ context.Context, token string, _ satoken.Header, _ string) (*satoken.Binding, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, &satoken.Error{Reason: "not_a_jwt", Description: "subject_token is not a signed JWT"}
	}
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	switch name := string(payload); {
	case strings.Contains(name, `"garbage`):
		return nil, &satoken.Error{Reason: "bad_signature", Description: "subject_token is not signed by this cluster's service-account keys"}
	case strings.Contains(name, `"newkey`):
		return nil, &satoken.Error{Reason: "unknown_key", Retryable: true, RetryAfter: 5 * time.Second, Description: "retry shortly"}
	}
	return nil, nil
}

func exchanges(t *testing.T, srv *Server, result string) float64 {
	t.Helper()
	for _, m := range family(t, srv, "sts_issuer_exchanges_total") {
		if label(m, "result") == result {
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// family is the samples of one metric of the server (none: nil).
func family(t *testing.T, srv *Server, name string) []*dto.Metric {
	t.Helper()
	mfs, err := srv.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()
		}
	}
	return nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func oauthCode(t *testing.T, body string) string {
	t.Helper()
	e, err := exchange.ParseError([]byte(body))
	if err != nil {
		t.Fatalf("not an OAuth error: %q", body)
	}
	return e.Code
}

// TestGarbageCostsNoAPICall: a token the cluster did not sign is refused by
// the local screen, with no TokenReview; a token with a key not fetched yet
// is 503 with the screen's Retry-After.
func TestGarbageCostsNoAPICall(t *testing.T) {
	srv, api, _, _ := newHarnessWith(t, func(o *Options) { o.Verifier = screen{} })
	for i := range 50 {
		w := post(srv, exchangeBody(fakeToken("garbage-"+strings.Repeat("x", i))))
		if w.Code != 400 || oauthCode(t, w.Body.String()) != exchange.InvalidRequest {
			t.Fatalf("garbage: %d %s", w.Code, w.Body)
		}
	}
	if n := api.reviews.Load(); n != 0 {
		t.Fatalf("garbage cost %d TokenReviews", n)
	}
	if got := exchanges(t, srv, "bad_signature"); got != 50 {
		t.Fatalf("bad_signature refusals counted %v, want 50", got)
	}
	w := post(srv, exchangeBody(fakeToken("newkey")))
	if w.Code != 503 || w.Header().Get("Retry-After") != "5" {
		t.Fatalf("unknown key: %d Retry-After=%q", w.Code, w.Header().Get("Retry-After"))
	}
}

// TestPerTokenLimit: the same token more than 5 times in a second is 429 with
// Retry-After; other tokens are not affected.
func TestPerTokenLimit(t *testing.T) {
	const uid = "u1"
	now := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	srv, api, _, _ := newHarnessWith(t, func(o *Options) { o.Now = clock }, pod("test-vault", "live", uid, "for-vault"))
	tok, other := fakeToken("hot"), fakeToken("other")
	api.statuses[tok] = status("test-vault", "for-vault", "live", uid)
	api.statuses[other] = status("test-vault", "for-vault", "live", uid)
	for i := range DefaultPerTokenPerSecond {
		if w := post(srv, exchangeBody(tok)); w.Code != 200 {
			t.Fatalf("use %d: %d %s", i+1, w.Code, w.Body)
		}
	}
	w := post(srv, exchangeBody(tok))
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" || oauthCode(t, w.Body.String()) != exchange.TemporarilyUnavailable {
		t.Fatalf("over the limit: %d Retry-After=%q %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	reviews := api.reviews.Load()
	if w := post(srv, exchangeBody(other)); w.Code != 200 {
		t.Fatalf("another token: %d", w.Code)
	}
	if api.reviews.Load() != reviews+1 {
		t.Fatal("the refused presentation cost a review")
	}
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	if w := post(srv, exchangeBody(tok)); w.Code != 200 {
		t.Fatalf("next second: %d", w.Code)
	}
	if got := exchanges(t, srv, "rate_limited"); got != 1 {
		t.Fatalf("rate_limited counted %v", got)
	}
}

// TestInFlightCap: beyond the cap an exchange is answered 503 at once, not
// queued; slots free up when the API server answers.
func TestInFlightCap(t *testing.T) {
	const uid = "u1"
	srv, api, _, _ := newHarnessWith(t, func(o *Options) { o.MaxInFlight = 2 }, pod("test-vault", "live", uid, "for-vault"))
	api.block = make(chan struct{})
	var toks []string
	for _, n := range []string{"a", "b", "c"} {
		toks = append(toks, fakeToken(n))
		api.statuses[toks[len(toks)-1]] = status("test-vault", "for-vault", "live", uid)
	}
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); codes[i] = post(srv, exchangeBody(toks[i])).Code }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for srv.inflight.InUse() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the two exchanges never went in flight")
		}
		time.Sleep(time.Millisecond)
	}
	// Without the cap the third exchange would wait on the API server too:
	// give it a second, then fail rather than hang until the test's timeout.
	third := make(chan *httptest.ResponseRecorder, 1)
	go func() { third <- post(srv, exchangeBody(toks[2])) }()
	var w *httptest.ResponseRecorder
	select {
	case w = <-third:
	case <-time.After(time.Second):
		close(api.block)
		t.Fatal("an exchange beyond the in-flight cap waited on the API server instead of being refused at once")
	}
	if w.Code != 503 || w.Header().Get("Retry-After") != "1" || !strings.Contains(w.Body.String(), "in flight") {
		t.Fatalf("beyond the cap: %d Retry-After=%q %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	close(api.block)
	wg.Wait()
	if codes[0] != 200 || codes[1] != 200 {
		t.Fatalf("held exchanges: %v", codes)
	}
	if srv.inflight.InUse() != 0 {
		t.Fatalf("%d slots still taken", srv.inflight.InUse())
	}
	if w := post(srv, exchangeBody(toks[2])); w.Code != 200 {
		t.Fatalf("after the flight: %d", w.Code)
	}
	if got := exchanges(t, srv, "overloaded"); got != 1 {
		t.Fatalf("overloaded counted %v", got)
	}
	// The gauges: none in flight now, two at most (the herd's peak).
	for name, want := range map[string]float64{"sts_issuer_exchanges_in_flight": 0, "sts_issuer_exchanges_in_flight_peak": 2} {
		if got := gauge(t, srv, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// stalled is a request body that never arrives: Read blocks until the
// test releases it, and records that it was read at all.
type stalled struct {
	read    chan struct{}
	release chan struct{}
	once    sync.Once
}

func newStalled() *stalled { return &stalled{read: make(chan struct{}), release: make(chan struct{})} }

func (s *stalled) Read([]byte) (int, error) {
	s.once.Do(func() { close(s.read) })
	<-s.release
	return 0, io.ErrUnexpectedEOF
}

// TestPendingCap: beyond the bound on requests being answered, a request is
// answered 503 with Retry-After before a byte of its body is read; one
// address's bound leaves room for others; the slots free up afterwards.
func TestPendingCap(t *testing.T) {
	const uid = "u1"
	srv, api, _, _ := newHarnessWith(t, func(o *Options) { o.MaxPending = 2; o.MaxPendingPerAddress = 1 }, pod("test-vault", "live", uid, "for-vault"))
	tok := fakeToken("pending")
	api.statuses[tok] = status("test-vault", "for-vault", "live", uid)
	from := func(addr string) func(*http.Request) { return func(r *http.Request) { r.RemoteAddr = addr } }
	// Two stalled bodies, from two addresses, take both slots.
	var held []*stalled
	var wg sync.WaitGroup
	for _, addr := range []string{"10.0.0.1:1000", "10.0.0.2:1000"} {
		b := newStalled()
		held = append(held, b)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := httptest.NewRequest(http.MethodPost, "https://sts.kube-sts.test/vault/token", b)
			r.Header.Set("Content-Type", exchange.ContentTypeForm)
			r.RemoteAddr = addr
			srv.ServeHTTP(httptest.NewRecorder(), r)
		}()
		select {
		case <-b.read:
		case <-time.After(5 * time.Second):
			t.Fatal("the handler never read the first body")
		}
	}
	for _, tc := range []struct{ addr, bound string }{{"10.0.0.1:2000", "per address"}, {"10.0.0.3:1000", "in all"}} {
		b := newStalled()
		r := httptest.NewRequest(http.MethodPost, "https://sts.kube-sts.test/vault/token", b)
		r.Header.Set("Content-Type", exchange.ContentTypeForm)
		r.RemoteAddr = tc.addr
		w := httptest.NewRecorder()
		done := make(chan struct{})
		go func() { srv.ServeHTTP(w, r); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Second):
			close(b.release)
			t.Fatalf("%s: a request beyond the pending bound was not answered at once", tc.bound)
		}
		select {
		case <-b.read:
			t.Fatalf("%s: the refused request's body was read", tc.bound)
		default:
		}
		if w.Code != 503 || w.Header().Get("Retry-After") != "1" || w.Header().Get("Connection") != "close" || oauthCode(t, w.Body.String()) != exchange.TemporarilyUnavailable {
			t.Fatalf("%s: %d Retry-After=%q Connection=%q %s", tc.bound, w.Code, w.Header().Get("Retry-After"), w.Header().Get("Connection"), w.Body)
		}
	}
	for _, b := range held {
		close(b.release)
	}
	wg.Wait()
	if w := post(srv, exchangeBody(tok), from("10.0.0.1:3000")); w.Code != 200 {
		t.Fatalf("after the stalled requests ended: %d %s", w.Code, w.Body)
	}
	for _, m := range family(t, srv, "sts_issuer_refused_total") {
		if got := m.GetCounter().GetValue(); got != 1 {
			t.Errorf("sts_issuer_refused_total{bound=%q} = %v, want 1", label(m, "bound"), got)
		}
	}
	if n := len(family(t, srv, "sts_issuer_refused_total")); n != 2 {
		t.Errorf("refusals counted under %d bounds, want 2 (in all, per address)", n)
	}
	if got := exchanges(t, srv, "overloaded"); got != 2 {
		t.Errorf("overloaded exchanges counted %v, want 2 (the exchange alert reads them)", got)
	}
}

// TestBodyBounded: a declared body over the limit is refused unread, and
// the connection is closed after the answer rather than drained.
func TestBodyBounded(t *testing.T) {
	srv, _, _, _ := newHarness(t)
	b := newStalled()
	r := httptest.NewRequest(http.MethodPost, "https://sts.kube-sts.test/vault/token", b)
	r.Header.Set("Content-Type", exchange.ContentTypeForm)
	r.ContentLength = exchange.MaxRequestBytes + 1
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, r)
	select {
	case <-b.read:
		t.Fatal("the oversized body was read")
	default:
	}
	if w.Code != 400 || w.Header().Get("Connection") != "close" || !strings.Contains(w.Body.String(), "larger than 18432 bytes") {
		t.Fatalf("oversized body: %d Connection=%q %s", w.Code, w.Header().Get("Connection"), w.Body)
	}
	// An undeclared body is read up to the limit and no further.
	w = post(srv, exchangeBody(strings.Repeat("x", exchange.MaxRequestBytes)))
	if w.Code != 400 || !strings.Contains(w.Body.String(), "larger than") {
		t.Fatalf("long body: %d %s", w.Code, w.Body)
	}
}

func gauge(t *testing.T, srv *Server, name string) float64 {
	t.Helper()
	ms := family(t, srv, name)
	if len(ms) == 0 {
		t.Fatalf("no metric %s", name)
	}
	return ms[0].GetGauge().GetValue()
}

// TestRFCExactness: audience/resource the endpoint cannot serve is
// invalid_target, its own audience is accepted, scope is ignored, an empty
// parameter is omitted, and parameters in the query string are refused.
func TestRFCExactness(t *testing.T) {
	const uid = "u1"
	srv, api, _, _ := newHarness(t, pod("test-vault", "live", uid, "for-vault"))
	tok := fakeToken("rfc")
	api.statuses[tok] = status("test-vault", "for-vault", "live", uid)
	base := []string{"grant_type", exchange.GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", exchange.TokenTypeJWT}
	with := func(kv ...string) string { return formBody(append(append([]string{}, base...), kv...)...) }
	for _, tc := range []struct {
		name, body, query string
		code              int
		oauth             string
	}{
		{"other audience", with("audience", "https://aws.example"), "", 400, exchange.InvalidTarget},
		{"resource", with("resource", "https://s3.example"), "", 400, exchange.InvalidTarget},
		{"own audience", with("audience", testAudience), "", 200, ""},
		{"scope ignored", with("scope", "openid"), "", 200, ""},
		{"empty requested_token_type", with("requested_token_type", ""), "", 200, ""},
		{"query string", exchangeBody(tok), "subject_token=x", 400, exchange.InvalidRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := post(srv, tc.body, func(r *http.Request) { r.URL.RawQuery = tc.query })
			if w.Code != tc.code {
				t.Fatalf("%d %s, want %d", w.Code, w.Body, tc.code)
			}
			if tc.oauth != "" && oauthCode(t, w.Body.String()) != tc.oauth {
				t.Fatalf("error %s, want %s", w.Body, tc.oauth)
			}
		})
	}
}

// TestRefusalsEchoNothing runs every refusal path of the exchange with a real
// looking token in it and checks that neither a response (body and headers)
// nor any log line holds "eyJ" or an 8-byte run of that token.
func TestRefusalsEchoNothing(t *testing.T) {
	srv, api, logs, _ := newHarnessWith(t, func(o *Options) { o.Verifier = screen{} }, pod("test-vault", "live", "u1", "for-vault"))
	secret := fakeToken("secret-value-of-a-pod")
	garbage := fakeToken("garbage-not-signed-by-the-cluster")
	leaks := func(text string) bool { return redact.Leaks(text, secret) || redact.Leaks(text, garbage) }
	api.statuses[secret] = status("test-vault", "for-vault", "live", "other-uid")
	api.statuses[fakeToken("api-says")] = statusWithError(secret)
	bodies := map[string]string{
		"as grant_type":         formBody("grant_type", secret, "subject_token", secret, "subject_token_type", exchange.TokenTypeJWT),
		"as subject_token_type": formBody("grant_type", exchange.GrantTypeTokenExchange, "subject_token", secret, "subject_token_type", secret),
		"as requested type":     formBody("grant_type", exchange.GrantTypeTokenExchange, "subject_token", secret, "subject_token_type", exchange.TokenTypeJWT, "requested_token_type", secret),
		"without a name":        secret,
		"as audience":           formBody("grant_type", exchange.GrantTypeTokenExchange, "subject_token", secret, "subject_token_type", exchange.TokenTypeJWT, "audience", secret),
		"twice":                 formBody("grant_type", exchange.GrantTypeTokenExchange, "subject_token", secret, "subject_token", secret, "subject_token_type", exchange.TokenTypeJWT),
		"replaced pod":          exchangeBody(secret),
		"garbage":               exchangeBody(garbage),
		"API server quotes it":  exchangeBody(fakeToken("api-says")),
		"not a jwt":             exchangeBody("x" + secret),
		"in the query":          exchangeBody(secret) + "&q=1",
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			w := post(srv, body, func(r *http.Request) {
				if name == "in the query" {
					r.URL.RawQuery = "subject_token=" + secret
				}
			})
			if w.Code == 200 {
				t.Fatal("accepted")
			}
			if leaks(w.Body.String()) {
				t.Fatalf("response quotes the token: %s", w.Body)
			}
			for k, v := range w.Header() {
				if leaks(k + strings.Join(v, ",")) {
					t.Fatalf("header %s quotes the token", k)
				}
			}
		})
	}
	for _, e := range logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + strings.TrimSpace(strings.ReplaceAll(toString(v), "\n", " "))
		}
		if leaks(line) {
			t.Fatalf("a log line quotes the token: %s", line)
		}
	}
	if len(logs.All()) < len(bodies) {
		t.Fatalf("only %d audit lines for %d refusals", len(logs.All()), len(bodies))
	}
}

func toString(v any) string { return fmt.Sprint(v) }

// statusWithError is a TokenReview status whose error quotes a token, as a
// webhook token authenticator in front of the API server might.
func statusWithError(tok string) authnv1.TokenReviewStatus {
	return authnv1.TokenReviewStatus{Error: "token " + tok + " could not be verified"}
}

// TestScreenedRefusalsSampled: a flood of refusals made before any identity
// is known logs at most 100 lines a second (then 1 in 1000); refusals of
// identified Pods are all logged.
func TestScreenedRefusalsSampled(t *testing.T) {
	srv, _, logs, _ := newHarnessWith(t, func(o *Options) { o.Verifier = screen{} })
	for range 1000 {
		post(srv, exchangeBody(fakeToken("garbage")))
	}
	if n := logs.FilterMessage("exchange refused").Len(); n < 100 || n > 202 { // two sampling windows at most
		t.Fatalf("%d log lines for 1000 garbage refusals , want 100-202 (100 per second)", n)
	}
	if got := exchanges(t, srv, "bad_signature"); got != 1000 {
		t.Fatalf("metrics counted %v of 1000", got)
	}
}

// TestReportKeyAges: the key-age gauge follows the clock between key changes.
func TestReportKeyAges(t *testing.T) {
	srv, _, _, set := newHarness(t)
	age := func() float64 {
		if ms := family(t, srv, "sts_issuer_signing_key_age_seconds"); len(ms) > 0 {
			return ms[0].GetGauge().GetValue()
		}
		return -1
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.ReportKeyAges(ctx, 5*time.Millisecond); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for age() < time.Since(set.Signing.Created).Seconds()-1 || age() <= 0 {
		if time.Now().After(deadline) {
			t.Fatalf("key age %v not reported", age())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
}
