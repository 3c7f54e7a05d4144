// Command sts-webhook is kube-sts's mutating admission webhook: Pods labeled
// tremolo.io/<sts>: "true" get the sts-creds-sidecar, the in-memory token
// volume and a projected ServiceAccount token scoped to the STS.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilversion "k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/kube-sts/kube-sts/shared/buildinfo"
	"github.com/kube-sts/kube-sts/webhook/internal/admit"
	"github.com/kube-sts/kube-sts/webhook/internal/config"
)

// MutatePath is where the API server sends AdmissionReviews.
const MutatePath = "/mutate"

// Native sidecars (restartPolicy Always on init containers) are on by default from 1.29.
var nativeSince = utilversion.MustParseGeneric("1.29.0")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "sts-webhook: %v\n", err)
		os.Exit(1)
	}
}

// options are the command line; injectors are in the configuration file.
type options struct {
	// ConfigFile holds the injectors.
	ConfigFile string
	// Listen is the webhook's HTTPS address.
	Listen string
	// ProbeListen serves /healthz and /readyz; MetricsListen serves /metrics ("0" disables).
	ProbeListen   string
	MetricsListen string
	// TLSMode is certdir (certificates from CertDir, reloaded on change, e.g.
	// from cert-manager) or self (the webhook makes a CA and a serving
	// certificate, keeps them in SelfSecret and patches WebhookConfig's caBundle).
	TLSMode    string
	CertDir    string
	SelfSecret string
	// Namespace of SelfSecret; default $POD_NAMESPACE, else kube-sts.
	Namespace string
	// WebhookConfig is the MutatingWebhookConfiguration whose caBundle self mode maintains.
	WebhookConfig string
	// DNSName (and ExtraDNSNames) go into the self-managed serving certificate.
	DNSName       string
	ExtraDNSNames stringList
	Kubeconfig    string
	LogLevel      string
	Version       bool
	CheckConfig   bool
}

type stringList []string

