package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"

	"github.com/kube-sts/kube-sts/issuer/internal/config"
	"github.com/kube-sts/kube-sts/issuer/internal/keys"
	"github.com/kube-sts/kube-sts/issuer/internal/keysource"
	"github.com/kube-sts/kube-sts/issuer/internal/limit"
	"github.com/kube-sts/kube-sts/issuer/internal/metrics"
	"github.com/kube-sts/kube-sts/issuer/internal/publish"
	"github.com/kube-sts/kube-sts/issuer/internal/readiness"
	"github.com/kube-sts/kube-sts/issuer/internal/review"
	"github.com/kube-sts/kube-sts/issuer/internal/server"
	"github.com/kube-sts/kube-sts/logging"
	"github.com/kube-sts/kube-sts/shared/buildinfo"
	"github.com/kube-sts/kube-sts/shared/exchange"
)

// clients reach the API server with rate limiters of their own: exchanges
// can use all of theirs without delaying a key rotation, the readiness
// check, or a cache's relist.
type clients struct {
	exchange kubernetes.Interface
	control  kubernetes.Interface
	// watch lists and watches Pods and ServiceAccounts (--review=watch).
	watch kubernetes.Interface
	// events writes the Events of refused Pods.
	events kubernetes.Interface
}

func newClients(o *Options) (*clients, error) {
	base, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	base.UserAgent = "sts-issuer/" + buildinfo.Version
	build := func(qps float32, burst int) (kubernetes.Interface, error) {
		cfg := rest.CopyConfig(base)
		cfg.QPS, cfg.Burst = qps, burst
		return kubernetes.NewForConfig(cfg)
	}
	c := &clients{}
	if c.exchange, err = build(float32(o.KubeQPS), o.KubeBurst); err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	if c.control, err = build(controlQPS, controlBurst); err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	if c.watch, err = build(watchQPS, watchBurst); err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	if c.events, err = build(eventsQPS, eventsBurst); err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, nil
}

// getter reads a path of the API server (service-account issuer discovery).
func (c *clients) getter(timeout time.Duration) func(context.Context, string) ([]byte, error) {
	return func(ctx context.Context, path string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return c.control.Discovery().RESTClient().Get().AbsPath(path).DoRaw(ctx)
	}
}

func (c *clients) ping(context.Context) error {
	_, err := c.control.Discovery().ServerVersion()
	return err
}

// startKeys loads each endpoint's keys into the server and keeps them
// current: key files must load at once (a bad key stops the issuer), managed
// keys retry until the API server answers.
func startKeys(ctx context.Context, g *errgroup.Group, cfg *config.Config, srv *server.Server, pubs publishers, control kubernetes.Interface, log *zap.Logger, m *metrics.Metrics) error {
	for _, ec := range cfg.Endpoints {
		ep := srv.Endpoint(ec.Name)
		onChange := func(set *keys.Set) {
			if err := ep.SetKeys(set); err != nil {
				log.Error("rendering key documents failed", logging.Endpoint(ec.Name), zap.Error(err))
				return
			}
			disc, jwks := ep.Documents()
			for _, p := range pubs[ec.Name] {
				p.Update(publish.Documents{Discovery: disc, JWKS: jwks, Generation: publish.GenerationOf(set), SigningKeyID: set.Signing.ID})
			}
			m.Keys(ec.Name, set.Signing.Created, len(set.Keys))
			log.Info("keys loaded", logging.Endpoint(ec.Name), zap.String("kid", set.Signing.ID), zap.Int("published", len(set.Keys)))
		}
		if len(ec.Keys.Files) > 0 {
			src := keysource.NewFileSource(ec.Keys.Files, ec.Keys.SigningFile, ec.Algorithm, ec.Keys.ReloadInterval.Duration, keys.FilePolicy{
				// Every replica sees a changed file within one reload interval.
				PublishAhead: cfg.JWKSMaxAge.Duration + ec.Keys.ReloadInterval.Duration,
				RetireAfter:  ec.TTL.Duration + ec.Keys.ReloadInterval.Duration + config.ClockSkew,
			}, log, onChange)
			if err := src.Load(); err != nil {
				return fmt.Errorf("load signing keys of endpoint %s: %w", ec.Name, err)
			}
			g.Go(func() error { return src.Run(ctx) })
			continue
		}
		mc := ec.Keys.Managed
		m.RotateEvery(ec.Name, mc.RotateEvery.Duration)
		src := keysource.NewManagedSource(keysource.ManagedOptions{
			Client: control, Namespace: mc.Namespace, Secret: mc.Secret, Endpoint: ec.Name,
			Schedule: keys.Schedule{Algorithm: ec.Algorithm, RotateEvery: mc.RotateEvery.Duration,
				PublishAhead: mc.PublishAhead.Duration, RetireAfter: ec.TTL.Duration + mc.Leeway.Duration},
			Resync: mc.Resync.Duration, Log: log, OnChange: onChange,
			OnWrite: func(kind string) { m.KeyChange(ec.Name, kind) },
		})
		g.Go(func() error { return src.Start(ctx, 2*time.Second) })
	}
	return nil
}

