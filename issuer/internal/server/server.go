// Package server is sts-issuer's HTTP side: routing requests to endpoints by
// host and path, the token exchange, and the discovery and JWKS documents,
// which are rendered once per key change and served as bytes.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/kube-sts/kube-sts/issuer/internal/config"
	"github.com/kube-sts/kube-sts/issuer/internal/discovery"
	"github.com/kube-sts/kube-sts/issuer/internal/keys"
	"github.com/kube-sts/kube-sts/issuer/internal/limit"
	"github.com/kube-sts/kube-sts/issuer/internal/metrics"
	"github.com/kube-sts/kube-sts/issuer/internal/mint"
	"github.com/kube-sts/kube-sts/issuer/internal/policy"
	"github.com/kube-sts/kube-sts/issuer/internal/review"
	"github.com/kube-sts/kube-sts/issuer/internal/satoken"
	"github.com/kube-sts/kube-sts/shared/exchange"
)

// Reviewer confirms subject tokens; *review.Reviewer is one.
type Reviewer interface {
	Review(ctx context.Context, token, audience string) (review.Identity, error)
}

// Verifier screens subject tokens locally before they cost an API call;
// *satoken.Verifier is one. Its *satoken.Error says why it refused.
type Verifier interface {
	Verify(ctx context.Context, token, audience string) error
}

// Endpoint is one configured issuer and its current keys and documents.
type Endpoint struct {
	cfg     config.Endpoint
	cluster string
	url     *url.URL
	policy  policy.Policy
	docs    atomic.Pointer[documents]
}

type documents struct {
	keys      *keys.Set
	discovery []byte
	jwks      []byte
}

// Name is the endpoint's name.
func (e *Endpoint) Name() string { return e.cfg.Name }

// Ready reports whether the endpoint has keys.
func (e *Endpoint) Ready() bool { return e.docs.Load() != nil }

// SetKeys installs a new key set and renders the documents for it.
func (e *Endpoint) SetKeys(set *keys.Set) error {
	docs, err := discovery.Render(e.cfg.Issuer, claimsSupported(e.cfg.Claims), set)
	if err != nil {
		return err
	}
	e.docs.Store(&documents{keys: set, discovery: docs.Discovery, jwks: docs.JWKS})
	return nil
}

// Documents returns the rendered discovery document and JWKS, nil before
// the first key set.
func (e *Endpoint) Documents() (disc, jwks []byte) {
	if d := e.docs.Load(); d != nil {
		return d.discovery, d.jwks
	}
	return nil, nil
}

// Keys returns the current key set, nil before the first.
func (e *Endpoint) Keys() *keys.Set {
	if d := e.docs.Load(); d != nil {
		return d.keys
	}
	return nil
}

func claimsSupported(x config.ExtraClaims) []string {
	c := []string{"iss", "aud", "exp", "nbf", "iat", "jti", "sub", "cluster", "namespace", "saname"}
	if x.Pod {
		c = append(c, "pod")
	}
	if x.PodUID {
		c = append(c, "pod_uid")
	}
	if x.Node {
		c = append(c, "node")
	}
	c = append(c, slices.Sorted(maps.Keys(x.Static))...)
	for _, l := range x.FromPodLabels {
		c = append(c, config.LabelClaim(l))
	}
	return c
}

// extraClaims are the endpoint's static claims and the Pod's allowed labels.
func extraClaims(x config.ExtraClaims, labels map[string]string) map[string]string {
	if len(x.Static) == 0 && len(x.FromPodLabels) == 0 {
		return nil
	}
	out := maps.Clone(x.Static)
	if out == nil {
		out = map[string]string{}
	}
	for _, l := range x.FromPodLabels {
		if v, ok := labels[l]; ok {
			out[config.LabelClaim(l)] = v
		}
	}
	return out
}

// Server serves all endpoints.
type Server struct {
	endpoints []*Endpoint
	reviewer  Reviewer
	verifier  Verifier
	inflight  *limit.Gate
	pending   *limit.Pending
	perToken  *limit.PerKey
	log       *zap.Logger
	audit     *zap.Logger
	// screened logs refusals made before any identity was known (bad
	// requests, tokens the cluster did not sign, limits), sampled per
	// second so that a flood cannot flood the log; metrics count them all.
	screened *zap.Logger
	metrics  *metrics.Metrics
	maxAge   string
	now      func() time.Time
	ready    func() bool
	publish  func() error
}

