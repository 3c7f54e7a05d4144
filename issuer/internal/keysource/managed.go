package keysource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-sts/kube-sts/issuer/internal/keys"
	"github.com/kube-sts/kube-sts/logging"
)

// SecretKey is the data key of the managed Secret that holds the key records.
const SecretKey = "keys.json"

type stored struct {
	Keys []keys.Record `json:"keys"`
}

// ManagedSource keeps an endpoint's keys in a Secret it owns. Every replica
// runs one; they agree through the Secret's resourceVersion (optimistic
// concurrency): a replica writes a plan only on top of the version it read,
// and re-reads on conflict. A replica signs only with keys from the Secret,
// and a new key is published for PublishAhead before it signs, which exceeds
// every replica's resync plus every verifier's JWKS cache lifetime.
type ManagedSource struct {
	client    kubernetes.Interface
	namespace string
	name      string
	endpoint  string
	schedule  keys.Schedule
	resync    time.Duration
	log       *zap.Logger
	onChange  func(*keys.Set)
	onWrite   func(kind string)
	now       func() time.Time

	current *keys.Set
	// held are the records this replica last read or wrote.
	held []keys.Record
	// retry is how soon a failed sync is tried again (Start's retry).
	retry time.Duration
	// The failures of this replica's syncs: lastGood is its last good sync;
	// failing is true while they fail; failedAfter is lastGood when they
	// began (zero when none, or before any good sync); recovered is the
	// first good sync after them, until recoveryHold has passed.
	lastGood, failedAfter, recovered time.Time
	failing                          bool
}

// A replica whose syncs failed (the API server was unreachable, etcd
// stalled) may hold a key set older than another's: a key written shortly
// before or during the failures may be unknown to it, and a token signed
// with that key by a replica that recovered first would meet a JWKS
// without its kid. Every replica retries a failed sync each retry, so once
// the failures end they all read the Secret within a retry of each other;
// a key that may have been new to another replica when the failures began
// (created less than resync before this replica's last good sync, or
// after) therefore signs here only recoveryHold after the first good sync.
// The key before it, still published (the leeway covers a replica signing
// late), signs meanwhile.
func (m *ManagedSource) recoveryHold() time.Duration { return 2*m.retry + time.Second }