// publishers are each endpoint's, by endpoint name.
type publishers map[string][]*publish.Publisher

// newPublishers builds a publisher per endpoint and target; the bucket
// targets' clients and credentials are set up here, so a bad target stops
// the issuer at start.
func newPublishers(ctx context.Context, cfg *config.Config, log *zap.Logger, m *metrics.Metrics) (publishers, error) {
	pubs := publishers{}
	for _, ec := range cfg.Endpoints {
		u, err := config.ParseIssuer(ec.Issuer)
		if err != nil {
			return nil, err
		}
		for i, t := range ec.Publish {
			var target publish.Target
			switch {
			case t.Directory != nil:
				target = publish.Dir{Root: t.Directory.Path}
			case t.S3 != nil:
				target, err = publish.NewBucket(ctx, *t.S3)
			case t.GCS != nil:
				target, err = publish.NewGCS(ctx, *t.GCS)
			case t.AzureBlob != nil:
				target, err = publish.NewAzureBlob(*t.AzureBlob)
			}
			if err != nil {
				return nil, fmt.Errorf("endpoint %s publish[%d]: %w", ec.Name, i, err)
			}
			pubs[ec.Name] = append(pubs[ec.Name], publish.New(publish.Options{
				Endpoint: ec.Name, Base: strings.TrimPrefix(u.Path, "/"), Target: target,
				CacheControl: server.CacheControl(cfg.JWKSMaxAge.Duration),
				Interval:     cfg.Publishing.Interval.Duration, UnreadyAfter: cfg.Publishing.UnreadyAfter.Duration,
				Log: log, Metrics: m,
			}))
		}
	}
	return pubs, nil
}

func (ps publishers) run(ctx context.Context, g *errgroup.Group) {
	for _, list := range ps {
		for _, p := range list {
			g.Go(func() error { return p.Run(ctx) })
		}
	}
}

// check is the readiness of publishing: every target that has failed too long.
func (ps publishers) check() error {
	var errs []error
	for _, list := range ps {
		for _, p := range list {
			errs = append(errs, p.Check())
		}
	}
	return errors.Join(errs...)
}

// Bounds of the two HTTP servers, sized on purpose (the exchange server's
// connection and request bounds are Options).
const (
	// A request's headers are a few hundred bytes; nothing legitimate takes
	// 5 s to send them or needs more than 16 KiB (the default is 1 MiB, per
	// connection).
	headerTimeout  = 5 * time.Second
	maxHeaderBytes = 16 << 10
	// readTimeout backs up the handler's own body deadline (5 s).
	readTimeout = 15 * time.Second
	// An exchange takes at most two API calls of --api-timeout (5 s).
	writeTimeout = 30 * time.Second
	// Sidecars close their connection after each exchange; relying parties
	// fetching discovery may keep one for a while.
	idleTimeout = 30 * time.Second
	// HTTP/2: a sidecar sends one request per connection, a relying party
	// a few; 8 streams per connection is room enough, and each stream's
	// receive window holds one form at most, the connection's the
	// protocol's minimum (64 KiB), so a connection can buffer no more.
	h2Streams = 8
	h2ConnWin = 64 << 10
	// /metrics: Prometheus keeps one connection per scrape target; the
	// bound only stops idle connections from piling up.
	metricsMaxConnections = 64
	metricsIdleTimeout    = 2 * time.Minute
)

// apiServer is the exchange, discovery and probe server with its bounds.
func apiServer(h http.Handler, conns *limit.Conns) *http.Server {
	return &http.Server{
		Handler: h, ConnState: conns.ConnState, MaxHeaderBytes: maxHeaderBytes,
		ReadHeaderTimeout: headerTimeout, ReadTimeout: readTimeout, WriteTimeout: writeTimeout, IdleTimeout: idleTimeout,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          h2Streams,
			MaxReceiveBufferPerStream:     exchange.MaxRequestBytes,
			MaxReceiveBufferPerConnection: h2ConnWin,
			WriteByteTimeout:              writeTimeout,
		},
	}
}

// metricsServer serves /metrics with its bounds.
func metricsServer(h http.Handler, conns *limit.Conns) *http.Server {
	return &http.Server{
		Handler: h, ConnState: conns.ConnState, MaxHeaderBytes: maxHeaderBytes,
		ReadHeaderTimeout: headerTimeout, ReadTimeout: readTimeout, WriteTimeout: writeTimeout, IdleTimeout: metricsIdleTimeout,
	}
}