// Options configure a Server.
type Options struct {
	Config   *config.Config
	Reviewer Reviewer
	// Verifier screens tokens before the Reviewer; nil skips the screen
	// (tests with fake tokens only: sts-issuer always sets it).
	Verifier Verifier
	// MaxInFlight bounds the exchanges waiting on the API server; beyond it
	// the answer is 503 with Retry-After. Default DefaultMaxInFlight.
	MaxInFlight int
	// MaxPending bounds the requests being answered at once (reading a
	// body, waiting for a slot or the API server, signing); beyond it the
	// answer is 503 with Retry-After before a byte of the body is read.
	// Default DefaultMaxPending.
	MaxPending int
	// MaxPendingPerAddress bounds those from one client IP; 0: no bound.
	MaxPendingPerAddress int
	// PerTokenPerSecond bounds how often one subject token may be presented;
	// beyond it the answer is 429 with Retry-After. Default DefaultPerTokenPerSecond.
	PerTokenPerSecond int
	Log               *zap.Logger
	Metrics           *metrics.Metrics
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// APIReady reports whether the API server has answered; nil means yes.
	APIReady func() bool
	// Publishing reports a publish target that has failed for too long; nil
	// means there is none to report.
	Publishing func() error
}

// Defaults of the work bounds.
const (
	DefaultMaxInFlight = 256
	// DefaultMaxPending bounds the requests answered at once, and with them
	// the bodies held (each at most exchange.MaxRequestBytes): 256 stalled
	// requests cost about 33 MiB with their connections (measured).
	DefaultMaxPending = 256
	// DefaultMaxPendingPerAddress: one client address (a Pod; a node for
	// host-network Pods) may hold an eighth of them.
	DefaultMaxPendingPerAddress = 32
	DefaultPerTokenPerSecond    = 5
	// perTokenKeys bounds the per-token table (one window's distinct tokens).
	perTokenKeys = 1 << 18
)

// CacheControl is the Cache-Control of the discovery document and JWKS,
// served and published alike.
func CacheControl(maxAge time.Duration) string {
	return "public, max-age=" + strconv.Itoa(int(maxAge.Seconds()))
}

// New builds the server and its endpoints; keys arrive through Endpoint.SetKeys.
func New(o Options) (*Server, error) {
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.PerTokenPerSecond <= 0 {
		o.PerTokenPerSecond = DefaultPerTokenPerSecond
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	s := &Server{
		reviewer: o.Reviewer,
		verifier: o.Verifier,
		inflight: limit.NewGate(o.MaxInFlight),
		pending:  limit.NewPending(o.MaxPending, o.MaxPendingPerAddress),
		log:      o.Log,
		audit:    o.Log.Named("audit"),
		screened: o.Log.Named("audit").WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
			return zapcore.NewSamplerWithOptions(c, time.Second, 100, 1000)
		})),
		metrics: o.Metrics,
		maxAge:  CacheControl(o.Config.JWKSMaxAge.Duration),
		now:     o.Now,
		ready:   o.APIReady,
		publish: o.Publishing,
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.perToken = limit.NewPerKey(o.PerTokenPerSecond, time.Second, perTokenKeys, s.now)
	s.metrics.InFlight(s.inflight.InUse, s.inflight.Peak)
	s.metrics.Pending(s.pending.InUse, o.MaxPending)
	s.metrics.Ready(func() bool { return s.notReady() == "" })
	if s.ready == nil {
		s.ready = func() bool { return true }
	}
	for _, ec := range o.Config.Endpoints {
		u, err := config.ParseIssuer(ec.Issuer)
		if err != nil {
			return nil, err
		}
		s.endpoints = append(s.endpoints, &Endpoint{cfg: ec, cluster: o.Config.Cluster, url: u, policy: policy.New(rules(ec.Allow), rules(ec.Deny))})
	}
	// Longest paths first, so /vault/prod wins over /vault.
	sort.SliceStable(s.endpoints, func(i, j int) bool { return len(s.endpoints[i].url.Path) > len(s.endpoints[j].url.Path) })
	return s, nil
}

