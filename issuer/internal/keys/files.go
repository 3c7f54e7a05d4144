package keys

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"
)

// FileSource reads PEM private keys from files (for example the tls.key of
// Secrets that cert-manager renews) and reloads them when their content
// changes. A reload that fails keeps the previous set, so no request fails
// because a file was half-written or briefly missing.
type FileSource struct {
	files    []string
	signing  string
	alg      string
	interval time.Duration
	log      *zap.Logger
	onChange func(*Set)

	contents [][]byte
	created  map[string]time.Time
	now      func() time.Time
}

// NewFileSource returns a source over files; signing is the one that signs
// with alg, and every file is published.
func NewFileSource(files []string, signing, alg string, interval time.Duration, log *zap.Logger, onChange func(*Set)) *FileSource {
	return &FileSource{files: files, signing: signing, alg: alg, interval: interval, log: log, onChange: onChange,
		created: map[string]time.Time{}, now: time.Now}
}

// Load reads the files once and reports the set. It is called before Run, so
// a configuration with a bad key stops the issuer at start.
func (s *FileSource) Load() error {
	contents := make([][]byte, len(s.files))
	for i, f := range s.files {
		data, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("read key file: %w", err)
		}
		contents[i] = data
	}
	if s.contents != nil && equal(contents, s.contents) {
		return nil
	}
	set, err := s.build(contents)
	if err != nil {
		return err
	}
	s.contents = contents
	s.onChange(set)
	return nil
}

func (s *FileSource) build(contents [][]byte) (*Set, error) {
	var all []*Key
	var signing *Key
	for i, f := range s.files {
		priv, err := ParsePEM(contents[i])
		if err != nil {
			return nil, fmt.Errorf("key file %s: %w", f, err)
		}
		alg, err := AlgorithmFor(priv)
		if err != nil {
			return nil, fmt.Errorf("key file %s: %w", f, err)
		}
		if f == s.signing && alg != s.alg {
			return nil, fmt.Errorf("signing key file %s holds a %s key, but the endpoint signs %s", f, alg, s.alg)
		}
		k, err := New(priv, alg, time.Time{})
		if err != nil {
			return nil, fmt.Errorf("key file %s: %w", f, err)
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
	return NewSet(signing, all)
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
