package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	"github.com/kube-sts/kube-sts/issuer/internal/config"
	"github.com/kube-sts/kube-sts/issuer/internal/events"
	"github.com/kube-sts/kube-sts/issuer/internal/keys"
	"github.com/kube-sts/kube-sts/issuer/internal/metrics"
	"github.com/kube-sts/kube-sts/issuer/internal/mint"
	"github.com/kube-sts/kube-sts/issuer/internal/review"
	"github.com/kube-sts/kube-sts/issuer/internal/satoken"
	"github.com/kube-sts/kube-sts/shared/exchange"
)

const (
	testIssuer   = "https://sts.kube-sts.test/vault"
	testAudience = "https://vault.kube-sts.test/"
)

const testConfig = `
cluster: openunison-cp
endpoints:
- name: vault
  issuer: sts.kube-sts.test/vault
  audience: https://vault.kube-sts.test/
  algorithm: ES256
  keys: {files: [/unused]}
  allow:
  - {namespace: "test-*"}
  deny:
  - {namespace: test-denied}
`

// fakeToken builds a JWT-shaped subject token; the fake API server looks it up by value.
func fakeToken(name string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","kid":"k"}`)) + "." + enc([]byte(`{"name":"`+name+`"}`)) + ".c2ln"
}

func pod(ns, name, uid, sa string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)},
		Spec:       corev1.PodSpec{ServiceAccountName: sa},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func status(ns, sa, podName, uid string) authnv1.TokenReviewStatus {
	st := authnv1.TokenReviewStatus{
		Authenticated: true,
		Audiences:     []string{testIssuer},
		User: authnv1.UserInfo{
			Username: "system:serviceaccount:" + ns + ":" + sa,
			Extra:    map[string]authnv1.ExtraValue{},
		},
	}
	if podName != "" {
		st.User.Extra[review.ExtraPodName] = authnv1.ExtraValue{podName}
	}
	if uid != "" {
		st.User.Extra[review.ExtraPodUID] = authnv1.ExtraValue{uid}
	}
	return st
}

// fakeAPI answers TokenReviews from a table and fails on demand.
type fakeAPI struct {
	mu       sync.Mutex
	statuses map[string]authnv1.TokenReviewStatus
	trErr    map[string]error
	podErr   error
	reviews  atomic.Int64
	delay    time.Duration
	// block, when set, holds every TokenReview until it is closed.
	block chan struct{}
}

func newHarness(t testing.TB, objs ...runtime.Object) (*Server, *fakeAPI, *observer.ObservedLogs, *keys.Set) {
	t.Helper()
	return newHarnessWith(t, nil, objs...)
}

// newHarnessWith lets a test adjust the server's options.
func newHarnessWith(t testing.TB, adjust func(*Options), objs ...runtime.Object) (*Server, *fakeAPI, *observer.ObservedLogs, *keys.Set) {
	t.Helper()
	cfg, err := config.Parse([]byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	api := &fakeAPI{statuses: map[string]authnv1.TokenReviewStatus{}, trErr: map[string]error{}}
	cs := fake.NewClientset(objs...)
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		api.reviews.Add(1)
		if api.delay > 0 {
			time.Sleep(api.delay)
		}
		if api.block != nil {
			<-api.block
		}
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		api.mu.Lock()
		defer api.mu.Unlock()
		if err := api.trErr[tr.Spec.Token]; err != nil {
			return true, nil, err
		}
		if len(tr.Spec.Audiences) != 1 || tr.Spec.Audiences[0] != testIssuer {
			t.Errorf("TokenReview audiences = %v, want [%s]", tr.Spec.Audiences, testIssuer)
		}
		out := tr.DeepCopy()
		out.Status = api.statuses[tr.Spec.Token]
		return true, out, nil
	})
	cs.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		if api.podErr != nil {
			return true, nil, api.podErr
		}
		return false, nil, nil
	})
	core, logs := observer.New(zapcore.InfoLevel)
	opts := Options{Config: cfg, Reviewer: review.New(cs, time.Second, nil), Log: zap.New(core), Metrics: newMetrics(t)}
	if adjust != nil {
		adjust(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	k, err := keys.Generate(keys.ES256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	set, err := keys.NewSet(k, []*keys.Key{k})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Endpoint("vault").SetKeys(set); err != nil {
		t.Fatal(err)
	}
	return srv, api, logs, set
}

func formBody(kv ...string) string {
	v := url.Values{}
	for i := 0; i < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v.Encode()
}

func exchangeBody(tok string) string {
	return formBody("grant_type", exchange.GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", exchange.TokenTypeJWT)
}

func post(srv http.Handler, body string, mutate ...func(*http.Request)) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "https://sts.kube-sts.test/vault/token", strings.NewReader(body))
	r.Header.Set("Content-Type", exchange.ContentTypeForm)
	for _, m := range mutate {
		m(r)
	}
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, r)
	return w
}

