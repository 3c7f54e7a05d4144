package admit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/kube-sts/kube-sts/shared/contract"
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

// Handler mutates labeled Pods, and with ServiceAccounts set the Pods whose
// ServiceAccount opts in.
type Handler struct {
	Injectors []config.Injector
	// Native says, per injector name, whether to inject a native sidecar.
	Native  map[string]bool
	Decoder admission.Decoder
	Log     logr.Logger
	Metrics *Metrics // nil: none
	// ServiceAccounts, when set, reads the kube-sts.io/inject annotation of
	// each Pod's ServiceAccount (inject.Select): the handler behind the
	// registration entry of the namespaces that enable ServiceAccount
	// opt-in, which sends every Pod create there, labeled or not. nil: Pod
	// labels only (the per-injector entries select labeled Pods).
	ServiceAccounts ServiceAccounts

	cas caFiles
}

// ServiceAccounts answers what a ServiceAccount's kube-sts.io/inject
// annotation says ("" when it has none or does not exist).
type ServiceAccounts interface {
	InjectAnnotation(ctx context.Context, namespace, name string) (string, error)
}

// podHead is the part of a Pod that decides whether the ServiceAccount
// handler has anything to do: decoding only this keeps the answer for the
// many Pods of an enabled namespace that ask for nothing cheap.
type podHead struct {
	Metadata struct {
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		ServiceAccountName string `json:"serviceAccountName"`
	} `json:"spec"`
}

// fromServiceAccount returns the injector names the Pod's ServiceAccount
// asks for, and whether the Pod asks for anything at all (a label of ours
// or the annotation); an error when the ServiceAccount cannot be read.
func (h *Handler) fromServiceAccount(ctx context.Context, req admission.Request) ([]string, bool, error) {
	var head podHead
	if err := json.Unmarshal(req.Object.Raw, &head); err != nil {
		return nil, true, nil // the full decode reports it
	}
	labeled := false
	for k := range head.Metadata.Labels {
		if strings.HasPrefix(k, contract.Prefix) {
			labeled = true
			break
		}
	}
	sa := inject.ServiceAccountName(head.Spec.ServiceAccountName)
	v, err := h.ServiceAccounts.InjectAnnotation(ctx, req.Namespace, sa)
	if err != nil {
		return nil, labeled, fmt.Errorf("read ServiceAccount %s/%s to see whether it opts in (annotation %s): %w", req.Namespace, sa, contract.AnnotationInject, err)
	}
	names := contract.ParseInject(v)
	return names, labeled || len(names) > 0, nil
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
	var fromSA []string
	if h.ServiceAccounts != nil {
		names, asks, err := h.fromServiceAccount(ctx, req)
		if err != nil {
			// Deterministic: never admitted without the sidecar it may ask for.
			result = "error"
			h.Log.Error(err, "ServiceAccount unavailable", "namespace", req.Namespace)
			return admission.Errored(http.StatusServiceUnavailable, err)
		}
		if !asks {
			return admission.Allowed("no kube-sts label and no ServiceAccount opt-in")
		}
		fromSA = names
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
	injs, err := inject.Select(pod, h.Injectors, fromSA)
	if err != nil {
		result = "denied"
		log.Info("denied", "reason", err.Error())
		return admission.Denied(err.Error())
	}
	if len(injs) == 0 {
		return admission.Allowed("no kube-sts injector asked for")
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