// rules hands the configuration's rules to the policy, which knows nothing
// of the configuration file.
func rules(rs []config.Rule) []policy.Rule {
	out := make([]policy.Rule, len(rs))
	for i, r := range rs {
		out[i] = policy.Rule{Namespace: r.Namespace, ServiceAccount: r.ServiceAccount}
	}
	return out
}

// Endpoints returns the endpoints.
func (s *Server) Endpoints() []*Endpoint { return s.endpoints }

// Endpoint returns the endpoint called name, or nil.
func (s *Server) Endpoint(name string) *Endpoint {
	for _, e := range s.endpoints {
		if e.cfg.Name == name {
			return e
		}
	}
	return nil
}

// ReportKeyAges refreshes the key-age and published-keys metrics of every
// endpoint every interval until ctx is done (ages grow between key changes).
func (s *Server) ReportKeyAges(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, e := range s.endpoints {
				if set := e.Keys(); set != nil {
					s.metrics.Keys(e.Name(), set.Signing.Created, len(set.Keys))
				}
			}
		}
	}
}

// notReady says why /readyz fails, or "" when the issuer is ready.
func (s *Server) notReady() string {
	if !s.Ready() {
		return "keys not loaded or API server not reached yet"
	}
	if s.publish != nil {
		if err := s.publish(); err != nil {
			return err.Error()
		}
	}
	return ""
}

// Ready reports whether every endpoint has keys and the API server answered.
func (s *Server) Ready() bool {
	for _, e := range s.endpoints {
		if !e.Ready() {
			return false
		}
	}
	return s.ready()
}

// ServeHTTP routes /healthz, /readyz and each endpoint's paths.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz":
		_, _ = io.WriteString(w, "ok\n")
		return
	case "/readyz":
		if why := s.notReady(); why != "" {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
		return
	}
	e, rest := s.route(r)
	if e == nil {
		http.NotFound(w, r)
		return
	}
	// Admission before anything is read: a request over the cap costs its
	// headers only, never a body buffer.
	addr := stripPort(r.RemoteAddr)
	if ok, bound := s.pending.TryEnter(addr); !ok {
		s.metrics.Refused("api", bound)
		if rest == discovery.PathToken {
			// Counted as an exchange too, so that the exchange dashboards
			// and KubeSTSExchangesUnavailable see the overload.
			s.metrics.Exchange(e.cfg.Name, "overloaded", 0)
		}
		dropBody(w, r)
		what := "the issuer is at its limit of requests being answered"
		if bound == limit.PendingPerAddr {
			what = "this client address is at its limit of requests being answered"
		}
		writeError(w, &failure{Reason: "overloaded", RetryAfter: time.Second,
			OAuth: exchange.Errorf(exchange.TemporarilyUnavailable, "%s; retry after the Retry-After delay", what)})
		return
	}
	defer s.pending.Leave(addr)
	switch rest {
	case discovery.PathToken:
		s.serveToken(w, r, e)
	case discovery.PathDiscovery:
		s.serveDoc(w, r, e, "application/json", func(d *documents) []byte { return d.discovery })
	case discovery.PathJWKS:
		s.serveDoc(w, r, e, "application/jwk-set+json", func(d *documents) []byte { return d.jwks })
	default:
		http.NotFound(w, r)
	}
}

// route finds the endpoint for a request: by path prefix, and among
// endpoints with the same path by Host.
func (s *Server) route(r *http.Request) (*Endpoint, string) {
	var candidates []*Endpoint
	var rest string
	for _, e := range s.endpoints {
		p := e.url.Path
		if r.URL.Path == p || !strings.HasPrefix(r.URL.Path, p+"/") {
			continue
		}
		if len(candidates) > 0 && len(p) < len(candidates[0].url.Path) {
			break // a longer path already matched
		}
		candidates = append(candidates, e)
		rest = strings.TrimPrefix(r.URL.Path, p)
	}
	switch len(candidates) {
	case 0:
		return nil, ""
	case 1:
		return candidates[0], rest
	}
	host := strings.ToLower(r.Host)
	for _, e := range candidates {
		if strings.ToLower(e.url.Host) == host || strings.ToLower(e.url.Hostname()) == stripPort(host) {
			return e, rest
		}
	}
	return nil, ""
}

