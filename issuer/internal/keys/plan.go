package keys

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Record is one managed key as stored in the Secret.
type Record struct {
	ID        string    `json:"kid"`
	Algorithm string    `json:"alg"`
	Created   time.Time `json:"created"`
	// ActiveAt is when the key starts to sign. Before that it is only published.
	ActiveAt time.Time `json:"activeAt"`
	// PrivateKey is PKCS#8 PEM.
	PrivateKey []byte `json:"privateKey"`
}

// Schedule is the rotation policy of managed keys.
type Schedule struct {
	Algorithm string
	// RotateEvery is how long a key signs before its successor takes over.
	RotateEvery time.Duration
	// PublishAhead is how long a successor is published before it signs.
	PublishAhead time.Duration
	// RetireAfter is how long a superseded key stays published: the token TTL
	// plus leeway, so every token it signed expires first.
	RetireAfter time.Duration
}

// Plan computes the next key records from the current ones at now. It is pure
// (gen makes new keys) so every replica computes the same plan from the same
// Secret, and tests can walk it through time. It returns the records and
// whether they changed.
func Plan(records []Record, now time.Time, s Schedule, gen func(activeAt time.Time) (Record, error)) ([]Record, bool, error) {
	recs := slices.Clone(records)
	slices.SortFunc(recs, func(a, b Record) int { return a.ActiveAt.Compare(b.ActiveAt) })
	changed := false

	if len(recs) == 0 {
		// Bootstrap: nobody can have cached an older JWKS of ours, so the first key signs at once.
		r, err := gen(now)
		if err != nil {
			return nil, false, err
		}
		return []Record{r}, true, nil
	}

	signing := signingIndex(recs, now)
	pending := signing < len(recs)-1
	switch {
	case signing < 0:
		// Only future keys (clock skew between replicas); wait for them.
	case !pending && (recs[signing].Algorithm != s.Algorithm || !now.Before(recs[signing].ActiveAt.Add(s.RotateEvery-s.PublishAhead))):
		r, err := gen(now.Add(s.PublishAhead))
		if err != nil {
			return nil, false, err
		}
		recs = append(recs, r)
		changed = true
	}

	// A key superseded at time T signed its last token before T; it stays
	// published until those tokens expired.
	var kept []Record
	for i, r := range recs {
		if i+1 < len(recs) && i < signing && !now.Before(recs[i+1].ActiveAt.Add(s.RetireAfter)) {
			changed = true
			continue
		}
		kept = append(kept, r)
	}
	return kept, changed, nil
}

// signingIndex is the index of the newest record active at now, or -1.
func signingIndex(recs []Record, now time.Time) int {
	idx := -1
	for i, r := range recs {
		if !r.ActiveAt.After(now) {
			idx = i
		}
	}
	return idx
}

// NewRecord generates a key for alg, active from activeAt.
func NewRecord(alg string, now, activeAt time.Time) (Record, error) {
	k, err := Generate(alg, now)
	if err != nil {
		return Record{}, err
	}
	pemBytes, err := k.MarshalPEM()
	if err != nil {
		return Record{}, err
	}
	return Record{ID: k.ID, Algorithm: alg, Created: now, ActiveAt: activeAt, PrivateKey: pemBytes}, nil
}

// SetOf builds the key set of records at now: all published, the newest
// active one signs.
func SetOf(records []Record, now time.Time) (*Set, error) {
	recs := slices.Clone(records)
	slices.SortFunc(recs, func(a, b Record) int { return a.ActiveAt.Compare(b.ActiveAt) })
	var all []*Key
	var signing *Key
	for _, r := range recs {
		priv, err := ParsePEM(r.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", r.ID, err)
		}
		k, err := New(priv, r.Algorithm, r.Created)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", r.ID, err)
		}
		if k.ID != r.ID {
			return nil, fmt.Errorf("key %s: stored kid does not match the key (%s)", r.ID, k.ID)
		}
		all = append(all, k)
		if !r.ActiveAt.After(now) {
			signing = k
		}
	}
	if signing == nil {
		return nil, errors.New("no key is active yet")
	}
	return NewSet(signing, all)
}

// FileKey is a key the file source knows: in a file now, or kept after it
// left one until every token it signed has expired.
type FileKey struct {
	Key *Key
	// Gone is when the key left the files; zero while a file holds it.
	Gone time.Time
	// SignsFrom is when the key starts (or started) to sign; zero for a key
	// that is only published.
	SignsFrom time.Time
}

