package review

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kube-sts/kube-sts/issuer/internal/metrics"
	"github.com/kube-sts/kube-sts/issuer/internal/satoken"
)

func pod(name, uid, sa string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID(uid), Labels: map[string]string{"app": name}},
		Spec:       corev1.PodSpec{ServiceAccountName: sa, NodeName: "node-1"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
}

func serviceAccount(name, uid string) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID(uid)}}
}

func binding(podName, podUID string) *satoken.Binding {
	return &satoken.Binding{Namespace: "ns", ServiceAccount: "sa", ServiceAccountUID: "sa-uid", Pod: podName, PodUID: podUID, Node: "node-1", NodeUID: "node-uid"}
}

// calls counts the API calls an exchange may make: gets and creates
// (TokenReviews), not the informers' lists and watches.
type calls struct{ n atomic.Int64 }

func (c *calls) count(cs *fake.Clientset) {
	for _, verb := range []string{"get", "create"} {
		cs.PrependReactor(verb, "*", func(k8stesting.Action) (bool, runtime.Object, error) {
			c.n.Add(1)
			return false, nil, nil
		})
	}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// startWatched runs a Watched over cs (lists, watches and lookups alike)
// until the test ends, and waits for its caches.
func startWatched(t *testing.T, cs, lookups *fake.Clientset, o WatchOptions) *Watched {
	t.Helper()
	o.Client, o.Lookups = cs, lookups
	if o.Timeout == 0 {
		o.Timeout = time.Second
	}
	w := NewWatched(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "the caches to sync", w.Fresh)
	return w
}

// watching waits until the caches' watches deliver: synced means listed,
// and a test's writes after that reach the caches only over the watches,
// which the fake clientset starts after its lists without replaying what
// happened in between. A write of our own (a Pod and a ServiceAccount no
// test looks up) must arrive in both caches first.
func watching(t *testing.T, cs *fake.Clientset, w *Watched) {
	t.Helper()
	name := fmt.Sprintf("barrier-%d", barriers.Add(1))
	if _, err := cs.CoreV1().ServiceAccounts("ns").Create(context.Background(), serviceAccount(name, name), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods("ns").Create(context.Background(), pod(name, name, name), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the watches to deliver", func() bool { return w.pods.get("ns", name) != nil && w.sas.get("ns", name) != nil })
}

// barriers names watching's barrier objects apart.
var barriers atomic.Int64

// waitFor polls cond for up to 30 s: under -race at the lowest priority
// beside the e2e suites (make test), a watch event took over 5 s to arrive.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func reasonOf(err error) string {
	var f *Failure
	if errors.As(err, &f) {
		return f.Reason
	}
	if err != nil {
		return "other: " + err.Error()
	}
	return ""
}

// TestWatchedNoAPICall: a live Pod's token is confirmed from the caches
// with no API call, with the Pod's node and labels (when kept).
func TestWatchedNoAPICall(t *testing.T) {
	cs := fake.NewClientset(pod("p", "uid-1", "sa"), serviceAccount("sa", "sa-uid"))
	var c calls
	c.count(cs)
	for _, labels := range []bool{false, true} {
		w := startWatched(t, cs, cs, WatchOptions{Labels: labels})
		before := c.n.Load()
		for range 100 {
			id, err := w.Review(context.Background(), "tok", "aud", binding("p", "uid-1"))
			if err != nil {
				t.Fatal(err)
			}
			if id.Node != "node-1" || id.PodName != "p" || id.TokenNodeUID != "node-uid" || (id.Labels["app"] == "p") != labels {
				t.Fatalf("labels %v: identity %+v", labels, id)
			}
		}
		if n := c.n.Load() - before; n != 0 {
			t.Fatalf("100 exchanges of a cached Pod made %d API calls, want 0", n)
		}
	}
}

// TestWatchedRefusals: what the watch sees is refused at once, without an
// API call: a deleted, terminating, finished or replaced Pod, a deleted
// ServiceAccount; a token bound to no Pod is refused without looking.
func TestWatchedRefusals(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(pod("p", "uid-1", "sa"), pod("q", "uid-q", "sa"), pod("r", "uid-r", "sa"), pod("s", "uid-s", "sa"), serviceAccount("sa", "sa-uid"))
	var c calls
	c.count(cs)
	w := startWatched(t, cs, cs, WatchOptions{})
	watching(t, cs, w)
	pods := cs.CoreV1().Pods("ns")

	if err := pods.Delete(ctx, "p", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	terminating := pod("q", "uid-q", "sa")
	terminating.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	finished := pod("r", "uid-r", "sa")
	finished.Status.Phase = corev1.PodSucceeded
	for _, p := range []*corev1.Pod{terminating, finished} {
		if _, err := pods.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := pods.Delete(ctx, "s", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Create(ctx, pod("s", "uid-s2", "sa"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the changes to reach the cache", func() bool {
		s, ok := w.pods.get("ns", "s").(*podState)
		r, _ := w.pods.get("ns", "r").(*podState)
		return ok && s.UID == "uid-s2" && r != nil && r.Phase == corev1.PodSucceeded && w.pods.get("ns", "p") == nil
	})
	before := c.n.Load()
	for _, tc := range []struct {
		b    *satoken.Binding
		want string
	}{
		{binding("p", "uid-1"), "pod_gone"},
		{binding("q", "uid-q"), "pod_terminating"},
		{binding("r", "uid-r"), "pod_finished"},
		{binding("s", "uid-s"), "pod_replaced"},
		{&satoken.Binding{Namespace: "ns", ServiceAccount: "sa", ServiceAccountUID: "sa-uid"}, "not_pod_bound"},
	} {
		_, err := w.Review(ctx, "tok", "aud", tc.b)
		if got := reasonOf(err); got != tc.want {
			t.Errorf("%s/%s: %q, want %q", tc.b.Pod, tc.b.PodUID, got, tc.want)
		}
	}
	if n := c.n.Load() - before; n != 0 {
		t.Errorf("refusals from the watch made %d API calls, want 0", n)
	}

	// The ServiceAccount deleted: refused from its tombstone, Pod or not.
	if _, err := pods.Create(ctx, pod("t", "uid-t", "sa"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cs.CoreV1().ServiceAccounts("ns").Delete(ctx, "sa", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the ServiceAccount's deletion", func() bool { return w.sas.deletedUID("sa-uid") })
	before = c.n.Load()
	if _, err := w.Review(ctx, "tok", "aud", binding("t", "uid-t")); reasonOf(err) != "serviceaccount_gone" {
		t.Errorf("deleted ServiceAccount: %v", err)
	}
	if n := c.n.Load() - before; n != 0 {
		t.Errorf("the deleted ServiceAccount's refusal made %d API calls, want 0", n)
	}
}

// TestWatchedNotCachedYet: an object the caches have not seen (created
// moments ago, or replaced) is read with a GET, never refused unseen; the
// GET decides.
func TestWatchedNotCachedYet(t *testing.T) {
	ctx := context.Background()
	watchedCluster := fake.NewClientset(serviceAccount("sa", "sa-old"))
	lookups := fake.NewClientset(pod("new", "uid-new", "sa"), serviceAccount("sa", "sa-uid"))
	var c calls
	c.count(lookups)
	w := startWatched(t, watchedCluster, lookups, WatchOptions{})
	id, err := w.Review(ctx, "tok", "aud", binding("new", "uid-new"))
	if err != nil || id.Node != "node-1" {
		t.Fatalf("a Pod the cache has not seen: %+v %v", id, err)
	}
	if n := c.n.Load(); n != 2 {
		t.Errorf("%d API calls, want 2 (the ServiceAccount and the Pod, one GET each)", n)
	}
	for _, tc := range []struct {
		b    *satoken.Binding
		want string
	}{
		{binding("missing", "uid-x"), "pod_gone"},
		{binding("new", "uid-other"), "pod_replaced"},
		{&satoken.Binding{Namespace: "ns", ServiceAccount: "sa", ServiceAccountUID: "sa-older", Pod: "new", PodUID: "uid-new"}, "serviceaccount_replaced"},
		{&satoken.Binding{Namespace: "ns", ServiceAccount: "gone", ServiceAccountUID: "u", Pod: "new", PodUID: "uid-new"}, "serviceaccount_gone"},
	} {
		if _, err := w.Review(ctx, "tok", "aud", tc.b); reasonOf(err) != tc.want {
			t.Errorf("%+v: %v, want %s", tc.b, err, tc.want)
		}
	}
}

// TestWatchedStaleFallsBack: while a watch has been down for longer than
// MaxStale, every exchange goes to TokenReview + Pod GET (never the cache);
// when the watch is back, the cache serves again.
func TestWatchedStaleFallsBack(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(pod("p", "uid-1", "sa"), serviceAccount("sa", "sa-uid"))
	var reviews atomic.Int64
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		reviews.Add(1)
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview).DeepCopy()
		tr.Status = authenticated("aud")
		return true, tr, nil
	})
	// The Pod watch: the first one is ours to break; while broken is set
	// the API server refuses new lists and watches.
	var (
		mu      sync.Mutex
		current *watch.RaceFreeFakeWatcher
		broken  bool
	)
	cs.PrependWatchReactor("pods", func(k8stesting.Action) (bool, watch.Interface, error) {
		mu.Lock()
		defer mu.Unlock()
		if broken {
			return true, nil, errors.New("connection refused")
		}
		current = watch.NewRaceFreeFake()
		return true, current, nil
	})
	cs.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		if broken {
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil
	})
	clock := &fakeClock{t: time.Unix(1000, 0)}
	w := startWatched(t, cs, cs, WatchOptions{MaxStale: 2 * time.Second, Now: clock.now})

	mu.Lock()
	broken = true
	current.Stop()
	mu.Unlock()
	waitFor(t, "the watch to close", func() bool { return w.pods.open.Load() == 0 })
	clock.add(time.Second)
	if !w.Fresh() {
		t.Fatal("stale 1s after the watch closed, with MaxStale 2s")
	}
	if _, err := w.Review(ctx, "tok", "aud", binding("p", "uid-1")); err != nil || reviews.Load() != 0 {
		t.Fatalf("within MaxStale: %v, %d TokenReviews (want the cache, 0)", err, reviews.Load())
	}
	clock.add(1500 * time.Millisecond)
	if w.Fresh() {
		t.Fatal("fresh 2.5s after the watch closed, with MaxStale 2s")
	}
	if !strings.Contains(w.Status(), "pods stale") {
		t.Errorf("status %q", w.Status())
	}
	if _, err := w.Review(ctx, "tok", "aud", binding("p", "uid-1")); err != nil || reviews.Load() != 1 {
		t.Fatalf("stale: %v, %d TokenReviews (want 1)", err, reviews.Load())
	}
	mu.Lock()
	broken = false
	mu.Unlock()
	waitFor(t, "the watch to reopen", w.Fresh)
	if _, err := w.Review(ctx, "tok", "aud", binding("p", "uid-1")); err != nil || reviews.Load() != 1 {
		t.Fatalf("watch back: %v, %d TokenReviews (want still 1)", err, reviews.Load())
	}
}

// TestTombstonesExpire: a deleted UID is remembered for tombstoneTTL, and
// pruned after it.
func TestTombstonesExpire(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	w := &watched{gone: map[types.UID]time.Time{}, now: clock.now}
	w.deleted(pod("a", "uid-a", "sa"))
	clock.add(tombstoneTTL - time.Second)
	if !w.deletedUID("uid-a") {
		t.Fatal("forgotten before tombstoneTTL")
	}
	clock.add(2 * time.Second)
	if w.deletedUID("uid-a") {
		t.Fatal("remembered after tombstoneTTL")
	}
	w.deleted(pod("b", "uid-b", "sa"))
	if _, ok := w.gone["uid-a"]; ok || len(w.gone) != 1 {
		t.Fatalf("not pruned: %v", w.gone)
	}
}

// TestFallbackReasonsExported: every fallback reason is exported at 0 from
// the start (the metrics package lists them; this keeps the lists one).
func TestFallbackReasonsExported(t *testing.T) {
	m, err := metrics.New()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Watch(func() bool { return true }, func() (int, int) { return 0, 0 }); err != nil {
		t.Fatal(err)
	}
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, f := range families {
		if f.GetName() == "sts_issuer_watch_fallbacks_total" {
			for _, s := range f.GetMetric() {
				got[s.GetLabel()[0].GetValue()] = true
			}
		}
	}
	for _, reason := range []string{FallbackStale, FallbackUnverified, FallbackPod, FallbackServiceAccount} {
		if !got[reason] {
			t.Errorf("sts_issuer_watch_fallbacks_total{reason=%q} is not exported from the start (exported: %v)", reason, got)
		}
	}
	if len(got) != 4 {
		t.Errorf("exported reasons %v, want the 4 of package review", got)
	}
}

// TestWaitSynced: WaitSynced returns true once both caches synced, false
// when its context ends first (a list the API server refuses).
func TestWaitSynced(t *testing.T) {
	cs := fake.NewClientset(pod("p", "uid-1", "sa"), serviceAccount("sa", "sa-uid"))
	cs.PrependReactor("list", "serviceaccounts", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("forbidden")
	})
	w := NewWatched(WatchOptions{Client: cs, Lookups: cs, Timeout: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	if w.WaitSynced(short) {
		t.Fatal("synced although the ServiceAccount list fails")
	}
	ok := fake.NewClientset(pod("p", "uid-1", "sa"), serviceAccount("sa", "sa-uid"))
	w2 := startWatched(t, ok, ok, WatchOptions{})
	if !w2.WaitSynced(context.Background()) {
		t.Fatal("not synced")
	}
}
