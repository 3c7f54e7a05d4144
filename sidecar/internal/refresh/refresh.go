// Package refresh keeps a fresh STS token on disk: it exchanges the projected
// ServiceAccount token at start, again when 80% of the token's lifetime has
// passed, backs off on failures, rewrites the file when a consumer deletes it,
// and removes it once it has expired with no replacement.
package refresh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/kube-sts/kube-sts/shared/atomicfile"
	"github.com/kube-sts/kube-sts/shared/exchange"
	"github.com/kube-sts/kube-sts/shared/redact"
	"github.com/kube-sts/kube-sts/sidecar/internal/exchanger"
	"github.com/kube-sts/kube-sts/sidecar/internal/jwtinfo"
	"github.com/kube-sts/kube-sts/sidecar/internal/status"
)

// Exchanger mints a token for a subject token; *exchanger.Client is one.
type Exchanger interface {
	Exchange(ctx context.Context, subjectToken string) (exchanger.Token, error)
}

// Config is what the loop needs; options.Options fills it.
type Config struct {
	SubjectTokenFile string
	OutputFile       string
	// Copies are further files the token is written to (token group
	// volumes), each as OutputFile is: atomically, restored when removed,
	// removed when the token expires.
	Copies   []string
	FileMode fs.FileMode
	// Fraction of the lifetime after which the token is refreshed (0.8).
	Fraction float64
	// Jitter is the largest share of the lifetime by which a refresh is moved
	// earlier, so Pods started together do not refresh together.
	Jitter float64
	// Margin: a refresh is never later than this before expiry (60s), unless
	// the token is too short-lived for that.
	Margin time.Duration
	// BackoffMin and BackoffMax bound the exponential backoff of transient failures.
	BackoffMin, BackoffMax time.Duration
	// RefusedRetry is the pause after the issuer refused the exchange.
	RefusedRetry time.Duration
	// MinInterval is the shortest pause between two successful exchanges (1s
	// when zero), so a badly dated token cannot make the loop spin.
	MinInterval time.Duration
	// NoFileWatch skips the watch that writes a deleted token file again at
	// once (it is then written at the next refresh). Only for the scale
	// harness's load generator: thousands of loops in one process cannot
	// each hold one of the kernel's inotify instances (128 per user by
	// default), and the other processes of the machine need theirs.
	NoFileWatch bool
	// StatusFile, when set, holds the failures since the last good exchange
	// (contract.StatusPath of OutputFile): written at each failure, removed
	// at the next success. Probe prints it.
	StatusFile string
}

// Refresher runs the loop. Create it with New.
type Refresher struct {
	cfg  Config
	ex   Exchanger
	log  *zap.Logger
	now  func() time.Time
	rand func() float64
	bo   *backoff.ExponentialBackOff

	current *exchanger.Token
	// unwritten is a token fetched but not yet on disk (/tokens full or
	// read-only): only the write is retried while it is valid.
	unwritten *exchanger.Token

	// Failures since the last good exchange, for StatusFile.
	failures     int
	failingSince time.Time
	// lifetimeNote is the issuer's last note on the lifetime asked for,
	// logged when it changes rather than at every refresh.
	lifetimeNote string
}

// New returns a refresher.
func New(cfg Config, ex Exchanger, log *zap.Logger) *Refresher {
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = time.Second
	}
	r := &Refresher{cfg: cfg, ex: ex, log: log, now: time.Now, rand: rand.Float64}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = cfg.BackoffMin
	bo.MaxInterval = cfg.BackoffMax
	bo.Multiplier = 2
	bo.RandomizationFactor = 0.3
	bo.MaxElapsedTime = 0 // never give up: a Pod without a token is useless
	bo.Reset()
	r.bo = bo
	return r
}

// NextRefresh is when a token should be replaced: after fraction of its
// lifetime, minus up to jitter of it (rnd in [0,1) picks how much), and never
// later than margin before expiry. For tokens too short-lived for margin (under
// twice of it) the margin shrinks to half the lifetime.
func NextRefresh(tok exchanger.Token, fraction, jitter float64, margin time.Duration, rnd float64) time.Time {
	life := tok.Lifetime()
	start := tok.Claims.Expiry.Add(-life)
	at := start.Add(time.Duration(float64(life) * (fraction - jitter*rnd)))
	margin = min(margin, life/2)
	if latest := tok.Claims.Expiry.Add(-margin); at.After(latest) {
		at = latest
	}
	return at
}

