// Package app is sts-webhook put together: Options from the command line and
// environment, and Run, which builds the controller-runtime manager, the
// admission handler and the serving certificate (from --cert-dir, or
// self-managed) and serves until the context ends.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/kube-sts/kube-sts/logging"
	"github.com/kube-sts/kube-sts/shared/buildinfo"
	"github.com/kube-sts/kube-sts/webhook/internal/admit"
	"github.com/kube-sts/kube-sts/webhook/internal/config"
	"github.com/kube-sts/kube-sts/webhook/internal/selfcert"
)

// MutatePath is where the API server sends AdmissionReviews.
const MutatePath = "/mutate"

// Run is sts-webhook's main: it returns when ctx ends or a part fails.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	if o.Version {
		fmt.Fprint(stdout, buildinfo.Get().Text("sts-webhook"))
		return nil
	}
	cfg, err := config.Load(o.ConfigFile)
	if err != nil {
		// Each error names the file, its line and the field (configfile), one a line.
		return fmt.Errorf("configuration:\n%w", err)
	}
	if o.CheckConfig {
		fmt.Fprintf(stdout, "sts-webhook: %s is valid\n", o.ConfigFile)
		return nil
	}
	zl, err := logging.New(o.LogLevel, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = zl.Sync() }()
	ctrl.SetLogger(zapr.NewLogger(zl))
	log := ctrl.Log.WithName("sts-webhook")
	restCfg, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubernetes client config: %w", err)
	}
	native, err := nativeModes(cfg, serverVersion(restCfg))
	if err != nil {
		return fmt.Errorf("detect native sidecar support: %w", err)
	}
	if o.TLSMode == TLSSelf {
		selfcert.Narrow(restCfg, o.Namespace, o.SelfSecret, o.WebhookConfig)
	}
	mgr, scheme, err := newManager(restCfg, o)
	if err != nil {
		return err
	}
	srv, certsReady, cleanup, err := serving(ctx, mgr, o, log)
	if err != nil {
		return err
	}
	defer cleanup()
	m, err := admit.NewMetrics(crmetrics.Registry)
	if err != nil {
		return err
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sts_webhook_build_info",
		Help: "Always 1; its labels say which build runs: version, commit, the commit's date, Go version, platform.",
	}, buildinfo.LabelNames())
	buildInfo.WithLabelValues(buildinfo.Get().LabelValues()...).Set(1)
	if err := crmetrics.Registry.Register(buildInfo); err != nil {
		return fmt.Errorf("register sts_webhook_build_info: %w", err)
	}
	handler := func(sas admit.ServiceAccounts) *webhook.Admission {
		return &webhook.Admission{Handler: &admit.Handler{
			Injectors: cfg.Injectors, Native: native, Decoder: admission.NewDecoder(scheme), Log: log, Metrics: m, ServiceAccounts: sas,
		}}
	}
	srv.Register(MutatePath, handler(nil))
	var sas *serviceAccounts
	if o.ServiceAccountOptIn {
		sas = &serviceAccounts{cache: mgr.GetCache(), live: mgr.GetAPIReader()}
		if err := sas.start(mgr); err != nil {
			return err
		}
		if err := crmetrics.Registry.Register(sas.liveLookups()); err != nil {
			return fmt.Errorf("register the ServiceAccount metrics: %w", err)
		}
		srv.Register(MutateServiceAccountPath, handler(sas))
	}
	if err := probes(mgr, srv, certsReady, sas); err != nil {
		return err
	}
	for _, in := range cfg.Injectors {
		log.Info("injector", "injector", in.Name, "exchange_url", in.ExchangeURL, "subject_audience", in.SubjectAudience,
			"image", in.Image, "native_sidecar", native[in.Name])
	}
	log.Info("starting", "version", buildinfo.Version, "listen", o.Listen, "tls_mode", o.TLSMode, "serviceaccount_opt_in", o.ServiceAccountOptIn)
	return mgr.Start(ctx)
}

func serverVersion(restCfg *rest.Config) func() (string, error) {
	return func() (string, error) {
		dc, err := discovery.NewDiscoveryClientForConfig(restCfg)
		if err != nil {
			return "", err
		}
		info, err := dc.ServerVersion()
		if err != nil {
			return "", err
		}
		return info.GitVersion, nil
	}
}

