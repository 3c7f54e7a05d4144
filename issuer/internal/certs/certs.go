// Package certs serves a TLS certificate from files and picks up renewals
// (cert-manager rewrites the Secret volume) without a restart or a failed handshake.
package certs

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// Reloader returns the current certificate, re-reading the files when they
// change. A failed reload keeps the previous certificate.
type Reloader struct {
	certFile, keyFile string
	interval          time.Duration

	mu        sync.Mutex
	cert      *tls.Certificate
	stamp     string
	lastCheck time.Time
	onError   func(error)
}

// NewReloader loads the pair once (an error stops the start) and checks the
// files for changes at most once per interval.
func NewReloader(certFile, keyFile string, interval time.Duration, onError func(error)) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile, interval: interval, onError: onError}
	if err := r.reload(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Reloader) fileStamp() (string, error) {
	var s string
	for _, f := range []string{r.certFile, r.keyFile} {
		st, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		s += fmt.Sprintf("%d/%d;", st.ModTime().UnixNano(), st.Size())
	}
	return s, nil
}

func (r *Reloader) reload() error {
	stamp, err := r.fileStamp()
	if err != nil {
		return fmt.Errorf("stat serving certificate: %w", err)
	}
	if stamp == r.stamp {
		return nil
	}
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("load serving certificate: %w", err)
	}
	r.cert, r.stamp = &c, stamp
	return nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.lastCheck) >= r.interval {
		r.lastCheck = now
		if err := r.reload(); err != nil && r.onError != nil {
			r.onError(err)
		}
	}
	return r.cert, nil
}
