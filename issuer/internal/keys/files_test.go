package keys

import (
	"testing"
	"time"
)

func genKey(t *testing.T) *Key {
	t.Helper()
	k, err := Generate(ES256, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func ids(keys []FileKey) map[string]bool {
	out := map[string]bool{}
	for _, fk := range keys {
		out[fk.Key.ID] = true
	}
	return out
}

// TestPlanFilesThroughTime walks file keys through a renewal of the signing
// file (cert-manager writes a new tls.key), a second renewal before the
// first took over, and the previous file going away, and checks at every
// step: the JWKS is never empty, a new key is published PublishAhead before
// it signs, and a key that signed stays published until RetireAfter past the
// moment it stopped signing.
func TestPlanFilesThroughTime(t *testing.T) {
	p := FilePolicy{PublishAhead: 10 * time.Minute, RetireAfter: 20 * time.Minute}
	t0 := time.Unix(1_800_000_000, 0)
	k1, k2, k3, other := genKey(t), genKey(t), genKey(t), genKey(t)
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	type step struct {
		at        time.Duration
		inFiles   []*Key
		signing   *Key
		wantSigns *Key
		published []*Key
	}
	steps := []step{
		// First load: k1 signs at once, other (a previous file) is published.
		{0, []*Key{k1, other}, k1, k1, []*Key{k1, other}},
		// k1's file is renewed to k2: k2 is published at once but k1 signs
		// on, though no file holds it any more.
		{time.Minute, []*Key{k2, other}, k2, k1, []*Key{k1, k2, other}},
		{10*time.Minute + 59*time.Second, []*Key{k2, other}, k2, k1, []*Key{k1, k2, other}},
		// PublishAhead after k2 was first seen, k2 signs; k1 stays published.
		{11 * time.Minute, []*Key{k2, other}, k2, k2, []*Key{k1, k2, other}},
		// k1 leaves RetireAfter after it stopped signing.
		{30*time.Minute + 59*time.Second, []*Key{k2, other}, k2, k2, []*Key{k1, k2, other}},
		{31 * time.Minute, []*Key{k2, other}, k2, k2, []*Key{k2, other}},
		// A renewal to k3; k2 signs on until k3 has been published long enough...
		{40 * time.Minute, []*Key{k3, other}, k3, k2, []*Key{k2, k3, other}},
		// ...the other file goes away: it never signed, it stays RetireAfter.
		{41 * time.Minute, []*Key{k3}, k3, k2, []*Key{k2, k3, other}},
		{50 * time.Minute, []*Key{k3}, k3, k3, []*Key{k2, k3, other}},
		{61 * time.Minute, []*Key{k3}, k3, k3, []*Key{k2, k3}},
		{70 * time.Minute, []*Key{k3}, k3, k3, []*Key{k3}},
	}
	var plan []FileKey
	for _, s := range steps {
		now := at(s.at)
		plan = PlanFiles(plan, s.inFiles, s.signing, time.Time{}, now, p)
		set, err := FileSet(plan, now)
		if err != nil {
			t.Fatalf("at %v: %v", s.at, err)
		}
		if set.Signing.ID != s.wantSigns.ID {
			t.Fatalf("at %v: signs with %s, want %s", s.at, set.Signing.ID[:8], s.wantSigns.ID[:8])
		}
		got := ids(plan)
		if len(got) != len(s.published) {
			t.Fatalf("at %v: %d keys published, want %d", s.at, len(got), len(s.published))
		}
		for _, k := range s.published {
			if !got[k.ID] {
				t.Fatalf("at %v: %s not published", s.at, k.ID[:8])
			}
		}
	}
}

// TestPlanFilesReplacedBeforeSigning: a key replaced before its turn never
// signs; its successor waits PublishAhead of its own.
func TestPlanFilesReplacedBeforeSigning(t *testing.T) {
	p := FilePolicy{PublishAhead: 10 * time.Minute, RetireAfter: 20 * time.Minute}
	t0 := time.Unix(1_800_000_000, 0)
	k1, k2, k3 := genKey(t), genKey(t), genKey(t)
	plan := PlanFiles(nil, []*Key{k1}, k1, time.Time{}, t0, p)
	plan = PlanFiles(plan, []*Key{k2}, k2, time.Time{}, t0.Add(time.Minute), p)
	plan = PlanFiles(plan, []*Key{k3}, k3, time.Time{}, t0.Add(5*time.Minute), p)
	for _, d := range []time.Duration{11 * time.Minute, 14*time.Minute + 59*time.Second} {
		plan = PlanFiles(plan, []*Key{k3}, k3, time.Time{}, t0.Add(d), p)
		set, err := FileSet(plan, t0.Add(d))
		if err != nil || set.Signing.ID != k1.ID {
			t.Fatalf("at %v: signs with %v (%v), want k1 until k3's turn", d, set, err)
		}
	}
	plan = PlanFiles(plan, []*Key{k3}, k3, time.Time{}, t0.Add(15*time.Minute), p)
	if set, _ := FileSet(plan, t0.Add(15*time.Minute)); set.Signing.ID != k3.ID {
		t.Fatal("k3 does not sign PublishAhead after it was seen")
	}
}

// TestPlanFilesRestartDuringRotation: a replica that starts while the
// signing file's new key is still being published ahead signs with the
// other key in the files until the new one's turn, as the replicas that saw
// the change do; with no other key (a fresh install) it signs at once.
func TestPlanFilesRestartDuringRotation(t *testing.T) {
	p := FilePolicy{PublishAhead: 10 * time.Minute, RetireAfter: 20 * time.Minute}
	t0 := time.Unix(1_800_000_000, 0)
	k1, k2 := genKey(t), genKey(t)
	changed := t0.Add(time.Minute) // the signing file went from k1 to k2
	// The replica that ran throughout.
	old := PlanFiles(nil, []*Key{k1}, k1, time.Time{}, t0, p)
	old = PlanFiles(old, []*Key{k2, k1}, k2, time.Time{}, changed, p)
	// The replica restarted three minutes after the change.
	var fresh []FileKey
	for _, d := range []time.Duration{4 * time.Minute, 10*time.Minute + 59*time.Second, 11 * time.Minute, 12 * time.Minute} {
		now := t0.Add(d)
		old = PlanFiles(old, []*Key{k2, k1}, k2, time.Time{}, now, p)
		fresh = PlanFiles(fresh, []*Key{k2, k1}, k2, changed, now, p)
		a, errA := FileSet(old, now)
		b, errB := FileSet(fresh, now)
		if errA != nil || errB != nil || a.Signing.ID != b.Signing.ID {
			t.Fatalf("at %v: the running replica signs with %v, the restarted one with %v (%v %v)", d, a, b, errA, errB)
		}
		if want := map[bool]string{true: k1.ID, false: k2.ID}[d < 11*time.Minute]; b.Signing.ID != want {
			t.Fatalf("at %v: signs with %s, want %s", d, b.Signing.ID[:8], want[:8])
		}
	}
	// A fresh install: the signing file is new and alone; it signs at once.
	solo := PlanFiles(nil, []*Key{k2}, k2, t0, t0.Add(time.Second), p)
	if set, err := FileSet(solo, t0.Add(time.Second)); err != nil || set.Signing.ID != k2.ID {
		t.Fatalf("fresh install: %v %v", set, err)
	}
	// A change long ago: nothing to wait for.
	late := PlanFiles(nil, []*Key{k2, k1}, k2, t0, t0.Add(time.Hour), p)
	if set, _ := FileSet(late, t0.Add(time.Hour)); set.Signing.ID != k2.ID {
		t.Fatal("a signing file changed an hour ago was held back")
	}
}