// newManager builds the manager; in self mode its cache holds the one TLS
// Secret (selected by name) and nothing else.
func newManager(restCfg *rest.Config, o *Options) (manager.Manager, *runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, nil, err
	}
	opts := ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: metricsBind(o.MetricsListen)},
		HealthProbeBindAddress:  o.ProbeListen,
		GracefulShutdownTimeout: ptr.To(10 * time.Second),
	}
	if o.TLSMode == TLSSelf {
		opts.Cache.ByObject = map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Namespaces: map[string]cache.Config{o.Namespace: {}}, Field: fields.OneTermEqualSelector("metadata.name", o.SelfSecret)},
		}
	}
	if o.ServiceAccountOptIn {
		// ServiceAccounts are watched as metadata only (the annotation is
		// all the webhook reads), without their managed fields.
		opts.Cache.DefaultTransform = cache.TransformStripManagedFields()
	}
	mgr, err := ctrl.NewManager(restCfg, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("manager: %w", err)
	}
	return mgr, scheme, nil
}

// serving builds the webhook server and its certificate: from --cert-dir
// (controller-runtime watches the files), or self-managed: the Secret is
// created, cert-controller's rotator fills and renews it and patches the
// caBundle, and the manager's cache mirrors it into memory and --cert-dir.
// certsReady closes once the certificate is in place.
func serving(ctx context.Context, mgr manager.Manager, o *Options, log logr.Logger) (webhook.Server, <-chan struct{}, func(), error) {
	host, portStr, _ := net.SplitHostPort(o.Listen)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--listen port: %w", err)
	}
	certsReady := make(chan struct{})
	if o.TLSMode != TLSSelf {
		close(certsReady)
		srv := webhook.NewServer(webhook.Options{Host: host, Port: port, CertDir: o.CertDir})
		return srv, certsReady, func() {}, mgr.Add(srv)
	}
	dir, cleanup, err := selfcert.Dir(o.CertDir)
	if err != nil {
		return nil, nil, nil, err
	}
	mirror := selfcert.NewMirror(dir, log)
	srv := webhook.NewServer(webhook.Options{Host: host, Port: port, CertDir: dir,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.GetCertificate = mirror.GetCertificate }}})
	err = errors.Join(
		selfcert.EnsureSecret(ctx, mgr.GetAPIReader(), mgr.GetClient(), o.Namespace, o.SelfSecret),
		mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
			inf, err := mgr.GetCache().GetInformer(ctx, &corev1.Secret{})
			if err != nil {
				return fmt.Errorf("watch the TLS secret: %w", err)
			}
			if err := mirror.Watch(inf, o.Namespace, o.SelfSecret); err != nil {
				return err
			}
			<-ctx.Done()
			return nil
		})),
		rotator.AddRotator(mgr, &rotator.CertRotator{
			SecretKey: types.NamespacedName{Namespace: o.Namespace, Name: o.SelfSecret}, CertDir: dir,
			CAName: "kube-sts-webhook-ca", CAOrganization: "kube-sts", DNSName: o.DNSName, ExtraDNSNames: o.ExtraDNSNames,
			IsReady: certsReady, Webhooks: []rotator.WebhookInfo{{Name: o.WebhookConfig, Type: rotator.Mutating}},
		}),
		mgr.Add(srv),
	)
	if err != nil {
		cleanup()
		return nil, nil, nil, fmt.Errorf("self-managed certificate: %w", err)
	}
	return srv, certsReady, cleanup, nil
}

// probes: healthz answers while the process runs; readyz once the
// certificate is in place, the webhook server answers TLS and, with
// ServiceAccount opt-in, the ServiceAccount cache has synced.
func probes(mgr manager.Manager, srv webhook.Server, certsReady <-chan struct{}, sas *serviceAccounts) error {
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if sas != nil {
		if err := mgr.AddReadyzCheck("serviceaccounts", sas.ready); err != nil {
			return err
		}
	}
	started := srv.StartedChecker()
	return mgr.AddReadyzCheck("webhook", func(req *http.Request) error {
		select {
		case <-certsReady:
		default:
			return errors.New("serving certificate not ready")
		}
		return started(req)
	})
}

// metricsBind is controller-runtime's spelling of a metrics address: "0"
// turns the server off, where our options say empty.
func metricsBind(addr string) string {
	if addr == "" {
		return "0"
	}
	return addr
}