// servingCertificate loads the serving certificate and keeps it current as
// the webhook does: controller-runtime's certificate watcher (fsnotify on
// both files, re-read every 10 s besides, a failed read keeps the current
// pair), so that cert-manager's renewals are served without a restart.
func servingCertificate(ctx context.Context, g *errgroup.Group, certFile, keyFile string) (func(*tls.ClientHelloInfo) (*tls.Certificate, error), error) {
	cw, err := certwatcher.New(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load serving certificate: %w", err)
	}
	g.Go(func() error { return cw.Start(ctx) })
	return cw.GetCertificate, nil
}

// startServers serves the exchange, discovery and probes (TLS unless
// --insecure-http) and /metrics; it returns the exchange listener's address.
func startServers(ctx context.Context, g *errgroup.Group, o *Options, srv *server.Server, m *metrics.Metrics, log *zap.Logger) (string, error) {
	conns := limit.NewConns(limit.ConnsOptions{Max: o.MaxConnections, PerAddr: o.MaxConnectionsPerAddress,
		Refused: func(bound string) { m.Refused("api", bound) }})
	if err := m.Connections("api", conns.Open, o.MaxConnections); err != nil {
		return "", err
	}
	api := apiServer(srv, conns)
	if !o.InsecureHTTP {
		getCert, err := servingCertificate(ctx, g, o.TLSCertFile, o.TLSKeyFile)
		if err != nil {
			return "", err
		}
		api.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: getCert}
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return "", fmt.Errorf("listen %s: %w", o.Listen, err)
	}
	serve(ctx, g, api, conns.Listener(ln), !o.InsecureHTTP)
	if o.MetricsListen != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
		mln, err := net.Listen("tcp", o.MetricsListen)
		if err != nil {
			return "", fmt.Errorf("listen %s: %w", o.MetricsListen, err)
		}
		mconns := limit.NewConns(limit.ConnsOptions{Max: metricsMaxConnections, Refused: func(bound string) { m.Refused("metrics", bound) }})
		if err := m.Connections("metrics", mconns.Open, metricsMaxConnections); err != nil {
			return "", err
		}
		serve(ctx, g, metricsServer(mux, mconns), mconns.Listener(mln), false)
	}
	return ln.Addr().String(), nil
}

// serve runs s on ln until ctx is done, then shuts it down gracefully.
func serve(ctx context.Context, g *errgroup.Group, s *http.Server, ln net.Listener, useTLS bool) {
	g.Go(func() error {
		var err error
		if useTLS {
			err = s.ServeTLS(ln, "", "")
		} else {
			err = s.Serve(ln)
		}
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return s.Shutdown(sctx)
	})
}

// reviewer is the review mode's part: the server's Reviewer and, in mode
// watch, the caches to run and their /readyz line.
type reviewer struct {
	server.Reviewer
	watched *review.Watched
}

func newReviewer(o *Options, cfg *config.Config, c *clients, m *metrics.Metrics) (reviewer, error) {
	if o.Review != review.ModeWatch {
		return reviewer{Reviewer: review.New(c.exchange, o.APITimeout, m)}, nil
	}
	labels := false
	for _, e := range cfg.Endpoints {
		labels = labels || len(e.Claims.FromPodLabels) > 0
	}
	w := review.NewWatched(review.WatchOptions{Client: c.watch, Lookups: c.exchange, Timeout: o.APITimeout,
		MaxStale: o.WatchMaxStale, Labels: labels, Metrics: m})
	if err := m.Watch(w.Fresh, w.Objects); err != nil {
		return reviewer{}, err
	}
	return reviewer{Reviewer: w, watched: w}, nil
}

func (r reviewer) run(ctx context.Context, g *errgroup.Group) {
	if r.watched != nil {
		g.Go(func() error { r.watched.Run(ctx); return nil })
	}
}

// syncWait bounds how long a replica in mode watch stays unready while its
// caches sync: long enough for 100,000 Pods, short enough that a replica
// whose lists fail (RBAC) still serves, through TokenReview and Pod GET.
const syncWait = time.Minute

// steps is what readiness waits for besides the API server and the keys:
// in mode watch the caches' first sync (at most syncWait), so that a
// Service sends a restarted replica no traffic that its empty caches would
// turn into TokenReviews (the herd after an outage meets synced caches).
func (r reviewer) steps(log *zap.Logger) []readiness.Step {
	if r.watched == nil {
		return nil
	}
	return []readiness.Step{{Name: "syncing the Pod and ServiceAccount caches (review mode watch)", Retry: time.Second,
		Do: func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, syncWait)
			defer cancel()
			if !r.watched.WaitSynced(ctx) {
				log.Warn("the Pod and ServiceAccount caches did not sync; ready anyway, exchanges use TokenReview and Pod GET until they do",
					zap.Duration("waited", syncWait), zap.String("hint", "the issuer needs list and watch on pods and serviceaccounts in review mode watch"))
			}
			return nil
		}}}
}

// status is nil in mode tokenreview: /readyz has nothing to add.
func (r reviewer) status() string {
	if r.watched == nil {
		return ""
	}
	return r.watched.Status()
}
