// Package metrics holds sts-issuer's Prometheus metrics. kube-sts has one
// metrics pattern: a struct of collectors, no package-level state, every
// method safe on a nil *Metrics (so packages can be used without metrics in
// tests), built on the registry its binary serves. The issuer has no
// controller-runtime manager, so it serves a registry of its own; the webhook
// builds its struct on controller-runtime's (webhook/internal/admit).
package metrics

import (
	"errors"
	"fmt"
	"time"

	"github.com/kube-sts/kube-sts/shared/buildinfo"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the issuer's collectors, registered on their own registry.
type Metrics struct {
	Registry *prometheus.Registry

	exchanges        *prometheus.CounterVec
	exchangeDuration *prometheus.HistogramVec
	apiDuration      *prometheus.HistogramVec
	keyAge           *prometheus.GaugeVec
	keysPublished    *prometheus.GaugeVec
	rotateEvery      *prometheus.GaugeVec
	rotations        *prometheus.CounterVec
	publishes        *prometheus.CounterVec
	publishedAt      *prometheus.GaugeVec
	refused          *prometheus.CounterVec
	watchFallbacks   *prometheus.CounterVec
}

// New registers the collectors (and the Go and process collectors) on a new
// registry. Like the webhook's, registration returns its error: a name
// registered twice is a bug the caller reports, not a panic.
func New() (*Metrics, error) {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sts_issuer_exchanges_total",
			Help: "Token exchanges by endpoint and result (issued, or the refusal reason).",
		}, []string{"endpoint", "result"}),
		exchangeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sts_issuer_exchange_duration_seconds",
			Help:    "Time to answer a token exchange, by endpoint.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"endpoint"}),
		apiDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sts_issuer_apiserver_request_duration_seconds",
			Help:    "Latency of the issuer's calls to the API server (tokenreview, pod, serviceaccount), by call and result.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"call", "result"}),
		keyAge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sts_issuer_signing_key_age_seconds",
			Help: "Age of the key that signs, by endpoint.",
		}, []string{"endpoint"}),
		keysPublished: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sts_issuer_keys_published",
			Help: "Keys in the JWKS, by endpoint.",
		}, []string{"endpoint"}),
		rotateEvery: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sts_issuer_signing_key_rotate_every_seconds",
			Help: "How long a managed key signs before its successor takes over, by endpoint (absent for keys from files): an alert compares the signing key's age with it.",
		}, []string{"endpoint"}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sts_issuer_key_changes_total",
			Help: "Changes of the managed key set written by this replica, by endpoint and kind (created, retired).",
		}, []string{"endpoint", "kind"}),
		publishes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sts_issuer_publish_total",
			Help: "Attempts to publish the discovery document and JWKS to a target, by endpoint, target and result (published; superseded: the target holds a newer key set of a peer replica; foreign: it held one no replica wrote, overwritten; error).",
		}, []string{"endpoint", "target", "result"}),
		publishedAt: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sts_issuer_publish_last_success_timestamp_seconds",
			Help: "When a target last took the documents (or showed a newer key set), by endpoint and target.",
		}, []string{"endpoint", "target"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sts_issuer_refused_total",
			Help: "Connections and requests turned away by a resource bound before any work, by server (api, metrics) and bound (max_connections, max_connections_per_address, evicted: an idle or stalled connection closed to make room, max_pending_requests).",
		}, []string{"server", "bound"}),
		watchFallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sts_issuer_watch_fallbacks_total",
			Help: "Exchanges that cost API calls in review mode watch, by reason (stale: a cache not synced or its watch down longer than --watch-max-stale, TokenReview + Pod GET; pod_not_cached, serviceaccount_not_cached: one GET; unverified: TokenReview + Pod GET).",
		}, []string{"reason"}),
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sts_issuer_build_info",
		Help: "Always 1; its labels say which build runs: version, commit, the commit's date, Go version, platform.",
	}, buildinfo.LabelNames())
	buildInfo.WithLabelValues(buildinfo.Get().LabelValues()...).Set(1)
	if err := m.register(buildInfo, m.watchFallbacks, m.refused, m.exchanges, m.exchangeDuration, m.apiDuration, m.keyAge, m.keysPublished, m.rotateEvery, m.rotations, m.publishes, m.publishedAt,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, err
	}
	// Exported from the start, at 0: in review mode watch an issuer may
	// make no API call for hours, and "none" must read as 0, not as absent.
	for _, call := range []string{"tokenreview", "pod", "serviceaccount"} {
		m.apiDuration.WithLabelValues(call, "ok")
	}
	return m, nil
}