// Once exchanges one time and writes the token.
func (r *Refresher) Once(ctx context.Context) error {
	r.cleanTemps()
	tok, err := r.exchange(ctx)
	if err != nil {
		return err
	}
	if err := r.publish(tok); err != nil {
		return err
	}
	r.log.Info("token written", zap.String("jti", tok.Claims.ID), zap.Time("expires", tok.Claims.Expiry), zap.String("file", r.cfg.OutputFile))
	return nil
}

// Run loops until ctx is done. It returns nil on cancellation: the loop itself
// never gives up.
func (r *Refresher) Run(ctx context.Context) error {
	r.cleanTemps()
	// A status left by an earlier run of this container (the volume
	// outlives it) is not this run's: await must not act on it.
	if r.cfg.StatusFile != "" {
		_ = status.Remove(r.cfg.StatusFile)
	}
	events, errs, closeWatch := r.watch()
	defer closeWatch()

	// The first exchange happens at once and replaces a token left by an
	// earlier run of this container; until it succeeds that token is held
	// like any other: removed when it expires, so it cannot outlive it while
	// the issuer is down.
	refresh := time.NewTimer(0)
	defer refresh.Stop()
	expiry := time.NewTimer(time.Hour)
	expiry.Stop()
	defer expiry.Stop()
	if r.adopt() {
		expiry.Reset(r.current.Claims.Expiry.Sub(r.now()))
	}

	for {
		select {
		case <-ctx.Done():
			r.log.Info("stopping", zap.String("reason", context.Cause(ctx).Error()))
			return nil
		case <-refresh.C:
			wait := r.attempt(ctx)
			if ctx.Err() != nil {
				continue
			}
			refresh.Reset(wait)
			if r.current != nil {
				expiry.Reset(r.current.Claims.Expiry.Sub(r.now()))
			}
		case <-expiry.C:
			r.expire()
		case ev := <-events:
			if ev.Op.Has(fsnotify.Remove) || ev.Op.Has(fsnotify.Rename) {
				for _, f := range r.files() {
					if filepath.Clean(ev.Name) == filepath.Clean(f) {
						r.restore()
						break
					}
				}
			}
		case err := <-errs:
			r.log.Warn("file watch error", zap.Error(err))
		}
	}
}

// adopt reads a token left on disk by an earlier run: an expired or
// unreadable one is removed, a valid one becomes the current token.
func (r *Refresher) adopt() bool {
	data, err := os.ReadFile(r.cfg.OutputFile)
	if err != nil {
		return false
	}
	raw := strings.TrimSpace(string(data))
	c, err := jwtinfo.Parse(raw)
	if err != nil || !c.Expiry.After(r.now()) {
		r.log.Info("removed the token left by an earlier run: expired or unreadable", zap.String("file", r.cfg.OutputFile))
		for _, f := range r.files() {
			if err := atomicfile.Remove(f); err != nil {
				r.log.Error("could not remove the token left by an earlier run", zap.String("file", f), zap.Error(err))
			}
		}
		return false
	}
	r.current = &exchanger.Token{Raw: raw, Claims: c, Received: r.now()}
	// The copies are brought to the same token (an earlier run may have
	// been stopped between two of its writes).
	for _, f := range r.cfg.Copies {
		if err := atomicfile.Write(f, []byte(raw), r.cfg.FileMode); err != nil {
			r.log.Error("could not write a copy of the token left by an earlier run", zap.String("file", f), zap.Error(err))
		}
	}
	r.log.Info("holding the token left by an earlier run until it is replaced or expires",
		zap.String("jti", c.ID), zap.Time("expires", c.Expiry))
	return true
}