func stripPort(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

func (s *Server) serveDoc(w http.ResponseWriter, r *http.Request, e *Endpoint, contentType string, pick func(*documents) []byte) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	d := e.docs.Load()
	if d == nil {
		http.Error(w, "keys are not loaded yet", http.StatusServiceUnavailable)
		return
	}
	body := pick(d)
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", s.maxAge)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request, e *Endpoint) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusMethodNotAllowed)
		_ = json.NewEncoder(w).Encode(exchange.Errorf(exchange.InvalidRequest, "use POST with an RFC 8693 form"))
		return
	}
	start := s.now()
	// A sidecar sends its form (about 1.5 KiB) right after the headers: a
	// body that has not arrived within bodyTimeout is a stalled client.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(bodyTimeout))
	body := &trackedBody{ReadCloser: r.Body, done: r.Body == http.NoBody}
	r.Body = body
	tok, fail := s.exchange(r, e)
	if !body.done {
		dropBody(w, r)
	}
	result := "issued"
	if fail != nil {
		result = fail.Reason
		writeError(w, fail)
	} else {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Pragma", "no-cache")
		_ = json.NewEncoder(w).Encode(exchange.NewResponse(tok.JWT, int64(tok.Expiry.Sub(start).Round(time.Second).Seconds())))
	}
	s.metrics.Exchange(e.cfg.Name, result, s.now().Sub(start))
}

// failure is a refused or unanswered exchange: a stable reason for logs and
// metrics, the OAuth error for the client, the identity known so far (for
// the audit log), and how to answer (an HTTP status other than the error's,
// a Retry-After). Refusals of the review come from review.Failure.
type failure struct {
	Reason     string
	OAuth      *exchange.Error
	Identity   review.Identity
	Status     int
	RetryAfter time.Duration
}

func fromReview(f *review.Failure) *failure {
	return &failure{Reason: f.Reason, OAuth: f.OAuth, Identity: f.Identity}
}

// exchange runs the checks in order and mints; every outcome is audited once.
func (s *Server) exchange(r *http.Request, e *Endpoint) (mint.Token, *failure) {
	id, tok, fail := s.decide(r, e)
	fields := []zap.Field{
		zap.String("sts", e.cfg.Name),
		zap.String("namespace", id.Namespace),
		zap.String("serviceaccount", id.ServiceAccount),
		zap.String("pod", id.PodName),
	}
	if fail != nil {
		fields = append(fields, zap.String("result", resultOf(fail)), zap.String("reason", fail.Reason), zap.String("description", fail.OAuth.Description))
		if fail.Identity.Namespace == "" {
			s.screened.Info("exchange refused", fields...)
		} else {
			s.audit.Info("exchange refused", fields...)
		}
		return mint.Token{}, fail
	}
	fields = append(fields, zap.String("result", "issued"), zap.String("jti", tok.ID), zap.Int64("exp", tok.Expiry.Unix()), zap.String("kid", tok.KeyID))
	s.audit.Info("token issued", fields...)
	return tok, nil
}

func resultOf(f *failure) string {
	if f.OAuth.Retryable() {
		return "unavailable"
	}
	return "refused"
}

