package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/kube-sts/kube-sts/issuer/internal/server"
	"github.com/kube-sts/kube-sts/logging"
	"github.com/kube-sts/kube-sts/shared/cli"
)

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

// Options is sts-issuer's command line; the configuration file holds the rest.
type Options struct {
	// ConfigFile is the YAML configuration (cluster, endpoints).
	ConfigFile string
	// Namespace is the issuer's own: the default namespace of managed key
	// Secrets; Complete fills it from $POD_NAMESPACE.
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
	LogLevel string
	// Version prints the version; CheckConfig validates ConfigFile; both exit.
	Version     bool
	CheckConfig bool
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		ConfigFile: "/etc/kube-sts/issuer.yaml", Listen: ":8443", MetricsListen: ":9090",
		TLSCertFile: "/etc/kube-sts/tls/tls.crt", TLSKeyFile: "/etc/kube-sts/tls/tls.key",
		APITimeout: 5 * time.Second, KubeQPS: DefaultKubeQPS, KubeBurst: DefaultKubeBurst,
		MaxInFlight: server.DefaultMaxInFlight, PerToken: server.DefaultPerTokenPerSecond, LogLevel: "info",
	}
}

// AddFlags binds the options to flags.
func (o *Options) AddFlags(flags *flag.FlagSet) {
	flags.StringVar(&o.ConfigFile, "config", o.ConfigFile, "configuration file (cluster, endpoints)")
	flags.StringVar(&o.Namespace, "namespace", o.Namespace, "the issuer's own namespace, where managed key Secrets live unless the configuration names one [default $POD_NAMESPACE, else kube-sts]")
	flags.StringVar(&o.Listen, "listen", o.Listen, "address of the exchange, discovery, /healthz and /readyz server")
	flags.StringVar(&o.MetricsListen, "metrics-listen", o.MetricsListen, "address of /metrics; empty to disable")
	flags.StringVar(&o.TLSCertFile, "tls-cert-file", o.TLSCertFile, "serving certificate (PEM), reloaded when it changes")
	flags.StringVar(&o.TLSKeyFile, "tls-key-file", o.TLSKeyFile, "serving private key (PEM)")
	flags.BoolVar(&o.InsecureHTTP, "insecure-http", o.InsecureHTTP, "serve plain HTTP; only behind an ingress that terminates TLS")
	flags.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig to reach the API server; empty for in-cluster")
	flags.DurationVar(&o.APITimeout, "api-timeout", o.APITimeout, "timeout of each TokenReview and Pod lookup")
	flags.Float64Var(&o.KubeQPS, "kube-api-qps", o.KubeQPS, "client-side QPS limit of exchanges towards the API server (each exchange is a TokenReview and a Pod GET)")
	flags.IntVar(&o.KubeBurst, "kube-api-burst", o.KubeBurst, "client-side burst of exchanges towards the API server")
	flags.IntVar(&o.MaxInFlight, "max-inflight-exchanges", o.MaxInFlight, "exchanges waiting on the API server at once; beyond it: 503 with Retry-After")
	flags.IntVar(&o.PerToken, "max-exchanges-per-token", o.PerToken, "presentations of one subject token per second; beyond it: 429 with Retry-After")
	flags.StringVar(&o.LogLevel, "log-level", o.LogLevel, "debug, info, warn or error")
	flags.BoolVar(&o.Version, "version", o.Version, "print the version and exit")
	flags.BoolVar(&o.CheckConfig, "check-config", o.CheckConfig, "load and validate --config, print what is wrong, and exit")
}

// Complete fills what the environment supplies; getenv is os.Getenv in the binary.
func (o *Options) Complete(getenv func(string) string) {
	if o.Namespace == "" {
		o.Namespace = getenv("POD_NAMESPACE")
	}
}

// Validate reports every problem of the options at once.
func (o *Options) Validate() error {
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
	if err := logging.CheckLevel(o.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("--log-level: %w", err))
	}
	return errors.Join(errs...)
}

// parse reads args into options: flags, then the environment, then validation.
func parse(args []string, out io.Writer) (*Options, error) {
	o := NewOptions()
	return o, cli.Parse("sts-issuer", o, args, os.Getenv, out)
}