func (s *stringList) String() string     { return fmt.Sprint(*s) }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func parseOptions(args []string, out io.Writer) (options, error) {
	o := options{}
	flags := flag.NewFlagSet("sts-webhook", flag.ContinueOnError)
	flags.SetOutput(out)
	flags.StringVar(&o.ConfigFile, "config", "/etc/kube-sts/webhook.yaml", "configuration file (injectors)")
	flags.StringVar(&o.Listen, "listen", ":9443", "HTTPS address of the webhook")
	flags.StringVar(&o.ProbeListen, "probe-listen", ":8081", "address of /healthz and /readyz")
	flags.StringVar(&o.MetricsListen, "metrics-listen", ":8080", `address of /metrics; "0" disables`)
	flags.StringVar(&o.TLSMode, "tls-mode", "certdir", "certdir (certificates from --cert-dir, reloaded on change) or self (generated, kept in --self-secret, caBundle patched)")
	flags.StringVar(&o.CertDir, "cert-dir", "/etc/kube-sts/tls", "directory with tls.crt and tls.key")
	flags.StringVar(&o.SelfSecret, "self-secret", "sts-webhook-tls", "Secret that keeps the self-managed CA and certificate")
	flags.StringVar(&o.Namespace, "namespace", "", "namespace of --self-secret (default $POD_NAMESPACE, else kube-sts)")
	flags.StringVar(&o.WebhookConfig, "webhook-config", "kube-sts", "MutatingWebhookConfiguration whose caBundle self mode maintains")
	flags.StringVar(&o.DNSName, "dns-name", "sts-webhook.kube-sts.svc", "DNS name in the self-managed serving certificate")
	flags.Var(&o.ExtraDNSNames, "extra-dns-name", "additional DNS name for the self-managed certificate (repeatable)")
	flags.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig; empty for in-cluster")
	flags.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	flags.BoolVar(&o.Version, "version", false, "print the version and exit")
	flags.BoolVar(&o.CheckConfig, "check-config", false, "load and validate --config, print what is wrong, and exit")
	if err := flags.Parse(args); err != nil {
		return o, err
	}
	if flags.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", flags.Arg(0))
	}
	if o.Namespace == "" {
		o.Namespace = os.Getenv("POD_NAMESPACE")
	}
	if o.Namespace == "" {
		o.Namespace = "kube-sts"
	}
	var errs []error
	switch o.TLSMode {
	case "certdir":
		if o.CertDir == "" {
			errs = append(errs, errors.New("--cert-dir is required with --tls-mode=certdir"))
		}
	case "self":
		if o.SelfSecret == "" || o.WebhookConfig == "" || o.DNSName == "" {
			errs = append(errs, errors.New("--self-secret, --webhook-config and --dns-name are required with --tls-mode=self"))
		}
	default:
		errs = append(errs, fmt.Errorf("--tls-mode %q: use certdir or self", o.TLSMode))
	}
	if _, _, err := net.SplitHostPort(o.Listen); err != nil {
		errs = append(errs, fmt.Errorf("--listen: %w", err))
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
		fmt.Fprintln(stdout, "sts-webhook", buildinfo.Version)
		return nil
	}
	cfg, err := config.Load(o.ConfigFile)
	if err != nil {
		return fmt.Errorf("load config %s: %w", o.ConfigFile, err)
	}
	if o.CheckConfig {
		fmt.Fprintf(stdout, "%s: %s is valid\n", "sts-webhook", o.ConfigFile)
		return nil
	}
	// The same JSON lines as sts-issuer and the sidecar (ts ISO8601, level,
	// logger, msg, snake_case keys); controller-runtime's logr goes through it.
	lvl, _ := zapcore.ParseLevel(o.LogLevel)
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	ctrl.SetLogger(crzap.New(crzap.WriteTo(stderr), crzap.Level(lvl), crzap.UseDevMode(false), crzap.Encoder(zapcore.NewJSONEncoder(enc))))
	log := ctrl.Log.WithName("sts-webhook")

	restCfg, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubernetes client config: %w", err)
	}
	native, err := nativeModes(cfg, func() (string, error) {
		dc, err := discovery.NewDiscoveryClientForConfig(restCfg)
		if err != nil {
			return "", err
		}
		info, err := dc.ServerVersion()
		if err != nil {
			return "", err
		}
		return info.GitVersion, nil
	})
	if err != nil {
		return fmt.Errorf("detect native sidecar support: %w", err)
	}

	host, portStr, _ := net.SplitHostPort(o.Listen)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("--listen port: %w", err)
	}
	certDir := o.CertDir
	if o.TLSMode == "self" {
		// The pair kept in the Secret (and its ca.crt, for caFile) is
		// written here: --cert-dir when writable (an emptyDir in the
		// manifests), else a private temporary folder.
		var cleanup func()
		if certDir, cleanup, err = selfCertDir(o.CertDir); err != nil {
			return err
		}
		defer cleanup()
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: o.MetricsListen},
		HealthProbeBindAddress: o.ProbeListen,
		// Only our own Secret is ever read, so only it is cached.
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Namespaces: map[string]cache.Config{o.Namespace: {}}},
		}},
		GracefulShutdownTimeout: ptr.To(10 * time.Second),
	})
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	if err := metrics.Registry.Register(admit.Admissions); err != nil {
		return err
	}
	if err := metrics.Registry.Register(admit.Duration); err != nil {
		return err
	}

	// The webhook server is added to the manager only once its certificate
	// is on disk: its certificate watcher needs the files at start.
	srv := webhook.NewServer(webhook.Options{Host: host, Port: port, CertDir: certDir})
	certsReady := make(chan struct{})
	if o.TLSMode == "self" {
		cs, err := kubernetes.NewForConfig(restCfg)
		if err != nil {
			return err
		}
		if err := ensureSecret(ctx, cs, o.Namespace, o.SelfSecret); err != nil {
			return err
		}
		// The rotator keeps the pair in the Secret; the webhook reads it from
		// there itself, so it needs no Secret volume (nor the kubelet's sync delay).
		go syncSecretToDir(ctx, cs, o.Namespace, o.SelfSecret, certDir, log)
		if err := rotator.AddRotator(mgr, &rotator.CertRotator{
			SecretKey:      types.NamespacedName{Namespace: o.Namespace, Name: o.SelfSecret},
			CertDir:        certDir,
			CAName:         "kube-sts-webhook-ca",
			CAOrganization: "kube-sts",
			DNSName:        o.DNSName,
			ExtraDNSNames:  o.ExtraDNSNames,
			IsReady:        certsReady,
			Webhooks:       []rotator.WebhookInfo{{Name: o.WebhookConfig, Type: rotator.Mutating}},
		}); err != nil {
			return fmt.Errorf("certificate rotator: %w", err)
		}
	} else {
		close(certsReady)
	}

	srv.Register(MutatePath, &webhook.Admission{Handler: &admit.Handler{
		Injectors: cfg.Injectors,
		Native:    native,
		Decoder:   admission.NewDecoder(scheme),
		Log:       log,
	}})
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	// Ready only once the certificates are in place and the server answers TLS.
	started := srv.StartedChecker()
	if err := mgr.AddReadyzCheck("webhook", func(req *http.Request) error {
		select {
		case <-certsReady:
		default:
			return errors.New("serving certificate not ready")
		}
		return started(req)
	}); err != nil {
		return err
	}
	for _, in := range cfg.Injectors {
		log.Info("injector", "injector", in.Name, "exchange_url", in.ExchangeURL, "subject_audience", in.SubjectAudience,
			"image", in.Image, "native_sidecar", native[in.Name])
	}
	log.Info("starting", "version", buildinfo.Version, "listen", o.Listen, "tls_mode", o.TLSMode)
	errc := make(chan error, 1)
	go func() {
		select {
		case <-certsReady:
			if err := mgr.Add(srv); err != nil {
				errc <- fmt.Errorf("start webhook server: %w", err)
			}
			log.Info("serving certificate ready")
		case <-ctx.Done():
		}
	}()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		if err := <-errc; err != nil {
			cancel(err)
		}
	}()
	if err := mgr.Start(ctx); err != nil {
		return err
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return nil
}

