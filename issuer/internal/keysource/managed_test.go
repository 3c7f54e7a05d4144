package keysource

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kube-sts/kube-sts/issuer/internal/keys"
)

func storedIDs(t *testing.T, cs *fake.Clientset) []string {
	t.Helper()
	sec, err := cs.CoreV1().Secrets("kube-sts").Get(context.Background(), "keys", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var st stored
	if err := json.Unmarshal(sec.Data[SecretKey], &st); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range st.Keys {
		out = append(out, r.ID)
	}
	return out
}

// TestManagedSecretDeletedWritesBack: deleting the key Secret under a
// running issuer does not mint a key that signs at once while the published
// ones vanish: the replica writes back the keys it holds.
func TestManagedSecretDeletedWritesBack(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	now := time.Unix(1_800_000_000, 0)
	var sets []*keys.Set
	src := NewManagedSource(ManagedOptions{
		Client: cs, Namespace: "kube-sts", Secret: "keys", Endpoint: "vault",
		Schedule: keys.Schedule{Algorithm: keys.ES256, RotateEvery: time.Hour, PublishAhead: 10 * time.Minute, RetireAfter: 20 * time.Minute},
		Resync:   time.Second, Log: zap.NewNop(), OnChange: func(s *keys.Set) { sets = append(sets, s) },
		Now: func() time.Time { return now },
	})
	if err := src.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	before := storedIDs(t, cs)
	signing := sets[len(sets)-1].Signing.ID

	if err := cs.CoreV1().Secrets("kube-sts").Delete(ctx, "keys", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	if err := src.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	after := storedIDs(t, cs)
	if len(after) != len(before) || after[0] != before[0] {
		t.Fatalf("Secret recreated with %v, want the held keys %v", after, before)
	}
	if got := sets[len(sets)-1].Signing.ID; got != signing {
		t.Fatalf("signing key changed from %s to %s after the Secret was deleted", signing[:8], got[:8])
	}
}

// sharing returns a clientset of its own (own reactor lock) on cs's objects:
// another replica, which a reactor of cs may call without deadlocking.
func sharing(cs *fake.Clientset) *fake.Clientset {
	other := fake.NewClientset()
	other.Fake.ReactionChain = []k8stesting.Reactor{&k8stesting.SimpleReactor{Verb: "*", Resource: "*", Reaction: k8stesting.ObjectReaction(cs.Tracker())}}
	return other
}

func newTestSource(cs *fake.Clientset, now *time.Time, sets *[]*keys.Set) *ManagedSource {
	return NewManagedSource(ManagedOptions{
		Client: cs, Namespace: "kube-sts", Secret: "keys", Endpoint: "vault",
		Schedule: keys.Schedule{Algorithm: keys.ES256, RotateEvery: time.Hour, PublishAhead: 10 * time.Minute, RetireAfter: 20 * time.Minute},
		Resync:   time.Second, Log: zap.NewNop(), OnChange: func(s *keys.Set) { *sets = append(*sets, s) },
		Now: func() time.Time { return *now },
	})
}

// TestManagedConflictRetried: another replica's write between our read and
// our update (409) makes this replica read again and plan on top of it; it
// does not fail and does not overwrite the other's key.
func TestManagedConflictRetried(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	now := time.Unix(1_800_000_000, 0)
	var setsA, setsB []*keys.Set
	a, b := newTestSource(sharing(cs), &now, &setsA), newTestSource(cs, &now, &setsB)
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// Time for a successor: both plan one; B's update meets a conflict once
	// because A wrote in between.
	now = now.Add(55 * time.Minute)
	conflicts := 0
	cs.PrependReactor("update", "secrets", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if conflicts == 0 {
			conflicts++
			if err := a.Sync(ctx); err != nil { // A writes first, inside B's attempt
				t.Errorf("A: %v", err)
			}
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, "keys", errors.New("the object has been modified"))
		}
		return false, nil, nil
	})
	if err := b.Sync(ctx); err != nil {
		t.Fatalf("B after a conflict: %v", err)
	}
	ids := storedIDs(t, cs)
	if len(ids) != 2 {
		t.Fatalf("%d keys stored, want the first key and one successor", len(ids))
	}
	if setsA[len(setsA)-1].Keys[1].ID != setsB[len(setsB)-1].Keys[1].ID {
		t.Fatal("the replicas publish different successors")
	}
}

