// Command sts-issuer is kube-sts's Security Token Service: it exchanges a
// Pod's projected ServiceAccount token for a short-lived JWT once the API
// server has confirmed the token and the Pod is alive, and serves OIDC
// discovery and JWKS so relying parties (Vault) can verify what it signs.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube-sts/kube-sts/issuer/internal/certs"
	"github.com/kube-sts/kube-sts/issuer/internal/config"
	"github.com/kube-sts/kube-sts/issuer/internal/keys"
	"github.com/kube-sts/kube-sts/issuer/internal/keysource"
	"github.com/kube-sts/kube-sts/issuer/internal/metrics"
	"github.com/kube-sts/kube-sts/issuer/internal/review"
	"github.com/kube-sts/kube-sts/issuer/internal/satoken"
	"github.com/kube-sts/kube-sts/issuer/internal/server"
	"github.com/kube-sts/kube-sts/shared/buildinfo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "sts-issuer: %v\n", err)
		os.Exit(1)
	}
}

// Client-side limits towards the API server. Exchanges: sized for 100,000
// labeled Pods at the default TTL and refresh fraction (~150 exchanges/s, two
// calls each) with room for bursts; the API server's priority and fairness
// protects it beyond that. Control (keys, readiness): a few calls a minute.
const (
	DefaultKubeQPS   = 1000
	DefaultKubeBurst = 2000
	controlQPS       = 5
	controlBurst     = 10
)

// options are the command line; the configuration file holds the rest.
type options struct {
	// ConfigFile is the YAML configuration (cluster, endpoints).
	ConfigFile string
	// Namespace is the issuer's own: the default namespace of managed key Secrets.
	Namespace string
	// Listen is the address of the exchange, discovery and probe server.
	Listen string
	// MetricsListen is the address of /metrics; empty disables it.
	MetricsListen string
	// TLSCertFile and TLSKeyFile are the serving certificate, reloaded on change.
	TLSCertFile string
	TLSKeyFile  string
	// InsecureHTTP serves plain HTTP, for use behind a TLS-terminating ingress only.
	InsecureHTTP bool
	// Kubeconfig reaches the API server; empty means in-cluster.
	Kubeconfig string
	// APITimeout bounds each call to the API server.
	APITimeout time.Duration
	// KubeQPS and KubeBurst are the client-side rate limits of exchanges
	// towards the API server; key management and readiness use a client of
	// their own, so exchanges never starve them.
	KubeQPS   float64
	KubeBurst int
	// MaxInFlight bounds the exchanges waiting on the API server at once.
	MaxInFlight int
	// PerToken bounds how often one subject token may be presented per second.
	PerToken int
	// LogLevel is debug, info, warn or error.
	LogLevel    string
	Version     bool
	CheckConfig bool
}

