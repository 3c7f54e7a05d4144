package review

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-sts/kube-sts/issuer/internal/metrics"
	"github.com/kube-sts/kube-sts/issuer/internal/satoken"
)

// Modes of confirming a subject token's Pod (--review).
const (
	// ModeTokenReview asks the API server each time: a TokenReview and a
	// Pod GET per exchange. It needs create tokenreviews and get pods.
	ModeTokenReview = "tokenreview"
	// ModeWatch verifies the token locally (satoken) and reads the Pod and
	// ServiceAccount from watched caches: no API call per exchange in
	// steady state. It needs list/watch on pods and serviceaccounts
	// cluster-wide, and get on both for what the caches have not seen yet.
	ModeWatch = "watch"
)

// Modes lists the modes, the default first.
var Modes = []string{ModeTokenReview, ModeWatch}

// Fallback reasons (sts_issuer_watch_fallbacks_total): why an exchange in
// watch mode cost API calls.
const (
	// FallbackStale: a cache was not synced, or its watch had been down for
	// longer than --watch-max-stale; the exchange used TokenReview + GET.
	FallbackStale = "stale"
	// FallbackUnverified: the token was not verified locally (no binding).
	FallbackUnverified = "unverified"
	// FallbackPod, FallbackServiceAccount: the cache had not seen the
	// token's Pod (or ServiceAccount) with the token's UID: one GET.
	FallbackPod            = "pod_not_cached"
	FallbackServiceAccount = "serviceaccount_not_cached"
)

// DefaultMaxStale is how long a broken watch's cache is still trusted.
const DefaultMaxStale = 2 * time.Second

// Watched confirms a locally verified token's Pod and ServiceAccount from
// watched caches. It fails closed: a cache that is not current sends the
// exchange to the TokenReview path, and an object the cache has not seen
// (a Pod created moments ago) is read with a GET, never refused unseen.
type Watched struct {
	pods, sas *watched
	client    kubernetes.Interface
	timeout   time.Duration
	maxStale  time.Duration
	metrics   *metrics.Metrics
	fallback  *Reviewer
}

