package keys

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"go.uber.org/zap"
)

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
// keys the files hold (signing is the signing file's). It is pure, so tests
// can walk it through time. On the first plan (prev empty) the signing key
// signs at once: there is no older JWKS of this process to have cached.
func PlanFiles(prev []FileKey, inFiles []*Key, signing *Key, now time.Time, p FilePolicy) []FileKey {
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
		if first {
			next[i].SignsFrom = now
		} else if !next[i].SignsFrom.After(now) {
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

// FileSource reads PEM private keys from files (for example the tls.key of
// Secrets that cert-manager renews) and reloads them when their content
// changes. A reload that fails keeps the previous set, so no request fails
// because a file was half-written or briefly missing. A new signing key is
// published PublishAhead before it signs, and a key that left the files stays
// published until its tokens expired (PlanFiles).
type FileSource struct {
	files    []string
	signing  string
	alg      string
	interval time.Duration
	policy   FilePolicy
	log      *zap.Logger
	onChange func(*Set)

	contents [][]byte
	inFiles  []*Key
	sign     *Key
	plan     []FileKey
	current  *Set
	created  map[string]time.Time
	now      func() time.Time
}

// NewFileSource returns a source over files; signing is the one that signs
// with alg, and every file is published.
func NewFileSource(files []string, signing, alg string, interval time.Duration, policy FilePolicy, log *zap.Logger, onChange func(*Set)) *FileSource {
	return &FileSource{files: files, signing: signing, alg: alg, interval: interval, policy: policy, log: log, onChange: onChange,
		created: map[string]time.Time{}, now: time.Now}
}

// Load reads the files, plans, and reports the set when it changed. It is
// called once before Run, so a configuration with a bad key stops the
// issuer at start; later it also moves the set along in time.
func (s *FileSource) Load() error {
	contents := make([][]byte, len(s.files))
	for i, f := range s.files {
		data, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("read key file: %w", err)
		}
		contents[i] = data
	}
	if s.contents == nil || !equal(contents, s.contents) {
		inFiles, sign, err := s.parse(contents)
		if err != nil {
			return err
		}
		s.contents, s.inFiles, s.sign = contents, inFiles, sign
	}
	now := s.now()
	plan := PlanFiles(s.plan, s.inFiles, s.sign, now, s.policy)
	set, err := FileSet(plan, now)
	if err != nil {
		return err
	}
	s.plan = plan
	if set.Same(s.current) {
		return nil
	}
	if prev := s.current; prev != nil && prev.Signing.ID != set.Signing.ID {
		s.log.Info("signing key changed", zap.String("kid", set.Signing.ID), zap.String("previous_kid", prev.Signing.ID))
	}
	if fk := plan[slices.IndexFunc(plan, func(fk FileKey) bool { return fk.Key.ID == s.sign.ID })]; fk.SignsFrom.After(now) {
		s.log.Info("new signing key published; it signs once verifiers can have fetched it",
			zap.String("kid", fk.Key.ID), zap.Time("signs_from", fk.SignsFrom))
	}
	s.current = set
	s.onChange(set)
	return nil
}

func (s *FileSource) parse(contents [][]byte) ([]*Key, *Key, error) {
	var all []*Key
	var signing *Key
	for i, f := range s.files {
		priv, err := ParsePEM(contents[i])
		if err != nil {
			return nil, nil, fmt.Errorf("key file %s: %w", f, err)
		}
		alg, err := AlgorithmFor(priv)
		if err != nil {
			return nil, nil, fmt.Errorf("key file %s: %w", f, err)
		}
		if f == s.signing && alg != s.alg {
			return nil, nil, fmt.Errorf("signing key file %s holds a %s key, but the endpoint signs %s", f, alg, s.alg)
		}
		k, err := New(priv, alg, time.Time{})
		if err != nil {
			return nil, nil, fmt.Errorf("key file %s: %w", f, err)
		}
		// Remember when each key was first seen, for the key-age metric and a stable order.
		if _, ok := s.created[k.ID]; !ok {
			s.created[k.ID] = s.now()
		}
		k.Created = s.created[k.ID]
		all = append(all, k)
		if f == s.signing {
			signing = k
		}
	}
	return all, signing, nil
}

// Run reloads the files every interval until ctx is done.
func (s *FileSource) Run(ctx context.Context) error {
	every(ctx, s.interval, func() {
		if err := s.Load(); err != nil {
			s.log.Error("reloading key files failed; keeping the keys loaded before", zap.Error(err))
		}
	})
	return nil
}

// every calls f every d until ctx is done.
func every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

func equal(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}