func parseOptions(args []string, out io.Writer) (options, error) {
	o := options{}
	flags := flag.NewFlagSet("sts-issuer", flag.ContinueOnError)
	flags.SetOutput(out)
	flags.StringVar(&o.ConfigFile, "config", "/etc/kube-sts/issuer.yaml", "configuration file (cluster, endpoints)")
	flags.StringVar(&o.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "the issuer's own namespace, where managed key Secrets live unless the configuration names one [POD_NAMESPACE; else kube-sts]")
	flags.StringVar(&o.Listen, "listen", ":8443", "address of the exchange, discovery, /healthz and /readyz server")
	flags.StringVar(&o.MetricsListen, "metrics-listen", ":9090", "address of /metrics; empty to disable")
	flags.StringVar(&o.TLSCertFile, "tls-cert-file", "/etc/kube-sts/tls/tls.crt", "serving certificate (PEM), reloaded when it changes")
	flags.StringVar(&o.TLSKeyFile, "tls-key-file", "/etc/kube-sts/tls/tls.key", "serving private key (PEM)")
	flags.BoolVar(&o.InsecureHTTP, "insecure-http", false, "serve plain HTTP; only behind an ingress that terminates TLS")
	flags.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig to reach the API server; empty for in-cluster")
	flags.DurationVar(&o.APITimeout, "api-timeout", 5*time.Second, "timeout of each TokenReview and Pod lookup")
	flags.Float64Var(&o.KubeQPS, "kube-api-qps", DefaultKubeQPS, "client-side QPS limit of exchanges towards the API server (each exchange is a TokenReview and a Pod GET)")
	flags.IntVar(&o.KubeBurst, "kube-api-burst", DefaultKubeBurst, "client-side burst of exchanges towards the API server")
	flags.IntVar(&o.MaxInFlight, "max-inflight-exchanges", server.DefaultMaxInFlight, "exchanges waiting on the API server at once; beyond it: 503 with Retry-After")
	flags.IntVar(&o.PerToken, "max-exchanges-per-token", server.DefaultPerTokenPerSecond, "presentations of one subject token per second; beyond it: 429 with Retry-After")
	flags.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	flags.BoolVar(&o.Version, "version", false, "print the version and exit")
	flags.BoolVar(&o.CheckConfig, "check-config", false, "load and validate --config, print what is wrong, and exit")
	if err := flags.Parse(args); err != nil {
		return o, err
	}
	if flags.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", flags.Arg(0))
	}
	var errs []error
	if o.APITimeout <= 0 {
		errs = append(errs, errors.New("--api-timeout must be positive"))
	}
	if o.KubeQPS <= 0 || o.KubeBurst <= 0 {
		errs = append(errs, errors.New("--kube-api-qps and --kube-api-burst must be positive"))
	}
	if o.MaxInFlight <= 0 || o.PerToken <= 0 {
		errs = append(errs, errors.New("--max-inflight-exchanges and --max-exchanges-per-token must be positive"))
	}
	if !o.InsecureHTTP && (o.TLSCertFile == "" || o.TLSKeyFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file are required unless --insecure-http"))
	}
	if _, err := zapcore.ParseLevel(o.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("--log-level: %w", err))
	}
	return o, errors.Join(errs...)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	if o.Version {
		fmt.Fprintln(stdout, "sts-issuer", buildinfo.Version)
		return nil
	}
	cfg, err := config.Load(o.ConfigFile, o.Namespace)
	if err != nil {
		return fmt.Errorf("load config %s: %w", o.ConfigFile, err)
	}
	if o.CheckConfig {
		fmt.Fprintf(stdout, "%s: %s is valid\n", "sts-issuer", o.ConfigFile)
		return nil
	}
	log := newLogger(o.LogLevel, stderr)
	defer func() { _ = log.Sync() }()

	restCfg, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubernetes client config: %w", err)
	}
	restCfg.UserAgent = "sts-issuer/" + buildinfo.Version
	// Two clients with their own rate limiters: exchanges can use all of
	// theirs without delaying a key rotation or the readiness check.
	exchangeCfg := rest.CopyConfig(restCfg)
	exchangeCfg.QPS, exchangeCfg.Burst = float32(o.KubeQPS), o.KubeBurst
	client, err := kubernetes.NewForConfig(exchangeCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	controlCfg := rest.CopyConfig(restCfg)
	controlCfg.QPS, controlCfg.Burst = controlQPS, controlBurst
	control, err := kubernetes.NewForConfig(controlCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	verifier := satoken.New(satoken.Options{Get: func(ctx context.Context, path string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(ctx, o.APITimeout)
		defer cancel()
		return control.Discovery().RESTClient().Get().AbsPath(path).DoRaw(ctx)
	}})

	m := metrics.New()
	var apiReady atomic.Bool
	srv, err := server.New(server.Options{
		Config:            cfg,
		Reviewer:          review.New(client, o.APITimeout, m),
		Verifier:          verifier,
		MaxInFlight:       o.MaxInFlight,
		PerTokenPerSecond: o.PerToken,
		Log:               log,
		Metrics:           m,
		APIReady:          func() bool { return apiReady.Load() && verifier.Ready() },
	})
	if err != nil {
		return fmt.Errorf("build server: %w", err)
	}

	g, ctx := errgroup.WithContext(ctx)
	for _, ec := range cfg.Endpoints {
		ep := srv.Endpoint(ec.Name)
		onChange := func(set *keys.Set) {
			if err := ep.SetKeys(set); err != nil {
				log.Error("rendering key documents failed", zap.String("sts", ec.Name), zap.Error(err))
				return
			}
			m.Keys(ec.Name, set.Signing.Created, len(set.Keys))
			log.Info("keys loaded", zap.String("sts", ec.Name), zap.String("kid", set.Signing.ID), zap.Int("published", len(set.Keys)))
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
		src := keysource.NewManagedSource(keysource.ManagedOptions{
			Client: control, Namespace: mc.Namespace, Secret: mc.Secret, Endpoint: ec.Name,
			Schedule: keys.Schedule{
				Algorithm:    ec.Algorithm,
				RotateEvery:  mc.RotateEvery.Duration,
				PublishAhead: mc.PublishAhead.Duration,
				RetireAfter:  ec.TTL.Duration + mc.Leeway.Duration,
			},
			Resync:   mc.Resync.Duration,
			Log:      log,
			OnChange: onChange,
			OnWrite:  func(kind string) { m.KeyChange(ec.Name, kind) },
		})
		g.Go(func() error {
			// The first sync may wait for the API server; until it succeeds the endpoint is not ready.
			for ctx.Err() == nil {
				if err := src.Sync(ctx); err != nil {
					log.Error("loading managed keys failed; retrying", zap.String("sts", ec.Name), zap.Error(err))
					sleep(ctx, 2*time.Second)
					continue
				}
				break
			}
			return src.Run(ctx)
		})
	}
	// Ready once the API server has answered, the cluster's service-account
	// keys are loaded (and every endpoint has keys).
	g.Go(func() error {
		for ctx.Err() == nil {
			if !apiReady.Load() {
				if _, err := control.Discovery().ServerVersion(); err != nil {
					log.Warn("API server not reachable yet", zap.Error(err))
					sleep(ctx, 2*time.Second)
					continue
				}
				apiReady.Store(true)
				log.Info("API server reachable")
			}
			if err := verifier.Refresh(ctx); err != nil && !verifier.Ready() {
				log.Warn("loading the cluster's service-account keys failed; the issuer needs get on the non-resource URLs "+
					satoken.PathDiscovery+" and "+satoken.PathJWKS, zap.Error(err))
				sleep(ctx, 6*time.Second)
				continue
			}
			log.Info("cluster service-account keys loaded")
			return nil
		}
		return nil
	})
	g.Go(func() error {
		t := time.NewTicker(15 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				for _, e := range srv.Endpoints() {
					if set := e.Keys(); set != nil {
						m.Keys(e.Name(), set.Signing.Created, len(set.Keys))
					}
				}
			}
		}
	})

	api := &http.Server{Addr: o.Listen, Handler: srv, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	if !o.InsecureHTTP {
		rl, err := certs.NewReloader(o.TLSCertFile, o.TLSKeyFile, time.Second, func(err error) {
			log.Error("reloading the serving certificate failed; keeping the current one", zap.Error(err))
		})
		if err != nil {
			return err
		}
		api.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: rl.GetCertificate}
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", o.Listen, err)
	}
	serve(ctx, g, api, ln, !o.InsecureHTTP)
	if o.MetricsListen != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
		mln, err := net.Listen("tcp", o.MetricsListen)
		if err != nil {
			return fmt.Errorf("listen %s: %w", o.MetricsListen, err)
		}
		serve(ctx, g, &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, mln, false)
	}
	log.Info("serving",
		zap.String("version", buildinfo.Version),
		zap.String("listen", ln.Addr().String()),
		zap.Bool("tls", !o.InsecureHTTP),
		zap.String("metrics", o.MetricsListen),
		zap.String("cluster", cfg.Cluster),
		zap.Int("endpoints", len(cfg.Endpoints)))
	for _, e := range cfg.Endpoints {
		log.Info("endpoint", zap.String("sts", e.Name), zap.String("issuer", e.Issuer), zap.String("audience", e.Audience),
			zap.String("subject_audience", e.SubjectAudience), zap.Duration("ttl", e.TTL.Duration), zap.String("algorithm", e.Algorithm))
	}
	err = g.Wait()
	log.Info("stopped")
	return err
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

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func newLogger(level string, w io.Writer) *zap.Logger {
	lvl, _ := zapcore.ParseLevel(level)
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(w), lvl))
}
