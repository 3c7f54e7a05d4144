package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/kube-sts/kube-sts/logging"
	"github.com/kube-sts/kube-sts/shared/cli"
	"github.com/kube-sts/kube-sts/shared/contract"
)

// TLS modes.
const (
	TLSCertDir = "certdir"
	TLSSelf    = "self"
)

// Options is sts-webhook's command line; the injectors are in the configuration file.
type Options struct {
	// ConfigFile holds the injectors.
	ConfigFile string
	// Listen is the webhook's HTTPS address.
	Listen string
	// ProbeListen serves /healthz and /readyz; MetricsListen serves /metrics (empty disables;
	// Complete makes "0" empty).
	ProbeListen   string
	MetricsListen string
	// TLSMode is certdir (certificates from CertDir, reloaded on change, e.g.
	// from cert-manager) or self (the webhook makes a CA and a serving
	// certificate, keeps them in SelfSecret and patches WebhookConfig's caBundle).
	TLSMode    string
	CertDir    string
	SelfSecret string
	// Namespace of SelfSecret; Complete fills it from $POD_NAMESPACE, else kube-sts.
	Namespace string
	// WebhookConfig is the MutatingWebhookConfiguration whose caBundle self mode maintains.
	WebhookConfig string
	// DNSName (and ExtraDNSNames) go into the self-managed serving certificate.
	DNSName       string
	ExtraDNSNames stringList
	Kubeconfig    string
	// ServiceAccountOptIn serves MutateServiceAccountPath: Pods whose
	// ServiceAccount's kube-sts.io/inject annotation names injectors get
	// them (read from a watch on ServiceAccounts' metadata, which needs
	// list and watch on serviceaccounts cluster-wide).
	ServiceAccountOptIn bool
	LogLevel            string
	Version             bool
	CheckConfig         bool
}

type stringList []string

func (s *stringList) String() string     { return fmt.Sprint(*s) }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		ConfigFile: "/etc/kube-sts/webhook.yaml", Listen: ":9443", ProbeListen: ":8081", MetricsListen: ":8080",
		TLSMode: TLSCertDir, CertDir: "/etc/kube-sts/tls", SelfSecret: "sts-webhook-tls", WebhookConfig: "kube-sts",
		DNSName: "sts-webhook.kube-sts.svc", LogLevel: "info",
	}
}

// AddFlags binds the options to flags.
func (o *Options) AddFlags(flags *flag.FlagSet) {
	flags.StringVar(&o.ConfigFile, "config", o.ConfigFile, "configuration file (injectors)")
	flags.StringVar(&o.Listen, "listen", o.Listen, "HTTPS address of the webhook")
	flags.StringVar(&o.ProbeListen, "probe-listen", o.ProbeListen, "address of /healthz and /readyz")
	flags.StringVar(&o.MetricsListen, "metrics-listen", o.MetricsListen, `address of /metrics; empty or "0" disables`)
	flags.StringVar(&o.TLSMode, "tls-mode", o.TLSMode, "certdir (certificates from --cert-dir, reloaded on change) or self (generated, kept in --self-secret, caBundle patched)")
	flags.StringVar(&o.CertDir, "cert-dir", o.CertDir, "directory with tls.crt and tls.key")
	flags.StringVar(&o.SelfSecret, "self-secret", o.SelfSecret, "Secret that keeps the self-managed CA and certificate")
	flags.StringVar(&o.Namespace, "namespace", o.Namespace, "namespace of --self-secret (default $POD_NAMESPACE, else kube-sts)")
	flags.StringVar(&o.WebhookConfig, "webhook-config", o.WebhookConfig, "MutatingWebhookConfiguration whose caBundle self mode maintains")
	flags.StringVar(&o.DNSName, "dns-name", o.DNSName, "DNS name in the self-managed serving certificate")
	flags.Var(&o.ExtraDNSNames, "extra-dns-name", "additional DNS name for the self-managed certificate (repeatable)")
	flags.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig; empty for in-cluster")
	flags.BoolVar(&o.ServiceAccountOptIn, "serviceaccount-opt-in", o.ServiceAccountOptIn, "serve "+MutateServiceAccountPath+": inject Pods whose ServiceAccount is annotated "+contract.AnnotationInject+" (watches ServiceAccounts cluster-wide)")
	flags.StringVar(&o.LogLevel, "log-level", o.LogLevel, "debug, info, warn or error")
	flags.BoolVar(&o.Version, "version", o.Version, "print the version and exit")
	flags.BoolVar(&o.CheckConfig, "check-config", o.CheckConfig, "load and validate --config, print what is wrong, and exit")
}

// Complete fills what the environment supplies; getenv is os.Getenv in the binary.
func (o *Options) Complete(getenv func(string) string) {
	if cli.Off(o.MetricsListen) {
		o.MetricsListen = ""
	}
	if o.Namespace == "" {
		o.Namespace = getenv("POD_NAMESPACE")
	}
	if o.Namespace == "" {
		o.Namespace = "kube-sts"
	}
}

// Validate reports every problem of the options at once.
func (o *Options) Validate() error {
	var errs []error
	switch o.TLSMode {
	case TLSCertDir:
		if o.CertDir == "" {
			errs = append(errs, errors.New("--cert-dir is required with --tls-mode=certdir"))
		}
	case TLSSelf:
		if o.SelfSecret == "" || o.WebhookConfig == "" || o.DNSName == "" {
			errs = append(errs, errors.New("--self-secret, --webhook-config and --dns-name are required with --tls-mode=self"))
		}
	default:
		errs = append(errs, fmt.Errorf("--tls-mode %q: use certdir or self", o.TLSMode))
	}
	if _, _, err := net.SplitHostPort(o.Listen); err != nil {
		errs = append(errs, fmt.Errorf("--listen: %w", err))
	}
	if err := logging.CheckLevel(o.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("--log-level: %w", err))
	}
	return errors.Join(errs...)
}

// parse reads args into options: flags, then the environment, then validation.
func parse(args []string, out io.Writer) (*Options, error) {
	o := NewOptions()
	return o, cli.Parse("sts-webhook", o, args, os.Getenv, out)
}