func TestExchangeFaults(t *testing.T) {
	const uid = "0c6a2ea0-7d7e-4b65-a3c4-5a6ee0e7c1a1"
	objs := []runtime.Object{
		pod("test-vault", "live", uid, "for-vault"),
		pod("test-vault", "replaced", "new-uid", "for-vault"),
		pod("test-vault", "terminating", uid, "for-vault", func(p *corev1.Pod) { now := metav1.Now(); p.DeletionTimestamp = &now }),
		pod("test-vault", "done", uid, "for-vault", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
		pod("test-vault", "failed", uid, "for-vault", func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }),
		pod("test-vault", "other-sa", uid, "default"),
		pod("test-denied", "live", uid, "for-vault"),
		pod("prod", "live", uid, "for-vault"),
	}
	gr := schema.GroupResource{Group: "authentication.k8s.io", Resource: "tokenreviews"}
	tests := map[string]struct {
		body    string
		method  string
		ctype   string
		status  *authnv1.TokenReviewStatus
		trErr   error
		podErr  error
		code    int
		errCode string
		reason  string // audit reason, when the request gets that far
		descIn  string
	}{
		"missing grant_type":        {body: formBody("subject_token", fakeToken("x"), "subject_token_type", exchange.TokenTypeJWT), code: 400, errCode: exchange.InvalidRequest, reason: "bad_request"},
		"duplicate subject_token":   {body: formBody("grant_type", exchange.GrantTypeTokenExchange, "subject_token", fakeToken("x"), "subject_token", fakeToken("y"), "subject_token_type", exchange.TokenTypeJWT), code: 400, errCode: exchange.InvalidRequest, descIn: "given 2 times"},
		"wrong grant":               {body: formBody("grant_type", "password", "subject_token", fakeToken("x"), "subject_token_type", exchange.TokenTypeJWT), code: 400, errCode: exchange.UnsupportedGrantType},
		"wrong token type":          {body: formBody("grant_type", exchange.GrantTypeTokenExchange, "subject_token", fakeToken("x"), "subject_token_type", "urn:ietf:params:oauth:token-type:id_token"), code: 400, errCode: exchange.InvalidRequest},
		"oversized body":            {body: exchangeBody(fakeToken("x")) + "&" + strings.Repeat("a", 70<<10), code: 400, errCode: exchange.InvalidRequest, descIn: "larger than"},
		"token of 100k dots":        {body: exchangeBody(strings.Repeat(".", 100_000)), code: 400, errCode: exchange.InvalidRequest, descIn: "larger than"},
		"token of 10k dots":         {body: exchangeBody(strings.Repeat(".", 10_000)), code: 400, errCode: exchange.InvalidRequest, reason: "not_a_jwt"},
		"not a JWT":                 {body: exchangeBody("hello-world"), code: 400, errCode: exchange.InvalidRequest, reason: "not_a_jwt"},
		"alg none":                  {body: exchangeBody(base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + ".e30.c2ln"), code: 400, errCode: exchange.InvalidRequest, reason: "not_a_jwt"},
		"json content type":         {body: exchangeBody(fakeToken("x")), ctype: "application/json", code: 400, errCode: exchange.InvalidRequest, reason: "bad_content_type"},
		"form with a charset":       {body: exchangeBody(fakeToken("x")), ctype: "Application/X-WWW-Form-Urlencoded; charset=UTF-8", code: 400, errCode: exchange.InvalidRequest, reason: "not_authenticated"}, // past the type check
		"form-like content type":    {body: exchangeBody(fakeToken("x")), ctype: exchange.ContentTypeForm + "x", code: 400, errCode: exchange.InvalidRequest, reason: "bad_content_type"},
		"GET":                       {method: http.MethodGet, code: 405, errCode: exchange.InvalidRequest},
		"API-server-audience token": {status: &authnv1.TokenReviewStatus{Authenticated: false, Error: ""}, code: 400, errCode: exchange.InvalidRequest, reason: "not_authenticated", descIn: "minted for another audience"},
		"audience missing in status": {status: func() *authnv1.TokenReviewStatus {
			s := status("test-vault", "for-vault", "live", uid)
			s.Audiences = []string{"https://kubernetes.default.svc"}
			return &s
		}(), code: 400, errCode: exchange.InvalidRequest, reason: "audience_mismatch"},
		"authenticated with error": {status: func() *authnv1.TokenReviewStatus {
			s := status("test-vault", "for-vault", "live", uid)
			s.Error = "token lookup failed"
			return &s
		}(), code: 400, errCode: exchange.InvalidRequest, reason: "not_authenticated", descIn: "token lookup failed"},
		"legacy token, no extras": {status: ptr(status("test-vault", "for-vault", "", "")), code: 400, errCode: exchange.InvalidRequest, reason: "not_pod_bound", descIn: "projected"},
		"pod name without uid":    {status: ptr(status("test-vault", "for-vault", "live", "")), code: 400, errCode: exchange.InvalidRequest, reason: "not_pod_bound"},
		"user, not serviceaccount": {status: func() *authnv1.TokenReviewStatus {
			s := status("x", "y", "live", uid)
			s.User.Username = "alice"
			return &s
		}(), code: 400, errCode: exchange.InvalidRequest, reason: "not_serviceaccount"},
		"username without name": {status: func() *authnv1.TokenReviewStatus {
			s := status("x", "y", "live", uid)
			s.User.Username = "system:serviceaccount:test-vault"
			return &s
		}(), code: 400, errCode: exchange.InvalidRequest, reason: "not_serviceaccount"},
		"username with extra colon": {status: func() *authnv1.TokenReviewStatus {
			s := status("x", "y", "live", uid)
			s.User.Username = "system:serviceaccount:test-vault:a:b"
			return &s
		}(), code: 400, errCode: exchange.InvalidRequest, reason: "not_serviceaccount"},
		"username bad namespace": {status: ptr(status("Test_Vault", "for-vault", "live", uid)), code: 400, errCode: exchange.InvalidRequest, reason: "not_serviceaccount"},
		"denied namespace":       {status: ptr(status("test-denied", "for-vault", "live", uid)), code: 400, errCode: exchange.InvalidRequest, reason: "denied", descIn: "denied by deny[0]"},
		"no allow rule matches":  {status: ptr(status("prod", "for-vault", "live", uid)), code: 400, errCode: exchange.InvalidRequest, reason: "denied", descIn: "no allow rule matches"},
		"deleted pod":            {status: ptr(status("test-vault", "for-vault", "gone", uid)), code: 400, errCode: exchange.InvalidRequest, reason: "pod_gone", descIn: "no longer exists"},
		"uid mismatch":           {status: ptr(status("test-vault", "for-vault", "replaced", uid)), code: 400, errCode: exchange.InvalidRequest, reason: "pod_replaced"},
		"terminating pod":        {status: ptr(status("test-vault", "for-vault", "terminating", uid)), code: 400, errCode: exchange.InvalidRequest, reason: "pod_terminating"},
		"succeeded pod":          {status: ptr(status("test-vault", "for-vault", "done", uid)), code: 400, errCode: exchange.InvalidRequest, reason: "pod_finished"},
		"failed pod":             {status: ptr(status("test-vault", "for-vault", "failed", uid)), code: 400, errCode: exchange.InvalidRequest, reason: "pod_finished"},
		"pod runs as another sa": {status: ptr(status("test-vault", "for-vault", "other-sa", uid)), code: 400, errCode: exchange.InvalidRequest, reason: "pod_serviceaccount_mismatch"},
		"tokenreview timeout":    {trErr: apierrors.NewTimeoutError("review took too long", 1), code: 503, errCode: exchange.TemporarilyUnavailable, reason: "tokenreview_unavailable", descIn: "timeout"},
		"tokenreview deadline":   {trErr: context.DeadlineExceeded, code: 503, errCode: exchange.TemporarilyUnavailable, reason: "tokenreview_unavailable"},
		"tokenreview 5xx":        {trErr: apierrors.NewInternalError(errors.New("etcd down")), code: 503, errCode: exchange.TemporarilyUnavailable, reason: "tokenreview_unavailable"},
		"tokenreview 429":        {trErr: apierrors.NewTooManyRequests("slow down", 1), code: 503, errCode: exchange.TemporarilyUnavailable, reason: "tokenreview_unavailable", descIn: "throttled"},
		"tokenreview forbidden":  {trErr: apierrors.NewForbidden(gr, "", errors.New("rbac")), code: 500, errCode: exchange.ServerError, reason: "tokenreview_forbidden", descIn: "RBAC"},
		"pod lookup 5xx":         {status: ptr(status("test-vault", "for-vault", "live", uid)), podErr: apierrors.NewServiceUnavailable("apiserver shutting down"), code: 503, errCode: exchange.TemporarilyUnavailable, reason: "pod_unavailable"},
	}
	srv, api, logs, _ := newHarness(t, objs...)
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tok := fakeToken(name)
			api.mu.Lock()
			if tc.status != nil {
				api.statuses[tok] = *tc.status
			}
			if tc.trErr != nil {
				api.trErr[tok] = tc.trErr
			}
			api.podErr = tc.podErr
			api.mu.Unlock()
			body := tc.body
			if body == "" {
				body = exchangeBody(tok)
			}
			before := logs.Len()
			w := post(srv, body, func(r *http.Request) {
				if tc.method != "" {
					r.Method = tc.method
				}
				if tc.ctype != "" {
					r.Header.Set("Content-Type", tc.ctype)
				}
			})
			if w.Code != tc.code {
				t.Fatalf("status = %d, want %d; body %s", w.Code, tc.code, w.Body)
			}
			var e exchange.Error
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
				t.Fatalf("error body is not JSON: %q", w.Body)
			}
			if e.Code != tc.errCode || !strings.Contains(e.Description, tc.descIn) || e.Description == "" {
				t.Fatalf("error = %q / %q, want %q containing %q", e.Code, e.Description, tc.errCode, tc.descIn)
			}
			if cc := w.Header().Get("Cache-Control"); cc != "no-store" && tc.code != 405 {
				t.Errorf("Cache-Control = %q, want no-store", cc)
			}
			if strings.Contains(w.Body.String(), tok) {
				t.Fatal("the error echoes the subject token")
			}
			entries := logs.All()[before:]
			if tc.code == 405 {
				return
			}
			if len(entries) != 1 || entries[0].Message != "exchange refused" {
				t.Fatalf("want one audit line 'exchange refused', got %d: %v", len(entries), entries)
			}
			if tc.reason != "" && entries[0].ContextMap()["reason"] != tc.reason {
				t.Errorf("audit reason = %v, want %s", entries[0].ContextMap()["reason"], tc.reason)
			}
		})
	}
	for _, e := range logs.All() {
		if e.Message == "token issued" {
			t.Fatal("a token was issued in the fault table")
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestExchangeIssues(t *testing.T) {
	const uid = "0c6a2ea0-7d7e-4b65-a3c4-5a6ee0e7c1a1"
	srv, api, logs, set := newHarness(t, pod("test-vault", "live", uid, "for-vault"))
	tok := fakeToken("good")
	api.statuses[tok] = status("test-vault", "for-vault", "live", uid)

	w := post(srv, exchangeBody(tok))
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q", cc)
	}
	var resp exchange.Response
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if err := resp.Validate(); err != nil || resp.TokenType != "N_A" || resp.ExpiresIn < 899 || resp.ExpiresIn > 900 {
		t.Fatalf("response %+v: %v", resp, err)
	}
	jws, err := jose.ParseSignedCompact(resp.AccessToken, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	h := jws.Signatures[0].Header
	if h.KeyID != set.Signing.ID || h.ExtraHeaders["typ"] != "JWT" {
		t.Fatalf("header kid=%q typ=%v", h.KeyID, h.ExtraHeaders["typ"])
	}
	// Verify against the published JWKS, as a relying party would.
	jr := httptest.NewRecorder()
	srv.ServeHTTP(jr, httptest.NewRequest(http.MethodGet, "https://sts.kube-sts.test/vault/jwks", nil))
	var jwks jose.JSONWebKeySet
	if err := json.Unmarshal(jr.Body.Bytes(), &jwks); err != nil {
		t.Fatal(err)
	}
	payload, err := jws.Verify(jwks.Key(h.KeyID)[0])
	if err != nil {
		t.Fatalf("verify with the JWKS: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	var names []string
	for k := range claims {
		names = append(names, k)
	}
	sort.Strings(names)
	if want := []string{"aud", "cluster", "exp", "iat", "iss", "jti", "namespace", "nbf", "saname", "sub"}; !slices.Equal(names, want) {
		t.Fatalf("claims %v, want exactly %v", names, want)
	}
	for k, want := range map[string]string{"iss": testIssuer, "aud": testAudience, "sub": "openunison-cp:test-vault:for-vault", "cluster": "openunison-cp", "namespace": "test-vault", "saname": "for-vault"} {
		if claims[k] != want {
			t.Errorf("claim %s = %v, want %q", k, claims[k], want)
		}
	}
	jti, _ := base64.RawURLEncoding.DecodeString(claims["jti"].(string))
	if len(jti) < 16 {
		t.Errorf("jti has %d bytes, want at least 16", len(jti))
	}
	if claims["exp"].(float64)-claims["iat"].(float64) != 900 || claims["iat"].(float64)-claims["nbf"].(float64) != 60 {
		t.Errorf("exp/iat/nbf = %v/%v/%v", claims["exp"], claims["iat"], claims["nbf"])
	}
	issued := logs.FilterMessage("token issued").All()
	if len(issued) != 1 {
		t.Fatalf("%d issuance audit lines, want 1", len(issued))
	}
	for _, k := range []string{"endpoint", "sts", "namespace", "serviceaccount", "pod", "jti", "exp"} {
		if _, ok := issued[0].ContextMap()[k]; !ok {
			t.Errorf("audit line lacks %s", k)
		}
	}
	for _, e := range logs.All() {
		for _, v := range e.ContextMap() {
			if s, ok := v.(string); ok && (strings.Contains(s, tok) || strings.Contains(s, resp.AccessToken)) {
				t.Fatal("a log line contains a token")
			}
		}
	}

	// No positive caching: the same token is reviewed again.
	n := api.reviews.Load()
	if w := post(srv, exchangeBody(tok)); w.Code != 200 {
		t.Fatalf("second exchange: %d", w.Code)
	}
	if api.reviews.Load() != n+1 {
		t.Fatal("the second exchange did not review the token again")
	}
}

// TestPodLifetime: the lifetime a Pod asks for (kube_sts_lifetime) is
// granted when shorter than the endpoint's; a longer one is not, and the
// response and the audit line say why; a malformed one is refused.
func TestPodLifetime(t *testing.T) {
	const uid = "5b0e7c1a-1c1d-4a51-9e0b-3a0c7e6f1d2e"
	srv, api, logs, _ := newHarness(t, pod("test-vault", "live", uid, "for-vault"))
	tok := fakeToken("lifetime")
	api.statuses[tok] = status("test-vault", "for-vault", "live", uid)
	ask := func(lifetime string) (exchange.Response, int, string) {
		t.Helper()
		w := post(srv, formBody("grant_type", exchange.GrantTypeTokenExchange, "subject_token", tok,
			"subject_token_type", exchange.TokenTypeJWT, exchange.ParamLifetime, lifetime))
		var resp exchange.Response
		_ = json.Unmarshal(w.Body.Bytes(), &resp)
		return resp, w.Code, w.Body.String()
	}
	lifetimeOf := func(jwt string) float64 {
		t.Helper()
		jws, err := jose.ParseSignedCompact(jwt, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatal(err)
		}
		var c map[string]any
		if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &c); err != nil {
			t.Fatal(err)
		}
		return c["exp"].(float64) - c["iat"].(float64)
	}

	resp, code, body := ask("600")
	if code != 200 || resp.ExpiresIn < 599 || resp.ExpiresIn > 600 || resp.LifetimeNote != "" || lifetimeOf(resp.AccessToken) != 600 {
		t.Fatalf("10 minutes asked: %d %s", code, body)
	}
	resp, code, body = ask("3600")
	if code != 200 || resp.ExpiresIn < 899 || resp.ExpiresIn > 900 || lifetimeOf(resp.AccessToken) != 900 ||
		!strings.Contains(resp.LifetimeNote, "1h0m0s is longer than endpoint vault's ttl 15m0s") {
		t.Fatalf("an hour asked, the endpoint's 15 minutes granted with a note: %d %s", code, body)
	}
	audited := logs.FilterMessage("token issued").All()
	if n := len(audited); n != 2 || audited[0].ContextMap()["lifetime_note"] != nil || audited[1].ContextMap()["lifetime_note"] != resp.LifetimeNote {
		t.Fatalf("audit lines %v: only the second should carry the note", audited)
	}
	for _, bad := range []string{"0", "-60", "ten", "600.5", "86401"} {
		if resp, code, body := ask(bad); code != 400 || !strings.Contains(body, "kube_sts_lifetime must be a whole number of seconds") || resp.AccessToken != "" {
			t.Errorf("kube_sts_lifetime=%s: %d %s, want 400 invalid_request", bad, code, body)
		}
	}
}

// TestEventsToldToPods: a refusal of a known Pod is a TokenRefused Event on
// it with the OAuth error (no token); its next token is one TokenIssued; a
// refusal before any Pod is known (garbage) is told to nobody.
func TestEventsToldToPods(t *testing.T) {
	const uid = "7d3a4c1e-2b5f-4e6a-9c8d-1f0e2d3c4b5a"
	fake := record.NewFakeRecorder(10)
	srv, api, _, _ := newHarnessWith(t, func(o *Options) { o.Events = events.NewWith(fake) }, pod("test-vault", "live", uid, "for-vault"))
	tok := fakeToken("told")
	api.statuses[tok] = status("test-vault", "for-vault", "live", uid)

	api.podErr = apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, "live")
	if w := post(srv, exchangeBody(tok)); w.Code != 400 {
		t.Fatalf("Pod gone: %d %s", w.Code, w.Body)
	}
	api.podErr = nil
	for range 2 {
		if w := post(srv, exchangeBody(tok)); w.Code != 200 {
			t.Fatalf("Pod back: %d %s", w.Code, w.Body)
		}
	}
	if w := post(srv, exchangeBody("garbage.garbage.garbage")); w.Code != 400 {
		t.Fatalf("garbage: %d", w.Code)
	}
	close(fake.Events)
	var got []string
	for e := range fake.Events {
		got = append(got, e)
	}
	want := []string{
		"Warning TokenRefused endpoint vault refused the token exchange: invalid_request: pod test-vault/live no longer exists",
		"Normal TokenIssued endpoint vault issued a token after refusing earlier exchanges",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events\n %q\nwant\n %q", got, want)
	}
}

// screen is a Verifier that refuses every token with err, naming bound.
type fixedScreen struct {
	bound *satoken.Binding
	err   error
}

func (v fixedScreen) VerifyHeader(context.Context, string, satoken.Header, string) (*satoken.Binding, error) {
	return v.bound, v.err
}

// TestEventsForScreenedRefusals: a token the local screen refuses but the
// cluster signed (another audience) names its Pod, which is told; one the
// cluster did not sign names nobody.
func TestEventsForScreenedRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    fixedScreen
		want []string
	}{
		{"signed by the cluster, another audience", fixedScreen{
			bound: &satoken.Binding{Namespace: "test-vault", ServiceAccount: "for-vault", Pod: "web-0", PodUID: "u-9"},
			err:   &satoken.Error{Reason: "wrong_audience", Description: "subject_token is not valid for audience \"x\""}},
			[]string{`Warning TokenRefused endpoint vault refused the token exchange: invalid_request: subject_token is not valid for audience "x"`}},
		{"not signed by the cluster", fixedScreen{err: &satoken.Error{Reason: "bad_signature", Description: "not ours"}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := record.NewFakeRecorder(10)
			srv, _, _, _ := newHarnessWith(t, func(o *Options) { o.Events = events.NewWith(fake); o.Verifier = tc.v })
			if w := post(srv, exchangeBody(fakeToken("screened"))); w.Code != 400 {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			close(fake.Events)
			var got []string
			for e := range fake.Events {
				got = append(got, e)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("events %q, want %q", got, tc.want)
			}
		})
	}
}

func TestConcurrentIdenticalReviewsCollapse(t *testing.T) {
	const uid = "u1"
	// The per-token limit is raised: this is about coalescing, not limiting.
	srv, api, _, _ := newHarnessWith(t, func(o *Options) { o.PerTokenPerSecond = 8 }, pod("test-vault", "live", uid, "for-vault"))
	tok := fakeToken("same")
	api.statuses[tok] = status("test-vault", "for-vault", "live", uid)
	api.block = make(chan struct{})
	var wg sync.WaitGroup
	codes := make([]int, 8)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = post(srv, exchangeBody(tok)).Code
		}()
	}
	// All eight are past the screen and the limits (each holds an in-flight
	// slot) before the API server answers the one review.
	deadline := time.Now().Add(10 * time.Second)
	for srv.inflight.InUse() < len(codes) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d requests in flight", srv.inflight.InUse(), len(codes))
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // from the slot to the flight: a few instructions
	close(api.block)
	wg.Wait()
	for i, c := range codes {
		if c != 200 {
			t.Fatalf("request %d: %d", i, c)
		}
	}
	if n := api.reviews.Load(); n != 1 {
		t.Fatalf("%d TokenReviews for %d identical concurrent requests; want exactly 1", n, len(codes))
	}
}