// FilePolicy is how file keys change hands.
type FilePolicy struct {
	// PublishAhead is how long a new signing key is published before it
	// signs: the JWKS cache lifetime plus the reload interval, so a verifier
	// never meets a kid it could not have fetched.
	PublishAhead time.Duration
	// RetireAfter is how long a key stays published after it stopped signing
	// (or left the files): the token TTL plus a margin.
	RetireAfter time.Duration
}

// PlanFiles computes the keys to hold at now from the previous plan and the
// keys the files hold (signing is the signing file's, which last changed at
// signingSince). It is pure, so tests can walk it through time.
//
// On the first plan (prev empty) the process has no memory of an earlier
// signer, but other replicas may: when the signing file changed less than
// PublishAhead ago and the files hold another key, that key signs until
// signingSince + PublishAhead, as the replicas that saw the change do, so a
// replica restarted during a rotation never signs with a key relying
// parties cannot have fetched yet. With no other key in the files (a fresh
// install) the signing key signs at once.
func PlanFiles(prev []FileKey, inFiles []*Key, signing *Key, signingSince, now time.Time, p FilePolicy) []FileKey {
	first := len(prev) == 0
	next := make([]FileKey, 0, len(prev)+len(inFiles))
	present := func(id string) bool { return slices.ContainsFunc(inFiles, func(k *Key) bool { return k.ID == id }) }
	for _, fk := range prev {
		switch {
		case present(fk.Key.ID):
			fk.Gone = time.Time{}
		case fk.Gone.IsZero():
			fk.Gone = now
		}
		if !fk.Gone.IsZero() && fk.SignsFrom.After(now) {
			fk.SignsFrom = time.Time{} // replaced before it ever signed
		}
		next = append(next, fk)
	}
	for _, k := range inFiles {
		if !slices.ContainsFunc(next, func(fk FileKey) bool { return fk.Key.ID == k.ID }) {
			next = append(next, FileKey{Key: k})
		}
	}
	i := slices.IndexFunc(next, func(fk FileKey) bool { return fk.Key.ID == signing.ID })
	if s := signerAt(next, now); s < 0 || next[s].Key.ID != signing.ID {
		// The signing file holds a key that does not sign yet: schedule it,
		// unless it is already scheduled.
		interim := slices.IndexFunc(next, func(fk FileKey) bool {
			return fk.Key.ID != signing.ID && fk.Key.Algorithm == signing.Algorithm && fk.Gone.IsZero()
		})
		switch {
		case first && interim >= 0 && now.Before(signingSince.Add(p.PublishAhead)):
			next[interim].SignsFrom = now
			next[i].SignsFrom = signingSince.Add(p.PublishAhead)
		case first:
			next[i].SignsFrom = now
		case !next[i].SignsFrom.After(now):
			next[i].SignsFrom = now.Add(p.PublishAhead)
		}
	}
	return slices.DeleteFunc(next, func(fk FileKey) bool {
		if fk.Gone.IsZero() {
			return false
		}
		end := fk.Gone
		if !fk.SignsFrom.IsZero() {
			superseded, ok := supersededAt(next, fk, now)
			if !ok {
				return false // still the signer
			}
			end = later(end, superseded)
		}
		return !now.Before(end.Add(p.RetireAfter))
	})
}

// signerAt is the index of the key with the latest SignsFrom not after now.
func signerAt(keys []FileKey, now time.Time) int {
	idx := -1
	for i, fk := range keys {
		if !fk.SignsFrom.IsZero() && !fk.SignsFrom.After(now) && (idx < 0 || fk.SignsFrom.After(keys[idx].SignsFrom)) {
			idx = i
		}
	}
	return idx
}

// supersededAt is when the next signer after fk took over, if one has.
func supersededAt(keys []FileKey, fk FileKey, now time.Time) (time.Time, bool) {
	var at time.Time
	for _, o := range keys {
		if o.SignsFrom.After(fk.SignsFrom) && !o.SignsFrom.After(now) && (at.IsZero() || o.SignsFrom.Before(at)) {
			at = o.SignsFrom
		}
	}
	return at, !at.IsZero()
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// FileSet is the set the planned keys publish at now.
func FileSet(keys []FileKey, now time.Time) (*Set, error) {
	s := signerAt(keys, now)
	if s < 0 {
		return nil, fmt.Errorf("no file key signs yet")
	}
	all := make([]*Key, len(keys))
	for i, fk := range keys {
		all[i] = fk.Key
	}
	return NewSet(keys[s].Key, all)
}
