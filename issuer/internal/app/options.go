package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/kube-sts/kube-sts/issuer/internal/review"
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
	// Watch (--review=watch): the lists and watches of its caches, a few
	// calls at start and after a broken watch (a paginated list of 100,000
	// Pods is 200 calls when the API server cannot stream it).
	watchQPS   = 50
	watchBurst = 100
	// Events of refused Pods: client-go's correlator already bounds each
	// Pod's (a burst of 25, then one per 5 minutes); this bounds them all
	// when many Pods are refused at once (a rule that refuses a namespace).
	// Beyond it, Events wait in the recorder's queue (1000) and are dropped.
	eventsQPS   = 10
	eventsBurst = 50
)

// Connection bounds of the exchange server. Sidecars open one connection
// per exchange and close it (about 140 exchanges a second for 100,000 Pods,
// each a few milliseconds; a herd after an outage some thousands a second),
// so 512 open at once is far above need; with the request bounds they keep
// a stalling attacker under 64 MiB (docs/reference/issuer.md). One client address
// gets 32: a Pod needs one, a node of host-network Pods a few.
const (
	DefaultMaxConnections           = 512
	DefaultMaxConnectionsPerAddress = 32
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
	// MetricsListen is the address of /metrics; empty (or "0", made empty by
	// Complete) disables it.
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
	// Review is how a subject token's Pod is confirmed: review.ModeTokenReview
	// (TokenReview + Pod GET per exchange) or review.ModeWatch (local
	// verification and watched caches, no API call per exchange).
	Review string
	// WatchMaxStale is how long mode watch trusts a cache whose watch is down.
	WatchMaxStale time.Duration
	// KubeQPS and KubeBurst are the client-side rate limits of exchanges
	// towards the API server; key management and readiness use a client of
	// their own, so exchanges never starve them.
	KubeQPS   float64
	KubeBurst int
	// MaxInFlight bounds the exchanges waiting on the API server at once.
	MaxInFlight int
	// MaxPending bounds the requests being answered at once (body, review,
	// signing); beyond it: 503 with Retry-After before the body is read.
	MaxPending int
	// MaxPendingPerAddress bounds those from one client IP (0: none).
	MaxPendingPerAddress int
	// MaxConnections bounds the exchange server's open connections;
	// MaxConnectionsPerAddress bounds those from one client IP (0: none).
	MaxConnections           int
	MaxConnectionsPerAddress int
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
		APITimeout: 5 * time.Second, Review: review.ModeTokenReview, WatchMaxStale: review.DefaultMaxStale, KubeQPS: DefaultKubeQPS, KubeBurst: DefaultKubeBurst,
		MaxInFlight: server.DefaultMaxInFlight, MaxPending: server.DefaultMaxPending, MaxPendingPerAddress: server.DefaultMaxPendingPerAddress,
		MaxConnections: DefaultMaxConnections, MaxConnectionsPerAddress: DefaultMaxConnectionsPerAddress,
		PerToken: server.DefaultPerTokenPerSecond, LogLevel: "info",
	}
}

