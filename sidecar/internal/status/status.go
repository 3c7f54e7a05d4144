// Package status is the file in which the sidecar keeps why a token is
// missing (contract.StatusPath: a dot file beside the token, in the same
// volume): the refresh loop writes a Failure at each failed exchange and
// removes the file at the next good one; the probe and await read it, so
// the kubelet's probe events, and with them kubectl describe pod, say why.
// The format is written and read here only.
package status

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/kube-sts/kube-sts/shared/atomicfile"
)

// The first words of a status file: await gives up at once on a refusal.
const (
	prefixRefused = "the issuer refused the exchange; "
	prefixFailing = "the exchange is failing; "
)

// Failure is what a status file says: the failures since the last good
// exchange.
type Failure struct {
	// Refused: the issuer refused (a rule, an audience: a decision);
	// otherwise the exchange is failing (network, 5xx), which time may heal.
	Refused bool
	// Attempts failed since Since; the last at Last.
	Attempts    int
	Since, Last time.Time
	// HeldUntil is the expiry of the valid token the sidecar still holds;
	// zero when it holds none.
	HeldUntil time.Time
	// RetryIn is when the loop tries again.
	RetryIn time.Duration
	// Err is the last error, redacted by the caller (no token in it).
	Err string
}

// Text is the file's content.
func (f Failure) Text() string {
	kind := prefixFailing
	if f.Refused {
		kind = prefixRefused
	}
	held := "no valid token held"
	if !f.HeldUntil.IsZero() {
		held = "holding the last token until " + f.HeldUntil.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("%s%d attempt(s) failed since %s, the last at %s (%s; retry in %v): %s\n",
		kind, f.Attempts, f.Since.UTC().Format(time.RFC3339), f.Last.UTC().Format(time.RFC3339),
		held, f.RetryIn.Round(100*time.Millisecond), f.Err)
}

// Write replaces the status file at path with f, atomically, with mode (the
// token's: who may not read the token need not read why it is missing).
func Write(path string, f Failure, mode fs.FileMode) error {
	return atomicfile.Write(path, []byte(f.Text()), mode)
}

// Remove deletes the status file; a missing one is no error.
func Remove(path string) error { return atomicfile.Remove(path) }

// MaxBytes bounds what is read of a status file (the kubelet keeps 10 KiB
// of a probe's output; an event message is shorter still).
const MaxBytes = 2048

// Record is a status file as read.
type Record struct {
	// Text is its content, trimmed and cut at MaxBytes.
	Text string
	// Refused: it records a refusal.
	Refused bool
	// Written is when it was last written.
	Written time.Time
}

// Read reads the status file at path; ok is false when there is none.
func Read(path string) (r Record, ok bool) {
	f, err := os.Open(path)
	if err != nil {
		return Record{}, false
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil {
		r.Written = fi.ModTime()
	}
	data, _ := io.ReadAll(io.LimitReader(f, MaxBytes))
	r.Text = strings.TrimSpace(string(data))
	r.Refused = strings.HasPrefix(r.Text, prefixRefused)
	return r, r.Text != ""
}
