package review

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// cluster is a fake API server with one live Pod p of ServiceAccount sa;
// answer decides each TokenReview after counting it.
func cluster(reviews *atomic.Int64, answer func(tr *authnv1.TokenReview)) *fake.Clientset {
	cs := fake.NewClientset(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "uid-1"},
		Spec:       corev1.PodSpec{ServiceAccountName: "sa"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	})
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		reviews.Add(1)
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview).DeepCopy()
		answer(tr)
		return true, tr, nil
	})
	return cs
}

// authenticated is the status of p's token for audience.
func authenticated(audience string) authnv1.TokenReviewStatus {
	return authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{audience}, User: authnv1.UserInfo{
		Username: "system:serviceaccount:ns:sa",
		Extra:    map[string]authnv1.ExtraValue{ExtraPodName: {"p"}, ExtraPodUID: {"uid-1"}},
	}}
}

// TestCoalescingKeyIncludesAudience: the same token sent to two endpoints
// with different subject audiences at the same moment is judged by two
// reviews, each with its own audience. The API server here accepts the token
// for audience "a" only and answers slowly, so the two requests overlap.
func TestCoalescingKeyIncludesAudience(t *testing.T) {
	var reviews atomic.Int64
	cs := cluster(&reviews, func(tr *authnv1.TokenReview) {
		time.Sleep(300 * time.Millisecond)
		if len(tr.Spec.Audiences) == 1 && tr.Spec.Audiences[0] == "a" {
			tr.Status = authenticated("a")
		}
	})
	r := New(cs, 5*time.Second, nil)
	var wg sync.WaitGroup
	errs := map[string]error{}
	var mu sync.Mutex
	for i, aud := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 50 * time.Millisecond) // b starts while a's review is in flight
			_, err := r.Review(context.Background(), "the-same-token", aud, nil)
			mu.Lock()
			errs[aud] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	if errs["a"] != nil {
		t.Fatalf("audience a: %v", errs["a"])
	}
	if errs["b"] == nil {
		t.Fatal("audience b was accepted: it shared the review of audience a")
	}
	if n := reviews.Load(); n != 2 {
		t.Fatalf("%d TokenReviews, want one per audience", n)
	}
}

// TestIdenticalReviewsCoalesce: the same token for the same audience at the
// same moment costs exactly one review.
func TestIdenticalReviewsCoalesce(t *testing.T) {
	var reviews atomic.Int64
	release := make(chan struct{})
	cs := cluster(&reviews, func(tr *authnv1.TokenReview) {
		<-release
		tr.Status = authenticated("a")
	})
	r := New(cs, 5*time.Second, nil)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.Review(context.Background(), "tok", "a", nil); err != nil {
				failed.Add(1)
			}
		}()
	}
	// Let all eight join the flight, then answer.
	deadline := time.Now().Add(5 * time.Second)
	for reviews.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d reviews failed", failed.Load())
	}
	if n := reviews.Load(); n != 1 {
		t.Fatalf("%d TokenReviews for 8 identical concurrent reviews, want exactly 1", n)
	}
}
