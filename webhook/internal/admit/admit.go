package admit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/kube-sts/kube-sts/webhook/internal/config"
	"github.com/kube-sts/kube-sts/webhook/internal/inject"
)

// Metrics are the handler's collectors. kube-sts has one metrics pattern: a
// struct of collectors, no package-level state, every method safe on nil (so
// tests can leave it out), built on the registry its binary serves. The
// webhook's is controller-runtime's registry, which the manager serves on
// /metrics beside its webhook server's request metrics; sts-issuer, which
// has no manager, serves a registry of its own (issuer/internal/metrics).
type Metrics struct {
	admissions *prometheus.CounterVec
	duration   *prometheus.HistogramVec
}

// NewMetrics registers the handler's collectors on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sts_webhook_admissions_total",
			Help: "Pod admissions by injector (comma-separated when a Pod uses several) and result (injected, skipped, denied, error).",
		}, []string{"injector", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sts_webhook_admission_duration_seconds",
			Help:    "Time to decide one admission, by injector.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1},
		}, []string{"injector"}),
	}
	if err := errors.Join(reg.Register(m.admissions), reg.Register(m.duration)); err != nil {
		return nil, fmt.Errorf("register the webhook's metrics: %w", err)
	}
	return m, nil
}

func (m *Metrics) admission(injector, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.admissions.WithLabelValues(injector, result).Inc()
	m.duration.WithLabelValues(injector).Observe(d.Seconds())
}

// Handler mutates labeled Pods.
type Handler struct {
	Injectors []config.Injector
	// Native says, per injector name, whether to inject a native sidecar.
	Native  map[string]bool
	Decoder admission.Decoder
	Log     logr.Logger
	Metrics *Metrics // nil: none

	cas caFiles
}

// Handle implements admission.Handler.
func (h *Handler) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := time.Now()
	injector, result := "", "skipped"
	defer func() {
		h.Metrics.admission(injector, result, time.Since(start))
	}()
	if req.Operation != admissionv1.Create || req.Kind.Kind != "Pod" {
		return admission.Allowed("kube-sts only mutates Pods on create")
	}
	pod := &corev1.Pod{}
	if err := h.Decoder.Decode(req, pod); err != nil {
		result = "error"
		return admission.Errored(http.StatusBadRequest, err)
	}
	name := pod.Name
	if name == "" {
		name = pod.GenerateName + "*"
	}
	log := h.Log.WithValues("pod", name, "namespace", req.Namespace)
	injs, err := inject.Select(pod, h.Injectors)
	if err != nil {
		result = "denied"
		log.Info("denied", "reason", err.Error())
		return admission.Denied(err.Error())
	}
	if len(injs) == 0 {
		return admission.Allowed("no kube-sts label")
	}
	injector = inject.Names(injs)
	log = log.WithValues("injector", injector)
	// A Pod with several injectors gets a native sidecar only when each of
	// them would give it one.
	native := true
	for i, inj := range injs {
		native = native && h.Native[inj.Name]
		if inj.CAFile == "" {
			continue
		}
		// The mutation stays pure: the bundle is read here and handed in inline.
		pem, err := h.cas.read(inj.CAFile)
		if err != nil {
			result = "error"
			log.Error(err, "CA bundle unavailable")
			return admission.Errored(http.StatusInternalServerError, err)
		}
		withCA := *inj
		withCA.CAPEM, withCA.CAFile = pem, ""
		injs[i] = &withCA
	}
	mutated := pod.DeepCopy()
	if err := inject.Mutate(mutated, injs, native); err != nil {
		var d *inject.Denied
		if errors.As(err, &d) {
			result = "denied"
			log.Info("denied", "reason", d.Msg)
			return admission.Denied(d.Msg)
		}
		result = "error"
		return admission.Errored(http.StatusInternalServerError, err)
	}
	patch, err := injectionPatch(req.Object.Raw, pod, mutated)
	if err != nil {
		result = "error"
		return admission.Errored(http.StatusInternalServerError, err)
	}
	result = "injected"
	log.V(1).Info("injected", "native", native)
	return admission.Patched("", patch...)
}