// TestManagedRacingFirstWrite: two replicas start on no Secret; the second
// create meets AlreadyExists and adopts the first one's key.
func TestManagedRacingFirstWrite(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	now := time.Unix(1_800_000_000, 0)
	var setsA, setsB []*keys.Set
	a, b := newTestSource(sharing(cs), &now, &setsA), newTestSource(cs, &now, &setsB)
	raced := false
	cs.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if !raced {
			raced = true
			if err := a.Sync(ctx); err != nil { // A creates first, inside B's attempt
				t.Errorf("A: %v", err)
			}
			return true, nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "secrets"}, "keys")
		}
		return false, nil, nil
	})
	if err := b.Sync(ctx); err != nil {
		t.Fatalf("B: %v", err)
	}
	if setsA[0].Signing.ID != setsB[0].Signing.ID {
		t.Fatal("the replicas sign with different first keys")
	}
	if ids := storedIDs(t, cs); len(ids) != 1 {
		t.Fatalf("%d keys stored, want 1", len(ids))
	}
}

// TestManagedCorruptSecret: a Secret that does not parse is an error and
// the keys held before keep serving; nothing is overwritten.
func TestManagedCorruptSecret(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	now := time.Unix(1_800_000_000, 0)
	var sets []*keys.Set
	src := newTestSource(cs, &now, &sets)
	if err := src.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	sec, err := cs.CoreV1().Secrets("kube-sts").Get(ctx, "keys", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data[SecretKey] = []byte("{not json")
	if _, err := cs.CoreV1().Secrets("kube-sts").Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := src.Sync(ctx); err == nil || !strings.Contains(err.Error(), "keys.json is not valid") {
		t.Fatalf("corrupt Secret: %v", err)
	}
	if len(sets) != 1 {
		t.Fatalf("the set changed on a corrupt Secret (%d sets)", len(sets))
	}
	after, _ := cs.CoreV1().Secrets("kube-sts").Get(ctx, "keys", metav1.GetOptions{})
	if string(after.Data[SecretKey]) != "{not json" {
		t.Fatal("the corrupt Secret was overwritten")
	}
}

// TestManagedStartRetriesFirstSync: while the API server refuses, Start
// retries the first sync; once it answers, keys arrive and the source runs
// on until the context ends.
func TestManagedStartRetriesFirstSync(t *testing.T) {
	cs := fake.NewClientset()
	failures := 3
	cs.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if failures > 0 {
			failures--
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil
	})
	got := make(chan *keys.Set, 10)
	src := NewManagedSource(ManagedOptions{
		Client: cs, Namespace: "kube-sts", Secret: "keys", Endpoint: "vault",
		Schedule: keys.Schedule{Algorithm: keys.ES256, RotateEvery: time.Hour, PublishAhead: 10 * time.Minute, RetireAfter: 20 * time.Minute},
		Resync:   time.Hour, Log: zap.NewNop(), OnChange: func(s *keys.Set) { got <- s },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Start(ctx, time.Millisecond) }()
	select {
	case s := <-got:
		if s.Signing == nil {
			t.Fatal("a set without a signing key")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no keys after the API server answered")
	}
	if failures != 0 {
		t.Fatalf("%d failures left: the first sync was not retried", failures)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Start did not return after the context ended")
	}
}

// TestManagedRecoveryPublishesBeforeSigning is the soak's failure: a key is
// written shortly before the API server becomes unreachable; a replica
// whose periodic sync fell inside the outage never read it. When the API
// server is back, the replica that holds the key must not sign with it
// before the other has read it (within a retry of its own recovery):
// otherwise a relying party reading the other's JWKS meets an unknown kid.
func TestManagedRecoveryPublishesBeforeSigning(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	now := time.Unix(1_800_000_000, 0)
	at := func(s int) { now = time.Unix(1_800_000_000, 0).Add(time.Duration(s) * time.Second) }
	down := false
	outage := func(k8stesting.Action) (bool, runtime.Object, error) {
		if down {
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil
	}
	csA := sharing(cs)
	cs.PrependReactor("*", "secrets", outage)
	csA.PrependReactor("*", "secrets", outage)
	var setsA, setsB []*keys.Set
	source := func(c *fake.Clientset, sets *[]*keys.Set) *ManagedSource {
		m := NewManagedSource(ManagedOptions{
			Client: c, Namespace: "kube-sts", Secret: "keys", Endpoint: "vault",
			Schedule: keys.Schedule{Algorithm: keys.ES256, RotateEvery: 90 * time.Second, PublishAhead: 40 * time.Second, RetireAfter: 95 * time.Second},
			Resync:   30 * time.Second, Log: zap.NewNop(), OnChange: func(s *keys.Set) { *sets = append(*sets, s) },
			Now: func() time.Time { return now },
		})
		m.retry = 2 * time.Second // as Start sets it
		return m
	}
	a, b := source(csA, &setsA), source(cs, &setsB)
	sync := func(m *ManagedSource, name string, wantErr bool) {
		t.Helper()
		if err := m.Sync(ctx); (err != nil) != wantErr {
			t.Fatalf("t=%v: %s: sync error %v, want an error: %v", now.Unix()-1_800_000_000, name, err, wantErr)
		}
	}
	// Every signing key of one replica must be in the other's JWKS.
	check := func() {
		t.Helper()
		sa, sb := setsA[len(setsA)-1], setsB[len(setsB)-1]
		for _, p := range []struct {
			signer, verifier *keys.Set
			name             string
		}{{sa, sb, "A signs with a key B does not publish"}, {sb, sa, "B signs with a key A does not publish"}} {
			if !slices.ContainsFunc(p.verifier.Keys, func(k *keys.Key) bool { return k.ID == p.signer.Signing.ID }) {
				t.Fatalf("t=%v: %s (%s)", now.Unix()-1_800_000_000, p.name, p.signer.Signing.ID)
			}
		}
	}
	at(0)
	sync(a, "A", false) // the first key
	sync(b, "B", false)
	at(50)
	sync(a, "A", false) // A writes the successor, active from t=90
	if len(setsA[len(setsA)-1].Keys) != 2 {
		t.Fatalf("A publishes %d keys at t=50, want the successor too", len(setsA[len(setsA)-1].Keys))
	}
	down = true // the API server is unreachable from t=55 to t=100
	at(60)
	sync(b, "B", true) // B's periodic sync falls inside the outage: B never read the successor
	at(80)
	sync(a, "A", true)
	down = false
	at(100)
	sync(a, "A", false) // A is first back; the successor is active since t=90
	check()
	at(101)
	sync(b, "B", false) // B retries within its retry
	check()
	at(106)
	sync(a, "A", false) // the hold is over: A switches
	check()
	if setsA[len(setsA)-1].Signing.ID != setsA[len(setsA)-1].Keys[1].ID {
		t.Errorf("A still signs with the first key after the hold")
	}
	sync(b, "B", false)
	check()
}

// TestManagedRunRetriesSoon: after a failed sync Run tries again within
// the retry, not a whole resync later.
func TestManagedRunRetriesSoon(t *testing.T) {
	cs := fake.NewClientset()
	var calls, failures atomic.Int32
	failures.Store(1 << 30)
	cs.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		calls.Add(1)
		if failures.Add(-1) >= 0 {
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil
	})
	src := NewManagedSource(ManagedOptions{
		Client: cs, Namespace: "kube-sts", Secret: "keys", Endpoint: "vault",
		Schedule: keys.Schedule{Algorithm: keys.ES256, RotateEvery: time.Hour, PublishAhead: 10 * time.Minute, RetireAfter: 20 * time.Minute},
		Resync:   time.Hour, Log: zap.NewNop(), OnChange: func(*keys.Set) {},
	})
	failures.Store(0)
	if err := src.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	failures.Store(1)
	src.retry = 10 * time.Millisecond
	if err := src.Sync(context.Background()); err == nil {
		t.Fatal("the failing sync succeeded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	before := calls.Load()
	go func() { _ = src.Run(ctx) }()
	for calls.Load() == before && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	if ctx.Err() != nil {
		t.Fatal("no sync within 5s of a failure (resync is an hour)")
	}
}