func (s *Server) decide(r *http.Request, e *Endpoint) (review.Identity, mint.Token, *failure) {
	var none review.Identity
	bad := func(reason, format string, args ...any) *failure {
		return &failure{Reason: reason, OAuth: exchange.Errorf(exchange.InvalidRequest, format, args...)}
	}
	if r.URL.RawQuery != "" {
		// Tokens in a URL end up in access logs; RFC 6749 §3.2 wants the body.
		return none, mint.Token{}, bad("query_parameters", "parameters in the URL query are not accepted; send them in the %s body", exchange.ContentTypeForm)
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != exchange.ContentTypeForm {
		return none, mint.Token{}, bad("bad_content_type", "send the request as %s", exchange.ContentTypeForm)
	}
	if r.ContentLength > exchange.MaxRequestBytes {
		return none, mint.Token{}, bad("bad_body", "the request body is larger than %d bytes (a subject token is at most %d)", exchange.MaxRequestBytes, exchange.MaxSubjectTokenBytes)
	}
	body, err := readBody(r.Body, r.ContentLength)
	if err != nil {
		return none, mint.Token{}, bad("bad_body", "could not read the request body within %v", bodyTimeout)
	}
	req, err := exchange.ParseRequest(body)
	if err != nil {
		var oe *exchange.Error
		if !errors.As(err, &oe) {
			oe = exchange.Errorf(exchange.InvalidRequest, "bad request")
		}
		return none, mint.Token{}, &failure{Reason: "bad_request", OAuth: oe}
	}
	if f := e.checkTarget(req); f != nil {
		return none, mint.Token{}, f
	}
	if err := Precheck(req.SubjectToken); err != nil {
		return none, mint.Token{}, bad("not_a_jwt", "subject_token is not a JWT: %v", err)
	}
	d := e.docs.Load()
	if d == nil {
		return none, mint.Token{}, &failure{Reason: "keys_not_loaded", OAuth: exchange.Errorf(exchange.TemporarilyUnavailable, "the issuer has no signing key yet; retry")}
	}
	if f := s.admit(r.Context(), req.SubjectToken, e.cfg.SubjectAudience); f != nil {
		return none, mint.Token{}, f
	}
	defer s.inflight.Leave()
	id, err := s.reviewer.Review(r.Context(), req.SubjectToken, e.cfg.SubjectAudience)
	if err != nil {
		var rf *review.Failure
		if !errors.As(err, &rf) {
			return review.Identity{}, mint.Token{}, &failure{Reason: "review_failed", OAuth: exchange.Errorf(exchange.TemporarilyUnavailable, "the review failed; retry")}
		}
		return rf.Identity, mint.Token{}, fromReview(rf)
	}
	if ok, why := e.policy.Decide(id.Namespace, id.ServiceAccount); !ok {
		return id, mint.Token{}, &failure{Reason: "denied", Identity: id,
			OAuth: exchange.Errorf(exchange.InvalidRequest, "ServiceAccount %s/%s may not use endpoint %s: %s", id.Namespace, id.ServiceAccount, e.cfg.Name, why)}
	}
	mr := mint.Request{
		Issuer: e.cfg.Issuer, Audience: e.cfg.Audience, Cluster: e.cluster,
		Namespace: id.Namespace, ServiceAccount: id.ServiceAccount,
		TTL: e.cfg.TTL.Duration, Now: s.now(),
	}
	if e.cfg.Claims.Pod {
		mr.Pod = id.PodName
	}
	if e.cfg.Claims.PodUID {
		mr.PodUID = id.PodUID
	}
	if e.cfg.Claims.Node {
		if why := nodeUnverified(id); why != "" {
			return id, mint.Token{}, &failure{Reason: "node_unverified", Identity: id,
				OAuth: exchange.Errorf(exchange.InvalidRequest, "endpoint %s puts the Pod's node in its tokens, but %s", e.cfg.Name, why)}
		}
		mr.Node = id.Node
	}
	mr.Extra = extraClaims(e.cfg.Claims, id.Labels)
	tok, err := mint.Mint(d.keys.Signing, mr)
	if err != nil {
		s.log.Error("signing failed", zap.String("sts", e.cfg.Name), zap.Error(err))
		return id, mint.Token{}, &failure{Reason: "signing_failed", Identity: id, OAuth: exchange.Errorf(exchange.ServerError, "signing failed")}
	}
	return id, tok, nil
}

// nodeUnverified says why the node claim cannot be issued for id, or "".
// spec.nodeName is the Pod creator's to choose, even a Node that does not
// exist; the subject token's node binding carries the Node's UID only when
// the API server found that Node, so the claim needs both, and agreeing.
func nodeUnverified(id review.Identity) string {
	switch {
	case id.TokenNode == "":
		return "the subject token has no node binding (made before the Pod was scheduled, or by an API server older than 1.30)"
	case id.TokenNodeUID == "":
		return fmt.Sprintf("the subject token's node %q has no UID: no such Node existed when it was made", id.TokenNode)
	case id.TokenNode != id.Node:
		return fmt.Sprintf("the subject token is bound to node %q and the Pod runs on %q", id.TokenNode, id.Node)
	}
	return ""
}

// checkTarget answers invalid_target (RFC 8693 §2.2.2) for an audience or
// resource this endpoint cannot issue for: it issues for its audience only.
func (e *Endpoint) checkTarget(req exchange.Request) *failure {
	for _, t := range append(slices.Clone(req.Audiences), req.Resources...) {
		if t != e.cfg.Audience {
			return &failure{Reason: "invalid_target", OAuth: exchange.Errorf(exchange.InvalidTarget,
				"endpoint %s issues tokens for audience %q only; omit audience and resource, or ask for that one", e.cfg.Name, e.cfg.Audience)}
		}
	}
	return nil
}

// admit spends nothing of the API server's on a token the cluster did not
// sign, on a token presented too often, or beyond the in-flight cap. When it
// returns nil the caller holds an in-flight slot and must Leave it.
func (s *Server) admit(ctx context.Context, token, audience string) *failure {
	if s.verifier != nil {
		if err := s.verifier.Verify(ctx, token, audience); err != nil {
			var ve *satoken.Error
			if !errors.As(err, &ve) {
				ve = &satoken.Error{Reason: "bad_signature", Description: "subject_token could not be verified"}
			}
			if ve.Retryable {
				return &failure{Reason: ve.Reason, RetryAfter: ve.RetryAfter, OAuth: exchange.Errorf(exchange.TemporarilyUnavailable, "%s", ve.Description)}
			}
			return &failure{Reason: ve.Reason, OAuth: exchange.Errorf(exchange.InvalidRequest, "%s", ve.Description)}
		}
	}
	if ok, wait := s.perToken.Allow(token); !ok {
		return &failure{Reason: "rate_limited", Status: http.StatusTooManyRequests, RetryAfter: wait,
			OAuth: exchange.Errorf(exchange.TemporarilyUnavailable, "this subject token was presented more than %d times in a second; retry after the Retry-After delay", s.perToken.Limit())}
	}
	if !s.inflight.TryEnter() {
		return &failure{Reason: "overloaded", RetryAfter: time.Second,
			OAuth: exchange.Errorf(exchange.TemporarilyUnavailable, "the issuer is at its limit of exchanges in flight; retry after the Retry-After delay")}
	}
	return nil
}

// bodyTimeout bounds reading a request body once its headers are in.
const bodyTimeout = 5 * time.Second

// readBody reads at most exchange.MaxRequestBytes+1 bytes (one more than
// allowed, so that ParseRequest can say the body is too large), sized by
// the declared length when there is one.
func readBody(r io.Reader, declared int64) ([]byte, error) {
	size := int64(exchange.MaxRequestBytes + 1)
	if declared >= 0 && declared < size {
		size = declared + 1
	}
	buf := make([]byte, size)
	n, err := io.ReadFull(r, buf)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		err = nil
	}
	return buf[:n], err
}

// trackedBody notes whether a request body was read to its end.
type trackedBody struct {
	io.ReadCloser
	done bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		b.done = true
	}
	return n, err
}

// dropBody answers without the rest of the body: on HTTP/1.1 the
// connection is closed after the answer (the server would otherwise wait
// to drain a stalled body for reuse); an HTTP/2 stream is reset when the
// handler returns.
func dropBody(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	}
}

func writeError(w http.ResponseWriter, f *failure) {
	e := f.OAuth
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	status := e.HTTPStatus()
	if f.Status != 0 {
		status = f.Status
	}
	if e.Code == exchange.TemporarilyUnavailable || status == http.StatusTooManyRequests {
		// Whole seconds, rounded up, at least one (RFC 9110 §10.2.3).
		secs := int((f.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(e)
}
