package review

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// podState is what the issuer needs of a Pod, and all the watched cache
// keeps of one: the Pod's name, namespace, UID, deletion mark and (when an
// endpoint reads them) labels, its ServiceAccount, node and phase.
type podState struct {
	metav1.ObjectMeta
	ServiceAccount string
	Node           string
	Phase          corev1.PodPhase
}

func stateOf(p *corev1.Pod, labels bool) *podState {
	s := &podState{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID,
			ResourceVersion: p.ResourceVersion, DeletionTimestamp: p.DeletionTimestamp},
		ServiceAccount: p.Spec.ServiceAccountName, Node: p.Spec.NodeName, Phase: p.Status.Phase,
	}
	if labels {
		s.Labels = p.Labels
	}
	return s
}

// saState is what the cache keeps of a ServiceAccount: its name and UID.
type saState struct{ metav1.ObjectMeta }

// The cached states are stored by the informer as they are; these make them
// runtime.Objects for client-go's type checks (and its mutation detector).
func (s *podState) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }
func (s *podState) DeepCopyObject() runtime.Object {
	c := *s
	s.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	return &c
}
func (s *saState) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }
func (s *saState) DeepCopyObject() runtime.Object {
	c := *s
	s.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	return &c
}

// watched is one informer (Pods or ServiceAccounts) that knows whether it is
// current: synced, and its watch open or closed for less than maxStale.
// Deletions are remembered (by UID) for tombstoneTTL, so that a deleted
// object's token is refused from memory while it is still valid.
type watched struct {
	informer cache.SharedIndexInformer
	// open counts watches in progress; current is when the cache was last
	// known complete without one (a list done, a watch ended), unix ns.
	open    atomic.Int32
	current atomic.Int64
	// count is the objects in the cache, kept by the event handlers.
	count atomic.Int64

	mu     sync.Mutex
	gone   map[types.UID]time.Time
	pruned time.Time
	now    func() time.Time
}

// tombstoneTTL is how long a deleted object's UID is remembered. After it a
// leftover token still gets refused, by a GET (see Watched.pod).
const tombstoneTTL = 10 * time.Minute

// newWatched builds an informer over list and watch whose objects pass
// through transform before they are stored.
func newWatched(example runtime.Object, list cache.ListWithContextFunc, watchFn cache.WatchFuncWithContext,
	transform cache.TransformFunc, client any, now func() time.Time) *watched {
	w := &watched{gone: map[types.UID]time.Time{}, now: now}
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			obj, err := list(ctx, o)
			if err == nil {
				w.current.Store(w.now().UnixNano())
			}
			return obj, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			wi, err := watchFn(ctx, o)
			if err != nil {
				return nil, err
			}
			return w.track(wi), nil
		},
	}
	w.informer = cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, client), example, 0, cache.Indexers{})
	_ = w.informer.SetTransform(transform)
	_, _ = w.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { w.count.Add(1) },
		DeleteFunc: w.deleted,
	})
	return w
}

// fresh reports whether the cache may be trusted: synced, and its watch
// open, or closed for less than maxStale (the reflector reopens it at
// once unless the API server is gone).
func (w *watched) fresh(maxStale time.Duration) bool {
	if !w.informer.HasSynced() {
		return false
	}
	if w.open.Load() > 0 {
		return true
	}
	at := w.current.Load()
	return at != 0 && w.now().Sub(time.Unix(0, at)) < maxStale
}

// get returns the cached object namespace/name, or nil.
func (w *watched) get(namespace, name string) any {
	obj, ok, err := w.informer.GetIndexer().GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil
	}
	return obj
}

// deletedUID reports whether uid was seen deleted within tombstoneTTL.
func (w *watched) deletedUID(uid string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	at, ok := w.gone[types.UID(uid)]
	return ok && w.now().Sub(at) < tombstoneTTL
}

func (w *watched) deleted(obj any) {
	w.count.Add(-1)
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return
	}
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.gone[m.GetUID()] = now
	// Pruned as deletions come in, at most once a minute: the map holds
	// about tombstoneTTL's worth of deletions.
	if now.Sub(w.pruned) < time.Minute {
		return
	}
	w.pruned = now
	for uid, at := range w.gone {
		if now.Sub(at) >= tombstoneTTL {
			delete(w.gone, uid)
		}
	}
}

// track counts wi as open until its result channel closes.
func (w *watched) track(wi watch.Interface) watch.Interface {
	w.open.Add(1)
	t := &trackedWatch{inner: wi, out: make(chan watch.Event), stop: make(chan struct{})}
	go func() {
		defer func() {
			w.current.Store(w.now().UnixNano())
			w.open.Add(-1)
			close(t.out)
		}()
		for ev := range wi.ResultChan() {
			select {
			case t.out <- ev:
			case <-t.stop:
				return
			}
		}
	}()
	return t
}

type trackedWatch struct {
	inner    watch.Interface
	out      chan watch.Event
	stop     chan struct{}
	stopOnce sync.Once
}

func (t *trackedWatch) ResultChan() <-chan watch.Event { return t.out }

func (t *trackedWatch) Stop() {
	t.stopOnce.Do(func() {
		t.inner.Stop()
		close(t.stop)
	})
}