// register registers every collector and returns their errors together.
func (m *Metrics) register(cs ...prometheus.Collector) error {
	var errs []error
	for _, c := range cs {
		errs = append(errs, m.Registry.Register(c))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	return nil
}

// Exchange records one answered exchange.
func (m *Metrics) Exchange(endpoint, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.exchanges.WithLabelValues(endpoint, result).Inc()
	m.exchangeDuration.WithLabelValues(endpoint).Observe(d.Seconds())
}

// Refused records a connection or request turned away by a bound of server.
func (m *Metrics) Refused(server, bound string) {
	if m == nil {
		return
	}
	m.refused.WithLabelValues(server, bound).Inc()
}

// Connections exports the open connections of a server and its bound.
func (m *Metrics) Connections(server string, open func() int, max int) error {
	if m == nil {
		return nil
	}
	return m.register(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sts_issuer_connections", Help: "Open connections.", ConstLabels: prometheus.Labels{"server": server}},
			func() float64 { return float64(open()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sts_issuer_connections_max", Help: "The bound on open connections.", ConstLabels: prometheus.Labels{"server": server}},
			func() float64 { return float64(max) }))
}

// APICall records one call to the API server.
func (m *Metrics) APICall(call, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.apiDuration.WithLabelValues(call, result).Observe(d.Seconds())
}

// fallbackReasons are the reasons of sts_issuer_watch_fallbacks_total (the
// constants of package review), exported at 0 from the start.
var fallbackReasons = []string{"stale", "unverified", "pod_not_cached", "serviceaccount_not_cached"}

// WatchFallback records an exchange that cost API calls in review mode watch.
func (m *Metrics) WatchFallback(reason string) {
	if m == nil {
		return
	}
	m.watchFallbacks.WithLabelValues(reason).Inc()
}

// Watch exports whether review mode watch's caches are current (1) or not
// (0), and how many objects each holds.
func (m *Metrics) Watch(fresh func() bool, objects func() (pods, serviceAccounts int)) error {
	if m == nil {
		return nil
	}
	for _, reason := range fallbackReasons {
		m.watchFallbacks.WithLabelValues(reason)
	}
	return m.register(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sts_issuer_watch_current", Help: "1 when review mode watch's Pod and ServiceAccount caches are synced and their watches open (or down for less than --watch-max-stale); 0 while exchanges fall back to TokenReview and Pod GET."},
			func() float64 {
				if fresh() {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sts_issuer_watch_objects", Help: "Objects in review mode watch's caches.", ConstLabels: prometheus.Labels{"resource": "pods"}},
			func() float64 { p, _ := objects(); return float64(p) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sts_issuer_watch_objects", Help: "Objects in review mode watch's caches.", ConstLabels: prometheus.Labels{"resource": "serviceaccounts"}},
			func() float64 { _, s := objects(); return float64(s) }))
}

// Keys records the state of an endpoint's key set.
func (m *Metrics) Keys(endpoint string, signingCreated time.Time, published int) {
	if m == nil {
		return
	}
	if !signingCreated.IsZero() {
		m.keyAge.WithLabelValues(endpoint).Set(time.Since(signingCreated).Seconds())
	}
	m.keysPublished.WithLabelValues(endpoint).Set(float64(published))
}

// RotateEvery records a managed endpoint's rotation period.
func (m *Metrics) RotateEvery(endpoint string, d time.Duration) {
	if m == nil {
		return
	}
	m.rotateEvery.WithLabelValues(endpoint).Set(d.Seconds())
}

// Ready exports sts_issuer_ready: 1 while /readyz answers 200. Prometheus
// scrapes an unready replica too (it stays in the Service's endpoints as not
// ready), so an alert can say which replica is out and for how long.
func (m *Metrics) Ready(ready func() bool) error {
	if m == nil {
		return nil
	}
	return m.register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sts_issuer_ready", Help: "1 while the issuer is ready (what /readyz answers), else 0."},
		func() float64 {
			if ready() {
				return 1
			}
			return 0
		}))
}

// InFlight exports the exchanges waiting on the API server now and the most
// there ever were at once (a herd after an outage shows there).
func (m *Metrics) InFlight(now, peak func() int) error {
	if m == nil {
		return nil
	}
	return m.register(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sts_issuer_exchanges_in_flight", Help: "Exchanges being answered now."},
			func() float64 { return float64(now()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sts_issuer_exchanges_in_flight_peak", Help: "The most exchanges answered at once since the issuer started."},
			func() float64 { return float64(peak()) }))
}

// Pending exports the requests being answered now and their bound.
func (m *Metrics) Pending(now func() int, max int) error {
	if m == nil {
		return nil
	}
	return m.register(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sts_issuer_requests_pending", Help: "Requests of the exchange and discovery server being answered now."},
			func() float64 { return float64(now()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sts_issuer_requests_pending_max", Help: "The bound on requests being answered at once; beyond it the answer is 503."},
			func() float64 { return float64(max) }))
}

// KeyChange records a change this replica wrote to a managed key set.
func (m *Metrics) KeyChange(endpoint, kind string) {
	if m == nil {
		return
	}
	m.rotations.WithLabelValues(endpoint, kind).Inc()
}

// Published records one attempt to publish an endpoint's documents to a target.
func (m *Metrics) Published(endpoint, target, result string, at time.Time) {
	if m == nil {
		return
	}
	m.publishes.WithLabelValues(endpoint, target, result).Inc()
	if result != "error" {
		m.publishedAt.WithLabelValues(endpoint, target).Set(float64(at.UnixNano()) / 1e9)
	}
}
