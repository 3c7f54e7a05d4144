package app

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/kube-sts/kube-sts/shared/contract"
)

// MutateServiceAccountPath is where the registration entry of the
// namespaces that enable ServiceAccount opt-in sends every Pod create.
const MutateServiceAccountPath = "/mutate-serviceaccount"

// liveLookupTimeout bounds the one API call a Pod whose ServiceAccount is
// not in the cache yet costs (the admission's own timeout is the
// registration's timeoutSeconds, 5 s in the chart).
const liveLookupTimeout = 2 * time.Second

// serviceAccounts reads ServiceAccounts' metadata from a watched cache: no
// API call per admission. A ServiceAccount the cache does not hold (created
// a moment before its first Pod, and its watch event not here yet) is read
// from the API server, as the API server's own ServiceAccount admission
// plugin does: the answer never depends on the watch's timing. An error
// reading it fails the admission (failurePolicy decides what the API server
// makes of that), so a Pod is never admitted without a sidecar its
// ServiceAccount asks for.
type serviceAccounts struct {
	cache  client.Reader // the manager's cache: metadata informer, managed fields stripped
	live   client.Reader // the manager's API reader
	synced atomic.Bool
	misses atomic.Int64 // live lookups: sts_webhook_serviceaccount_live_lookups_total
}

func newServiceAccountMeta() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ServiceAccount"))
	return m
}

// InjectAnnotation implements admit.ServiceAccounts.
func (s *serviceAccounts) InjectAnnotation(ctx context.Context, namespace, name string) (string, error) {
	key := client.ObjectKey{Namespace: namespace, Name: name}
	sa := newServiceAccountMeta()
	err := s.cache.Get(ctx, key, sa)
	if apierrors.IsNotFound(err) {
		s.misses.Add(1)
		ctx, cancel := context.WithTimeout(ctx, liveLookupTimeout)
		defer cancel()
		sa = newServiceAccountMeta()
		err = s.live.Get(ctx, key, sa)
		if apierrors.IsNotFound(err) {
			// The API server's ServiceAccount admission refuses such a Pod
			// before webhooks run; nothing to inject either way.
			return "", nil
		}
	}
	if err != nil {
		return "", err
	}
	return sa.GetAnnotations()[contract.AnnotationInject], nil
}

// start begins the ServiceAccount watch with the manager and marks the
// reader synced once the informer has listed every ServiceAccount; the
// readiness check waits for that, so no admission reaches a replica whose
// cache is still filling.
func (s *serviceAccounts) start(mgr manager.Manager) error {
	return mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		inf, err := mgr.GetCache().GetInformer(ctx, newServiceAccountMeta())
		if err != nil {
			return fmt.Errorf("watch ServiceAccounts: %w", err)
		}
		if !toolscache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			return nil // stopping
		}
		s.synced.Store(true)
		<-ctx.Done()
		return nil
	}))
}

// liveLookups counts the ServiceAccounts read from the API server because
// the cache did not hold them: a few after ServiceAccounts are created;
// a steady rate means the watch lags.
func (s *serviceAccounts) liveLookups() prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "sts_webhook_serviceaccount_live_lookups_total",
		Help: "ServiceAccounts read from the API server because the watched cache did not hold them yet (ServiceAccount opt-in).",
	}, func() float64 { return float64(s.misses.Load()) })
}

// ready is the readiness check of ServiceAccount opt-in.
func (s *serviceAccounts) ready(*http.Request) error {
	if !s.synced.Load() {
		return errors.New("ServiceAccount cache not synced yet")
	}
	return nil
}