func TestDiscovery(t *testing.T) {
	srv, _, _, set := newHarness(t)
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "https://sts.kube-sts.test/vault/.well-known/openid-configuration", nil))
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" || w.Header().Get("Cache-Control") != "public, max-age=300" {
		t.Fatalf("discovery: %d %v", w.Code, w.Header())
	}
	var d map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &d); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"issuer": testIssuer, "jwks_uri": testIssuer + "/jwks", "token_endpoint": testIssuer + "/token"} {
		if d[k] != want {
			t.Errorf("%s = %v, want %s", k, d[k], want)
		}
	}
	if algs := d["id_token_signing_alg_values_supported"].([]any); len(algs) != 1 || algs[0] != "ES256" {
		t.Errorf("algs = %v", algs)
	}
	for _, k := range []string{"response_types_supported", "subject_types_supported", "claims_supported", "grant_types_supported"} {
		if _, ok := d[k]; !ok {
			t.Errorf("discovery lacks %s", k)
		}
	}

	w = httptest.NewRecorder()
	srv.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "https://sts.kube-sts.test/vault/jwks", nil))
	if w.Header().Get("Content-Type") != "application/jwk-set+json" {
		t.Fatalf("JWKS content type %q", w.Header().Get("Content-Type"))
	}
	var raw struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &raw); err != nil || len(raw.Keys) != 1 {
		t.Fatalf("JWKS %s: %v", w.Body, err)
	}
	k := raw.Keys[0]
	if k["kid"] != set.Signing.ID || k["alg"] != "ES256" || k["use"] != "sig" {
		t.Errorf("JWK %v", k)
	}
	if _, ok := k["d"]; ok {
		t.Fatal("the JWKS holds private key material")
	}

	for path, code := range map[string]int{"/vault/nope": 404, "/other/jwks": 404, "/healthz": 200, "/readyz": 200, "/vault": 404} {
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "https://sts.kube-sts.test"+path, nil))
		if w.Code != code {
			t.Errorf("GET %s = %d, want %d", path, w.Code, code)
		}
	}
}