// ManagedOptions configure a ManagedSource.
type ManagedOptions struct {
	Client    kubernetes.Interface
	Namespace string
	Secret    string
	Endpoint  string
	Schedule  keys.Schedule
	Resync    time.Duration
	Log       *zap.Logger
	OnChange  func(*keys.Set)
	// OnWrite is told of each change this replica writes ("created", "retired").
	OnWrite func(kind string)
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// NewManagedSource returns a source; call Sync once, then Run.
func NewManagedSource(o ManagedOptions) *ManagedSource {
	now := o.Now
	if now == nil {
		now = time.Now
	}
	onWrite := o.OnWrite
	if onWrite == nil {
		onWrite = func(string) {}
	}
	return &ManagedSource{client: o.Client, namespace: o.Namespace, name: o.Secret, endpoint: o.Endpoint,
		schedule: o.Schedule, resync: o.Resync, log: o.Log, onChange: o.OnChange, onWrite: onWrite, now: now}
}

// Start syncs until the first sync succeeds (the API server may not answer
// yet; until then the endpoint has no keys and is not ready), retrying every
// retry, and then runs. It returns when ctx is done.
func (m *ManagedSource) Start(ctx context.Context, retry time.Duration) error {
	m.retry = retry
	for ctx.Err() == nil {
		err := m.Sync(ctx)
		if err == nil {
			return m.Run(ctx)
		}
		m.log.Error("loading managed keys failed; retrying", logging.Endpoint(m.endpoint), zap.Error(err))
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	return nil
}

// Run syncs every resync until ctx is done, and every retry (Start's)
// after a failed sync until one succeeds. Failures are logged; the last
// good set keeps serving.
func (m *ManagedSource) Run(ctx context.Context) error {
	for {
		wait := m.resync
		switch {
		case m.retry <= 0:
		case m.failing: // try again soon
			wait = min(m.retry, m.resync)
		case !m.recovered.IsZero(): // sync again when the hold ends, to switch keys then
			wait = min(max(m.recovered.Add(m.recoveryHold()).Sub(m.now()), 10*time.Millisecond), m.resync)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if err := m.Sync(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("syncing managed keys failed; keeping the current keys", logging.Endpoint(m.endpoint), zap.Error(err))
		}
	}
}

// Sync reads the Secret, writes the plan if it changed, and reports the set.
func (m *ManagedSource) Sync(ctx context.Context) error {
	err := m.sync(ctx)
	now := m.now()
	if err != nil {
		if !m.failing {
			m.failing, m.failedAfter, m.recovered = true, m.lastGood, time.Time{}
		}
		return err
	}
	if m.failing {
		m.failing, m.recovered = false, now
	} else if !m.recovered.IsZero() && !now.Before(m.recovered.Add(m.recoveryHold())) {
		m.failedAfter, m.recovered = time.Time{}, time.Time{}
	}
	m.lastGood = now
	return nil
}

func (m *ManagedSource) sync(ctx context.Context) error {
	for attempt := 0; attempt < 5; attempt++ {
		err := m.syncOnce(ctx)
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			continue // another replica wrote first: read its version and plan again
		}
		return err
	}
	return errors.New("the key Secret kept changing under this replica; will retry")
}

// signingTime is when SetOf picks the signing key: now, or just before the
// newest active key while it is held back after failed syncs (see
// recoveryHold); the key before it signs meanwhile.
func (m *ManagedSource) signingTime(recs []keys.Record, now time.Time) time.Time {
	if m.failedAfter.IsZero() {
		return now
	}
	recovered := m.recovered
	if m.failing {
		recovered = now // this very sync is the first good one
	}
	if !now.Before(recovered.Add(m.recoveryHold())) {
		return now
	}
	// Another replica read the Secret at most resync before the failures
	// began (after failedAfter): a key created since may be unknown to it.
	newest := -1
	for i, r := range recs {
		if !r.ActiveAt.After(now) {
			newest = i
		}
	}
	if newest <= 0 || !recs[newest].Created.After(m.failedAfter.Add(-m.resync)) {
		return now
	}
	return recs[newest].ActiveAt.Add(-time.Nanosecond)
}

func (m *ManagedSource) syncOnce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	secrets := m.client.CoreV1().Secrets(m.namespace)
	sec, err := secrets.Get(ctx, m.name, metav1.GetOptions{})
	exists := true
	if apierrors.IsNotFound(err) {
		exists, err = false, nil
		sec = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: m.name, Namespace: m.namespace, Labels: map[string]string{
				"app.kubernetes.io/managed-by": "sts-issuer",
				"app.kubernetes.io/part-of":    "kube-sts",
			}},
			Type: corev1.SecretTypeOpaque,
		}
	}
	if err != nil {
		return fmt.Errorf("get secret %s/%s: %w", m.namespace, m.name, err)
	}
	var st stored
	if !exists && len(m.held) > 0 {
		// The Secret was deleted under a running issuer. A fresh key would
		// sign at once while the keys relying parties cached vanish; write
		// back what this replica holds instead. (To replace a compromised
		// key on purpose, see docs/reference/issuer.md: stop every replica first.)
		m.log.Warn("the key Secret is gone; writing back the keys this replica holds", logging.Endpoint(m.endpoint),
			zap.String("secret", m.namespace+"/"+m.name), zap.Int("keys", len(m.held)))
		st.Keys = m.held
	}
	if raw := sec.Data[SecretKey]; len(raw) > 0 {
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("secret %s/%s: %s is not valid: %w", m.namespace, m.name, SecretKey, err)
		}
	}
	now := m.now()
	planned, changed, err := keys.Plan(st.Keys, now, m.schedule, func(activeAt time.Time) (keys.Record, error) {
		return keys.NewRecord(m.schedule.Algorithm, now, activeAt)
	})
	if err != nil {
		return err
	}
	if changed || !exists {
		if err := m.write(ctx, sec, exists, st.Keys, planned); err != nil {
			return err
		}
	}
	set, err := keys.SetOf(planned, m.signingTime(planned, now))
	if err != nil {
		return fmt.Errorf("secret %s/%s: %w", m.namespace, m.name, err)
	}
	m.held = planned
	if !set.Same(m.current) {
		prev := m.current
		m.current = set
		if prev != nil && prev.Signing.ID != set.Signing.ID {
			m.log.Info("signing key changed", logging.Endpoint(m.endpoint), zap.String("kid", set.Signing.ID), zap.String("previous_kid", prev.Signing.ID))
		}
		m.onChange(set)
	}
	return nil
}

// write stores planned in sec (created when it does not exist), on top of
// the version read, and logs the keys it created and retired.
func (m *ManagedSource) write(ctx context.Context, sec *corev1.Secret, exists bool, before, planned []keys.Record) error {
	data, err := json.Marshal(stored{Keys: planned})
	if err != nil {
		return err
	}
	if sec.Data == nil {
		sec.Data = map[string][]byte{}
	}
	sec.Data[SecretKey] = data
	secrets := m.client.CoreV1().Secrets(m.namespace)
	if exists {
		_, err = secrets.Update(ctx, sec, metav1.UpdateOptions{})
	} else {
		_, err = secrets.Create(ctx, sec, metav1.CreateOptions{})
	}
	if err != nil {
		return err
	}
	created, retired := diff(before, planned)
	for _, r := range created {
		m.onWrite("created")
		m.log.Info("created signing key", logging.Endpoint(m.endpoint), zap.String("kid", r.ID),
			zap.String("alg", r.Algorithm), zap.Time("signs_from", r.ActiveAt))
	}
	for _, r := range retired {
		m.onWrite("retired")
		m.log.Info("retired signing key", logging.Endpoint(m.endpoint), zap.String("kid", r.ID))
	}
	return nil
}

func diff(before, after []keys.Record) (created, retired []keys.Record) {
	has := func(rs []keys.Record, id string) bool {
		return slices.ContainsFunc(rs, func(r keys.Record) bool { return r.ID == id })
	}
	for _, r := range after {
		if !has(before, r.ID) {
			created = append(created, r)
		}
	}
	for _, r := range before {
		if !has(after, r.ID) {
			retired = append(retired, r)
		}
	}
	return created, retired
}
