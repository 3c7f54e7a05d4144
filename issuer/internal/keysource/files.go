// Package keysource loads an endpoint's signing keys from where they live,
// key files that are polled or a Secret the issuer manages with client-go,
// and reports each new key set; the pure planning is package keys'.
package keysource

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/kube-sts/kube-sts/issuer/internal/keys"
)

// FileSource reads PEM private keys from files (for example the tls.key of
// Secrets that cert-manager renews) and reloads them when their content
// changes. A reload that fails keeps the previous set, so no request fails
// because a file was half-written or briefly missing. A new signing key is
// published PublishAhead before it signs, and a key that left the files stays
// published until its tokens expired (keys.PlanFiles).
type FileSource struct {
	files    []string
	signing  string
	alg      string
	interval time.Duration
	policy   keys.FilePolicy
	log      *zap.Logger
	onChange func(*keys.Set)

	contents [][]byte
	inFiles  []*keys.Key
	sign     *keys.Key
	plan     []keys.FileKey
	current  *keys.Set
	created  map[string]time.Time
	now      func() time.Time
}

// NewFileSource returns a source over files; signing is the one that signs
// with alg, and every file is published.
func NewFileSource(files []string, signing, alg string, interval time.Duration, policy keys.FilePolicy, log *zap.Logger, onChange func(*keys.Set)) *FileSource {
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
	var since time.Time
	if s.plan == nil {
		// When the signing file last changed (a Secret volume's file is a
		// link into the directory the kubelet wrote at the change).
		if fi, err := os.Stat(s.signing); err == nil {
			since = fi.ModTime()
		}
	}
	plan := keys.PlanFiles(s.plan, s.inFiles, s.sign, since, now, s.policy)
	set, err := keys.FileSet(plan, now)
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
	if fk := plan[slices.IndexFunc(plan, func(fk keys.FileKey) bool { return fk.Key.ID == s.sign.ID })]; fk.SignsFrom.After(now) {
		s.log.Info("new signing key published; it signs once verifiers can have fetched it",
			zap.String("kid", fk.Key.ID), zap.Time("signs_from", fk.SignsFrom))
	}
	s.current = set
	s.onChange(set)
	return nil
}

func (s *FileSource) parse(contents [][]byte) ([]*keys.Key, *keys.Key, error) {
	var all []*keys.Key
	var signing *keys.Key
	for i, f := range s.files {
		priv, err := keys.ParsePEM(contents[i])
		if err != nil {
			return nil, nil, fmt.Errorf("key file %s: %w", f, err)
		}
		alg, err := keys.AlgorithmFor(priv)
		if err != nil {
			return nil, nil, fmt.Errorf("key file %s: %w", f, err)
		}
		if f == s.signing && alg != s.alg {
			return nil, nil, fmt.Errorf("signing key file %s holds a %s key, but the endpoint signs %s", f, alg, s.alg)
		}
		k, err := keys.New(priv, alg, time.Time{})
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