// attempt exchanges and publishes, and returns how long to wait before the
// next attempt. A token that was fetched but could not be written is written
// again instead of fetching another, as long as it is valid.
func (r *Refresher) attempt(ctx context.Context) time.Duration {
	var tok exchanger.Token
	var err error
	if u := r.unwritten; u != nil && u.Claims.Expiry.After(r.now()) {
		tok = *u
	} else {
		r.unwritten = nil
		tok, err = r.exchange(ctx)
	}
	if err == nil {
		if err = r.publish(tok); err != nil {
			r.unwritten = &tok
		}
	}
	if ctx.Err() != nil {
		return 0
	}
	if err != nil {
		return r.retryAfter(err)
	}
	r.unwritten = nil
	r.bo.Reset()
	r.clearStatus()
	next := NextRefresh(tok, r.cfg.Fraction, r.cfg.Jitter, r.cfg.Margin, r.rand())
	wait := max(next.Sub(r.now()), r.cfg.MinInterval)
	r.log.Info("token refreshed",
		zap.String("jti", tok.Claims.ID),
		zap.Time("expires", tok.Claims.Expiry),
		zap.Duration("next_refresh_in", wait.Round(time.Second)))
	return wait
}

// retryAfter logs a failure and picks the pause before the next attempt.
func (r *Refresher) retryAfter(err error) time.Duration {
	fields := []zap.Field{zap.Error(err)}
	var xe *exchanger.Error
	var wait time.Duration
	if errors.As(err, &xe) && xe.Kind == exchanger.Refused {
		wait = r.cfg.RefusedRetry
		fields = append(fields, zap.String("kind", xe.Kind.String()), zap.Int("status", xe.Status))
		if xe.OAuth != nil {
			fields = append(fields, zap.String("error", xe.OAuth.Code), zap.String("error_description", redact.Text(xe.OAuth.Description)))
		}
	} else {
		// The backoff's randomization may overshoot its maximum; the maximum is a hard cap.
		wait = min(r.bo.NextBackOff(), r.cfg.BackoffMax)
		if errors.As(err, &xe) {
			fields = append(fields, zap.String("kind", xe.Kind.String()), zap.Int("status", xe.Status))
			if xe.RetryAfter > wait {
				wait = min(xe.RetryAfter, r.cfg.BackoffMax)
			}
		}
	}
	if r.current != nil {
		fields = append(fields, zap.String("holding_jti", r.current.Claims.ID), zap.Time("holding_expires", r.current.Claims.Expiry))
	}
	fields = append(fields, zap.Duration("retry_in", wait.Round(time.Millisecond)))
	r.log.Warn("exchange failed; retrying", fields...)
	r.writeStatus(err, errors.As(err, &xe) && xe.Kind == exchanger.Refused, wait)
	return wait
}

// writeStatus records a failure in StatusFile (package status): how many
// since when, the last error (which the log carries too: no token in it)
// and what the sidecar holds meanwhile. A full or read-only volume only
// loses the status.
func (r *Refresher) writeStatus(err error, refused bool, retryIn time.Duration) {
	now := r.now()
	if r.failures == 0 {
		r.failingSince = now
	}
	r.failures++
	if r.cfg.StatusFile == "" {
		return
	}
	f := status.Failure{Refused: refused, Attempts: r.failures, Since: r.failingSince, Last: now, RetryIn: retryIn, Err: redact.Text(err.Error())}
	if r.current != nil && r.current.Claims.Expiry.After(now) {
		f.HeldUntil = r.current.Claims.Expiry
	}
	if werr := status.Write(r.cfg.StatusFile, f, r.cfg.FileMode); werr != nil {
		r.log.Debug("could not write the status file", zap.String("file", r.cfg.StatusFile), zap.Error(werr))
	}
}

// clearStatus removes StatusFile after a good exchange.
func (r *Refresher) clearStatus() {
	if r.failures == 0 {
		return
	}
	r.failures = 0
	if r.cfg.StatusFile != "" {
		if err := status.Remove(r.cfg.StatusFile); err != nil {
			r.log.Debug("could not remove the status file", zap.String("file", r.cfg.StatusFile), zap.Error(err))
		}
	}
}