// nativeModes resolves each injector's native-sidecar mode; auto asks the API
// server's version once.
func nativeModes(cfg *config.Config, serverVersion func() (string, error)) (map[string]bool, error) {
	modes := map[string]bool{}
	var detected *bool
	for _, in := range cfg.Injectors {
		switch in.NativeSidecar {
		case config.NativeAlways:
			modes[in.Name] = true
		case config.NativeNever:
			modes[in.Name] = false
		default:
			if detected == nil {
				gv, err := serverVersion()
				if err != nil {
					return nil, err
				}
				v, err := utilversion.ParseGeneric(gv)
				if err != nil {
					return nil, fmt.Errorf("parse server version %q: %w", gv, err)
				}
				ok := v.AtLeast(nativeSince)
				detected = &ok
			}
			modes[in.Name] = *detected
		}
	}
	return modes, nil
}

// ensureSecret creates the self-managed TLS Secret when it is missing: the
// rotator only updates an existing one.
func ensureSecret(ctx context.Context, cs kubernetes.Interface, namespace, name string) error {
	_, err := cs.CoreV1().Secrets(namespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{
			"app.kubernetes.io/managed-by": "sts-webhook",
			"app.kubernetes.io/part-of":    "kube-sts",
		}},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create TLS secret %s/%s: %w", namespace, name, err)
	}
	return nil
}

// syncSecretToDir writes the Secret's tls.crt and tls.key into dir whenever
// they change (key first, each renamed into place), until ctx is done.
func syncSecretToDir(ctx context.Context, cs kubernetes.Interface, namespace, name, dir string, log logr.Logger) {
	var last []byte
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		sec, err := cs.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
		switch {
		case err != nil:
			if ctx.Err() == nil {
				log.Error(err, "reading the TLS secret failed")
			}
		case len(sec.Data["tls.crt"]) > 0 && len(sec.Data["tls.key"]) > 0 && !bytes.Equal(sec.Data["tls.crt"], last):
			if err := writeAtomic(filepath.Join(dir, "tls.key"), sec.Data["tls.key"], 0o600); err != nil {
				log.Error(err, "writing the serving key failed")
				break
			}
			if err := writeAtomic(filepath.Join(dir, "tls.crt"), sec.Data["tls.crt"], 0o644); err != nil {
				log.Error(err, "writing the serving certificate failed")
				break
			}
			// The CA, for injectors whose caFile points here (the issuer
			// can serve a certificate from the same Secret).
			if ca := sec.Data["ca.crt"]; len(ca) > 0 {
				if err := writeAtomic(filepath.Join(dir, "ca.crt"), ca, 0o644); err != nil {
					log.Error(err, "writing the CA certificate failed")
					break
				}
			}
			last = sec.Data["tls.crt"]
			log.Info("serving certificate written", "dir", dir)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// selfCertDir returns dir when it is (or can be made) a writable folder, else
// a new temporary folder that cleanup removes.
func selfCertDir(dir string) (string, func(), error) {
	if err := os.MkdirAll(dir, 0o700); err == nil {
		if f, err := os.CreateTemp(dir, ".probe-"); err == nil {
			f.Close()
			_ = os.Remove(f.Name())
			return dir, func() {}, nil
		}
	}
	tmp, err := os.MkdirTemp("", "sts-webhook-certs-")
	if err != nil {
		return "", nil, fmt.Errorf("no writable folder for the self-managed certificate (--cert-dir %s): %w", dir, err)
	}
	return tmp, func() { _ = os.RemoveAll(tmp) }, nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