func TestNotReadyWithoutKeys(t *testing.T) {
	cfg, err := config.Parse([]byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Options{Config: cfg, Reviewer: review.New(fake.NewClientset(), time.Second, nil), Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "https://sts.kube-sts.test/readyz", nil))
	if w.Code != 503 {
		t.Fatalf("readyz without keys = %d", w.Code)
	}
	if w := post(srv, exchangeBody(fakeToken("x"))); w.Code != 503 {
		t.Fatalf("exchange without keys = %d, want 503", w.Code)
	}
}

func TestRoutingByHostAndPath(t *testing.T) {
	cfg, err := config.Parse([]byte(`
cluster: c
endpoints:
- {name: a, issuer: a.example.com, audience: x, keys: {files: [/k]}, allow: [{}]}
- {name: b, issuer: b.example.com, audience: x, keys: {files: [/k]}, allow: [{}]}
- {name: p, issuer: a.example.com/vault, audience: x, keys: {files: [/k]}, allow: [{}]}
- {name: q, issuer: a.example.com/vault/prod, audience: x, keys: {files: [/k]}, allow: [{}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Options{Config: cfg, Reviewer: nil, Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]string{
		"https://a.example.com/jwks":            "a",
		"https://b.example.com/jwks":            "b",
		"https://B.EXAMPLE.COM:443/jwks":        "b",
		"https://a.example.com/vault/jwks":      "p",
		"https://b.example.com/vault/jwks":      "p", // only one endpoint has that path
		"https://a.example.com/vault/prod/jwks": "q",
		"https://c.example.com/jwks":            "",
	}
	for target, want := range tests {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		e, rest := srv.route(r)
		got := ""
		if e != nil {
			got = e.Name()
			if rest != "/jwks" {
				t.Errorf("%s: rest %q", target, rest)
			}
		}
		if got != want {
			t.Errorf("%s routed to %q, want %q", target, got, want)
		}
	}
}

func TestNotReadyWhilePublishingFails(t *testing.T) {
	cfg, err := config.Parse([]byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	var failing error
	srv, err := New(Options{Config: cfg, Log: zap.NewNop(), Metrics: newMetrics(t), Publishing: func() error { return failing }})
	if err != nil {
		t.Fatal(err)
	}
	// sts_issuer_ready follows /readyz.
	ready := func() float64 {
		ms := family(t, srv, "sts_issuer_ready")
		if len(ms) != 1 {
			t.Fatalf("sts_issuer_ready: %d samples", len(ms))
		}
		return ms[0].GetGauge().GetValue()
	}
	if got := ready(); got != 0 {
		t.Errorf("sts_issuer_ready without keys = %v, want 0", got)
	}
	k, err := keys.Generate(keys.ES256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	set, err := keys.NewSet(k, []*keys.Key{k})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range srv.Endpoints() {
		if err := e.SetKeys(set); err != nil {
			t.Fatal(err)
		}
	}
	readyz := func() *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "https://sts.kube-sts.test/readyz", nil))
		return w
	}
	if w := readyz(); w.Code != 200 || ready() != 1 {
		t.Fatalf("readyz with keys = %d %s, sts_issuer_ready %v", w.Code, w.Body, ready())
	}
	failing = errors.New("endpoint vault: publishing to s3://oidc/ has failed for 10m0s")
	if w := readyz(); w.Code != 503 || !strings.Contains(w.Body.String(), "not ready: endpoint vault: publishing to s3://oidc/ has failed") || ready() != 0 {
		t.Errorf("readyz while publishing fails = %d %q, sts_issuer_ready %v", w.Code, w.Body, ready())
	}
}

func withNode(st authnv1.TokenReviewStatus, node, nodeUID string) authnv1.TokenReviewStatus {
	if node != "" {
		st.User.Extra[review.ExtraNodeName] = authnv1.ExtraValue{node}
	}
	if nodeUID != "" {
		st.User.Extra[review.ExtraNodeUID] = authnv1.ExtraValue{nodeUID}
	}
	return st
}

// TestNodeClaimNeedsTheTokensNodeBinding: spec.nodeName is the creator's to
// choose, so the node claim is issued only when the subject token's node
// binding names the same node with the Node's UID.
func TestNodeClaimNeedsTheTokensNodeBinding(t *testing.T) {
	const uid = "u-node"
	p := pod("test-vault", "pinned", uid, "for-vault", func(p *corev1.Pod) { p.Spec.NodeName = "pci-node-1" })
	srv, api, _, _ := newHarnessWith(t, func(o *Options) { o.Config.Endpoints[0].Claims = mint.Options{Node: true} }, p)
	for name, tc := range map[string]struct {
		node, nodeUID string
		wantIn        string
	}{
		"no node binding":           {"", "", "has no node binding"},
		"a Node that did not exist": {"pci-node-1", "", `node "pci-node-1" has no UID: no such Node existed`},
		"another node":              {"node-2", "uid-2", `bound to node "node-2" and the Pod runs on "pci-node-1"`},
	} {
		t.Run(name, func(t *testing.T) {
			tok := fakeToken("node-" + name)
			api.statuses[tok] = withNode(status("test-vault", "for-vault", "pinned", uid), tc.node, tc.nodeUID)
			w := post(srv, exchangeBody(tok))
			e, _ := exchange.ParseError(w.Body.Bytes())
			if w.Code != 400 || e == nil || !strings.Contains(e.Description, tc.wantIn) || e.Code != exchange.InvalidRequest {
				t.Fatalf("%d %s; want 400 naming %q", w.Code, w.Body, tc.wantIn)
			}
		})
	}
	tok := fakeToken("node-ok")
	api.statuses[tok] = withNode(status("test-vault", "for-vault", "pinned", uid), "pci-node-1", "uid-1")
	if w := post(srv, exchangeBody(tok)); w.Code != 200 {
		t.Fatalf("bound to the Pod's node with a UID: %d %s", w.Code, w.Body)
	}
	if got := exchanges(t, srv, "node_unverified"); got != 3 {
		t.Errorf("node_unverified counted %v, want 3", got)
	}
}

func TestExtraClaims(t *testing.T) {
	const uid = "6f1f4c5e-0d0e-4a8e-9a43-1f2b3c4d5e6f"
	p := pod("test-vault", "labeled", uid, "for-vault", func(p *corev1.Pod) {
		p.Labels = map[string]string{"app": "payments-api", "app.kubernetes.io/name": "api", "secret-ish": "not copied"}
		p.Spec.NodeName = "node-7"
	})
	srv, api, _, set := newHarnessWith(t, func(o *Options) {
		o.Config.Endpoints[0].Claims = mint.Options{Node: true, Static: map[string]string{"env": "prod"},
			FromPodLabels: []string{"app", "app.kubernetes.io/name", "team"}}
	}, p)
	tok := fakeToken("labeled")
	api.statuses[tok] = withNode(status("test-vault", "for-vault", "labeled", uid), "node-7", "node-uid-7")
	w := post(srv, exchangeBody(tok))
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	var resp exchange.Response
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSignedCompact(resp.AccessToken, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	payload, err := jws.Verify(set.Signing.Public())
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"node": "node-7", "env": "prod", "app": "payments-api", "app_kubernetes_io_name": "api", "namespace": "test-vault"} {
		if claims[k] != want {
			t.Errorf("claim %s = %v, want %q", k, claims[k], want)
		}
	}
	for _, absent := range []string{"team", "secret-ish", "secret_ish"} {
		if _, ok := claims[absent]; ok {
			t.Errorf("claim %s present: only listed labels the Pod has are copied", absent)
		}
	}
	dw := httptest.NewRecorder()
	srv.ServeHTTP(dw, httptest.NewRequest(http.MethodGet, "https://sts.kube-sts.test/vault/.well-known/openid-configuration", nil))
	var doc struct {
		Claims []string `json:"claims_supported"`
	}
	if err := json.Unmarshal(dw.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"node", "env", "app", "app_kubernetes_io_name", "team"} {
		if !slices.Contains(doc.Claims, c) {
			t.Errorf("claims_supported %v lacks %s", doc.Claims, c)
		}
	}
}

func newMetrics(t testing.TB) *metrics.Metrics {
	t.Helper()
	m, err := metrics.New()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestNewRefusesMetricsTwice: registering a Server's metrics on a registry
// that has them already is an error New returns, not a panic.
func TestNewRefusesMetricsTwice(t *testing.T) {
	cfg, err := config.Parse([]byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	m := newMetrics(t)
	if _, err := New(Options{Config: cfg, Log: zap.NewNop(), Metrics: m}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Config: cfg, Log: zap.NewNop(), Metrics: m}); err == nil || !strings.Contains(err.Error(), "registering metrics") {
		t.Errorf("second New on the same metrics: %v, want a registration error", err)
	}
}