func (r *Refresher) exchange(ctx context.Context) (exchanger.Token, error) {
	subject, err := readSubject(r.cfg.SubjectTokenFile)
	if err != nil {
		return exchanger.Token{}, err
	}
	tok, err := r.ex.Exchange(ctx, subject)
	if err == nil && tok.LifetimeNote != r.lifetimeNote {
		r.lifetimeNote = tok.LifetimeNote
		if tok.LifetimeNote != "" {
			r.log.Warn("the issuer did not grant the lifetime asked for", zap.String("note", tok.LifetimeNote), zap.Duration("lifetime", tok.Lifetime().Round(time.Second)))
		}
	}
	return tok, err
}

// cleanTemps removes what an earlier run left half-written beside the
// token's file and each copy.
func (r *Refresher) cleanTemps() {
	for _, f := range r.files() {
		atomicfile.CleanTemps(f)
	}
}

// files are the token's copies and then its file: the file comes last, so
// that when probe and await (which read it) see a new token, every copy
// holds it already.
func (r *Refresher) files() []string {
	return append(append([]string{}, r.cfg.Copies...), r.cfg.OutputFile)
}

// publish writes tok and makes it the current one.
func (r *Refresher) publish(tok exchanger.Token) error {
	for _, f := range r.files() {
		if err := atomicfile.Write(f, []byte(tok.Raw), r.cfg.FileMode); err != nil {
			return fmt.Errorf("write token file: %w", err)
		}
	}
	r.current = &tok
	return nil
}

// restore writes the current token again after a consumer deleted the file
// (Vault agent does, with remove_jwt_after_reading).
func (r *Refresher) restore() {
	if r.current == nil || !r.current.Claims.Expiry.After(r.now()) {
		return
	}
	for _, f := range r.files() {
		if _, err := os.Stat(f); err == nil {
			continue
		}
		if err := atomicfile.Write(f, []byte(r.current.Raw), r.cfg.FileMode); err != nil {
			r.log.Error("token file was removed and could not be written again", zap.String("file", f), zap.Error(err))
			continue
		}
		r.log.Info("token file was removed by a consumer; written again", zap.String("file", f), zap.String("jti", r.current.Claims.ID))
	}
}

// expire removes the file when the current token has expired with no replacement.
func (r *Refresher) expire() {
	if r.current == nil || r.current.Claims.Expiry.After(r.now()) {
		return
	}
	r.log.Warn("token expired with no replacement; removed the file until the issuer answers",
		zap.String("jti", r.current.Claims.ID), zap.Time("expired", r.current.Claims.Expiry))
	r.current = nil
	for _, f := range r.files() {
		if err := atomicfile.Remove(f); err != nil {
			r.log.Error("could not remove the expired token file", zap.String("file", f), zap.Error(err))
		}
	}
}

// watch reports changes in the output file's directory. Without inotify the
// loop still works; a deleted file then waits for the next refresh.
func (r *Refresher) watch() (<-chan fsnotify.Event, <-chan error, func()) {
	if r.cfg.NoFileWatch {
		return nil, nil, func() {}
	}
	w, err := fsnotify.NewWatcher()
	if err == nil {
		dirs := map[string]bool{}
		for _, f := range r.files() {
			if d := filepath.Dir(f); !dirs[d] && err == nil {
				dirs[d] = true
				err = w.Add(d)
			}
		}
		if err != nil {
			_ = w.Close()
		}
	}
	if err != nil {
		r.log.Warn("cannot watch the token file; a deleted file is written again only at the next refresh", zap.Error(err))
		return nil, nil, func() {}
	}
	return w.Events, w.Errors, func() { _ = w.Close() }
}

// readSubject reads the projected ServiceAccount token; the kubelet rotates
// it, so it is read at every exchange.
func readSubject(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read subject token: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, exchange.MaxSubjectTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("read subject token %s: %w", path, err)
	}
	if len(data) > exchange.MaxSubjectTokenBytes {
		return "", fmt.Errorf("subject token %s is larger than %d bytes", path, exchange.MaxSubjectTokenBytes)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("subject token %s is empty", path)
	}
	return tok, nil
}
