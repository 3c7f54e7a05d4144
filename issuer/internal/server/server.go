// Package server is sts-issuer's HTTP side: routing requests to endpoints by
// host and path (this file), the discovery and JWKS documents, rendered
// once per key change and served as bytes (this file), and the token
// exchange (exchange.go).
package server

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/kube-sts/kube-sts/issuer/internal/config"
	"github.com/kube-sts/kube-sts/issuer/internal/discovery"
	"github.com/kube-sts/kube-sts/issuer/internal/events"
	"github.com/kube-sts/kube-sts/issuer/internal/keys"
	"github.com/kube-sts/kube-sts/issuer/internal/limit"
	"github.com/kube-sts/kube-sts/issuer/internal/metrics"
	"github.com/kube-sts/kube-sts/issuer/internal/policy"
	"github.com/kube-sts/kube-sts/issuer/internal/review"
	"github.com/kube-sts/kube-sts/issuer/internal/satoken"
	"github.com/kube-sts/kube-sts/shared/exchange"
)

// Reviewer confirms that a subject token's Pod is alive; *review.Reviewer
// (TokenReview and Pod GET) and *review.Watched (watched caches) are.
// bound is what the Verifier read from the token, nil without a Verifier.
type Reviewer interface {
	Review(ctx context.Context, token, audience string, bound *satoken.Binding) (review.Identity, error)
}

// Verifier checks subject tokens locally before they cost an API call;
// *satoken.Verifier is one. Its *satoken.Error says why it refused.
type Verifier interface {
	VerifyHeader(ctx context.Context, token string, h satoken.Header, audience string) (*satoken.Binding, error)
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
	docs, err := discovery.Render(e.cfg.Issuer, e.cfg.Claims.Supported(), set)
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

// Events tells Pods why their exchanges were refused; *events.Recorder is one.
type Events interface {
	Refused(p events.Pod, endpoint, code, description string)
	Issued(p events.Pod, endpoint string)
}

// Server serves all endpoints.
type Server struct {
	endpoints []*Endpoint
	reviewer  Reviewer
	verifier  Verifier
	events    Events
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
	status   func() string
}

// Options configure a Server.
type Options struct {
	Config   *config.Config
	Reviewer Reviewer
	// Verifier screens tokens before the Reviewer; nil skips the screen
	// (tests with fake tokens only: sts-issuer always sets it).
	Verifier Verifier
	// Events, when set, tells a Pod why its exchange was refused, and when
	// it got a token again (Kubernetes Events).
	Events Events
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
	// Status, when set, is a line /readyz adds to its answer (the review
	// mode's caches); it does not decide readiness.
	Status func() string
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
		events:   o.Events,
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
		status:  o.Status,
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.perToken = limit.NewPerKey(o.PerTokenPerSecond, time.Second, perTokenKeys, s.now)
	if err := errors.Join(s.metrics.InFlight(s.inflight.InUse, s.inflight.Peak), s.metrics.Pending(s.pending.InUse, o.MaxPending),
		s.metrics.Ready(func() bool { return s.notReady() == "" })); err != nil {
		return nil, err
	}
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
		detail := ""
		if s.status != nil {
			if d := s.status(); d != "" {
				detail = d + "\n"
			}
		}
		if why := s.notReady(); why != "" {
			http.Error(w, "not ready: "+why+"\n"+detail, http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n"+detail)
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