// AddFlags binds the options to flags.
func (o *Options) AddFlags(flags *flag.FlagSet) {
	flags.StringVar(&o.ConfigFile, "config", o.ConfigFile, "configuration file (cluster, endpoints)")
	flags.StringVar(&o.Namespace, "namespace", o.Namespace, "the issuer's own namespace, where managed key Secrets live unless the configuration names one [default $POD_NAMESPACE, else kube-sts]")
	flags.StringVar(&o.Listen, "listen", o.Listen, "address of the exchange, discovery, /healthz and /readyz server")
	flags.StringVar(&o.MetricsListen, "metrics-listen", o.MetricsListen, `address of /metrics; empty or "0" disables`)
	flags.StringVar(&o.TLSCertFile, "tls-cert-file", o.TLSCertFile, "serving certificate (PEM), reloaded when it changes")
	flags.StringVar(&o.TLSKeyFile, "tls-key-file", o.TLSKeyFile, "serving private key (PEM)")
	flags.BoolVar(&o.InsecureHTTP, "insecure-http", o.InsecureHTTP, "serve plain HTTP; only behind an ingress that terminates TLS")
	flags.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig to reach the API server; empty for in-cluster")
	flags.DurationVar(&o.APITimeout, "api-timeout", o.APITimeout, "timeout of each TokenReview and Pod or ServiceAccount lookup")
	flags.StringVar(&o.Review, "review", o.Review, `how a subject token's Pod is confirmed: "tokenreview" (a TokenReview and a Pod GET per exchange; needs create tokenreviews, get pods) or "watch" (verified locally against the cluster's keys, Pods and ServiceAccounts from watched caches: no API call per exchange; needs list/watch/get on pods and serviceaccounts cluster-wide)`)
	flags.DurationVar(&o.WatchMaxStale, "watch-max-stale", o.WatchMaxStale, "with --review=watch: how long a cache whose watch is down is still trusted; beyond it exchanges use TokenReview and Pod GET until the watch is back")
	flags.Float64Var(&o.KubeQPS, "kube-api-qps", o.KubeQPS, "client-side QPS limit of exchanges towards the API server (with --review=tokenreview each exchange is a TokenReview and a Pod GET)")
	flags.IntVar(&o.KubeBurst, "kube-api-burst", o.KubeBurst, "client-side burst of exchanges towards the API server")
	flags.IntVar(&o.MaxInFlight, "max-inflight-exchanges", o.MaxInFlight, "exchanges waiting on the API server at once; beyond it: 503 with Retry-After")
	flags.IntVar(&o.MaxPending, "max-pending-requests", o.MaxPending, "requests being answered at once (reading the body, waiting on the API server, signing); beyond it: 503 with Retry-After, the body unread")
	flags.IntVar(&o.MaxPendingPerAddress, "max-pending-requests-per-address", o.MaxPendingPerAddress, "requests being answered at once from one client IP; 0 for no bound (behind a proxy that hides client addresses)")
	flags.IntVar(&o.MaxConnections, "max-connections", o.MaxConnections, "open connections of the exchange server; at the bound an idle or stalled connection makes room, else a new one is closed at once")
	flags.IntVar(&o.MaxConnectionsPerAddress, "max-connections-per-address", o.MaxConnectionsPerAddress, "open connections from one client IP (one Pod, or one node for host-network Pods); 0 for no bound (behind a proxy that hides client addresses)")
	flags.IntVar(&o.PerToken, "max-exchanges-per-token", o.PerToken, "presentations of one subject token per second; beyond it: 429 with Retry-After")
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
}

// Validate reports every problem of the options at once.
func (o *Options) Validate() error {
	var errs []error
	if o.APITimeout <= 0 {
		errs = append(errs, errors.New("--api-timeout must be positive"))
	}
	if !slices.Contains(review.Modes, o.Review) {
		errs = append(errs, fmt.Errorf("--review must be one of %s, not %q", strings.Join(review.Modes, ", "), o.Review))
	}
	if o.WatchMaxStale <= 0 {
		errs = append(errs, errors.New("--watch-max-stale must be positive"))
	}
	if o.KubeQPS <= 0 || o.KubeBurst <= 0 {
		errs = append(errs, errors.New("--kube-api-qps and --kube-api-burst must be positive"))
	}
	if o.MaxInFlight <= 0 || o.PerToken <= 0 || o.MaxPending <= 0 || o.MaxConnections <= 0 {
		errs = append(errs, errors.New("--max-inflight-exchanges, --max-exchanges-per-token, --max-pending-requests and --max-connections must be positive"))
	}
	if o.MaxConnectionsPerAddress < 0 || o.MaxPendingPerAddress < 0 {
		errs = append(errs, errors.New("--max-connections-per-address and --max-pending-requests-per-address must be 0 (no bound) or positive"))
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