// WatchOptions configure a Watched reviewer.
type WatchOptions struct {
	// Client lists and watches; Lookups makes the GETs and the fallback's
	// TokenReviews (with the exchange QPS limit).
	Client, Lookups kubernetes.Interface
	// Timeout bounds each GET and TokenReview.
	Timeout time.Duration
	// MaxStale is how long a cache whose watch broke is still trusted
	// (DefaultMaxStale when 0).
	MaxStale time.Duration
	// Labels keeps Pod labels in the cache (an endpoint reads them).
	Labels  bool
	Metrics *metrics.Metrics
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// NewWatched builds the caches; Run fills and keeps them.
func NewWatched(o WatchOptions) *Watched {
	if o.MaxStale <= 0 {
		o.MaxStale = DefaultMaxStale
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	core := o.Client.CoreV1()
	w := &Watched{client: o.Lookups, timeout: o.Timeout, maxStale: o.MaxStale, metrics: o.Metrics,
		fallback: New(o.Lookups, o.Timeout, o.Metrics)}
	w.pods = newWatched(&corev1.Pod{},
		func(ctx context.Context, lo metav1.ListOptions) (runtime.Object, error) {
			return core.Pods(metav1.NamespaceAll).List(ctx, lo)
		},
		func(ctx context.Context, lo metav1.ListOptions) (watch.Interface, error) {
			return core.Pods(metav1.NamespaceAll).Watch(ctx, lo)
		},
		func(obj any) (any, error) {
			if p, ok := obj.(*corev1.Pod); ok {
				return stateOf(p, o.Labels), nil
			}
			return obj, nil
		}, o.Client, o.Now)
	w.sas = newWatched(&corev1.ServiceAccount{},
		func(ctx context.Context, lo metav1.ListOptions) (runtime.Object, error) {
			return core.ServiceAccounts(metav1.NamespaceAll).List(ctx, lo)
		},
		func(ctx context.Context, lo metav1.ListOptions) (watch.Interface, error) {
			return core.ServiceAccounts(metav1.NamespaceAll).Watch(ctx, lo)
		},
		func(obj any) (any, error) {
			if sa, ok := obj.(*corev1.ServiceAccount); ok {
				return &saState{metav1.ObjectMeta{Name: sa.Name, Namespace: sa.Namespace, UID: sa.UID, ResourceVersion: sa.ResourceVersion}}, nil
			}
			return obj, nil
		}, o.Client, o.Now)
	return w
}

// Run fills the caches and keeps them current until ctx ends; it returns
// when both informers have stopped.
func (w *Watched) Run(ctx context.Context) {
	done := make(chan struct{})
	go func() { w.sas.informer.RunWithContext(ctx); close(done) }()
	w.pods.informer.RunWithContext(ctx)
	<-done
}

// Synced reports whether both caches hold a complete list.
func (w *Watched) Synced() bool { return w.pods.informer.HasSynced() && w.sas.informer.HasSynced() }

// WaitSynced waits until Synced or ctx ends, and says which.
func (w *Watched) WaitSynced(ctx context.Context) bool {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !w.Synced() {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return true
}

// Fresh reports whether both caches may be trusted now.
func (w *Watched) Fresh() bool { return w.pods.fresh(w.maxStale) && w.sas.fresh(w.maxStale) }

// Status is one line for /readyz?verbose.
func (w *Watched) Status() string {
	var s []string
	for _, c := range []struct {
		name string
		w    *watched
	}{{"pods", w.pods}, {"serviceaccounts", w.sas}} {
		switch {
		case !c.w.informer.HasSynced():
			s = append(s, c.name+" not synced yet")
		case !c.w.fresh(w.maxStale):
			s = append(s, c.name+" stale (watch down)")
		default:
			s = append(s, fmt.Sprintf("%s current (%d)", c.name, c.w.count.Load()))
		}
	}
	msg := "review mode watch: " + strings.Join(s, ", ")
	if !w.Fresh() {
		msg += "; exchanges use TokenReview and Pod GET meanwhile"
	}
	return msg
}

// Review confirms the token's Pod from the caches. The token must have been
// verified locally (bound is what that read from it).
func (w *Watched) Review(ctx context.Context, token, audience string, bound *satoken.Binding) (Identity, error) {
	if bound == nil {
		w.metrics.WatchFallback(FallbackUnverified)
		return w.fallback.Review(ctx, token, audience, nil)
	}
	id := Identity{Namespace: bound.Namespace, ServiceAccount: bound.ServiceAccount, PodName: bound.Pod, PodUID: bound.PodUID,
		TokenNode: bound.Node, TokenNodeUID: bound.NodeUID}
	if !bound.PodBound() {
		return id, notPodBound(id)
	}
	if !w.Fresh() {
		w.metrics.WatchFallback(FallbackStale)
		return w.fallback.Review(ctx, token, audience, bound)
	}
	if f := w.serviceAccount(ctx, id, bound.ServiceAccountUID); f != nil {
		return id, f
	}
	p, f := w.pod(ctx, id)
	if f != nil {
		return id, f
	}
	id.Node, id.Labels = p.Node, p.Labels
	return id, nil
}

// serviceAccount confirms that the token's ServiceAccount (with its UID)
// exists: from the cache, else by a GET.
func (w *Watched) serviceAccount(ctx context.Context, id Identity, uid string) *Failure {
	if sa, ok := w.sas.get(id.Namespace, id.ServiceAccount).(*saState); ok && string(sa.UID) == uid {
		return nil
	}
	if w.sas.deletedUID(uid) {
		return saGone(id)
	}
	w.metrics.WatchFallback(FallbackServiceAccount)
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	start := time.Now()
	sa, err := w.client.CoreV1().ServiceAccounts(id.Namespace).Get(ctx, id.ServiceAccount, metav1.GetOptions{})
	w.metrics.APICall("serviceaccount", result(err), time.Since(start))
	switch {
	case apierrors.IsNotFound(err):
		return saGone(id)
	case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
		return misconfigured("serviceaccount_forbidden", id, "the issuer is not allowed to get serviceaccounts; check its RBAC (review mode watch)")
	case err != nil:
		return unavailable("serviceaccount_unavailable", id, "the API server did not answer the ServiceAccount lookup (%s); retry", short(err))
	case string(sa.UID) != uid:
		return refuse("serviceaccount_replaced", id, "ServiceAccount %s/%s was replaced: the token belongs to an earlier ServiceAccount of that name", id.Namespace, id.ServiceAccount)
	}
	return nil
}

func saGone(id Identity) *Failure {
	return refuse("serviceaccount_gone", id, "ServiceAccount %s/%s no longer exists", id.Namespace, id.ServiceAccount)
}

// pod returns the token's live Pod: from the cache, else by a GET.
func (w *Watched) pod(ctx context.Context, id Identity) (*podState, *Failure) {
	cached, _ := w.pods.get(id.Namespace, id.PodName).(*podState)
	if cached != nil && string(cached.UID) == id.PodUID {
		return cached, checkPod(id, cached)
	}
	if w.pods.deletedUID(id.PodUID) {
		if cached != nil {
			return nil, checkPod(id, cached) // another UID: replaced
		}
		return nil, podGone(id)
	}
	w.metrics.WatchFallback(FallbackPod)
	pod, f := getPod(ctx, w.client, w.timeout, w.metrics, id)
	if f != nil {
		return nil, f
	}
	p := stateOf(pod, true)
	return p, checkPod(id, p)
}

// Objects counts the cached Pods and ServiceAccounts.
func (w *Watched) Objects() (pods, serviceAccounts int) {
	return int(w.pods.count.Load()), int(w.sas.count.Load())
}
