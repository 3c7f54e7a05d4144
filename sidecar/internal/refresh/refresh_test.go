package refresh

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/kube-sts/kube-sts/shared/contract"
	"github.com/kube-sts/kube-sts/sidecar/internal/exchanger"
	"github.com/kube-sts/kube-sts/sidecar/internal/issuertest"
	"github.com/kube-sts/kube-sts/sidecar/internal/jwtinfo"
	"github.com/kube-sts/kube-sts/sidecar/internal/probe"
)

func TestNextRefresh(t *testing.T) {
	t0 := time.Unix(1_768_236_189, 0)
	tok := func(life time.Duration) exchanger.Token {
		return exchanger.Token{Received: t0, Claims: jwtinfo.Claims{IssuedAt: t0, Expiry: t0.Add(life)}}
	}
	tests := map[string]struct {
		tok    exchanger.Token
		jitter float64
		rnd    float64
		want   time.Time
	}{
		"15m token at 80%":            {tok: tok(15 * time.Minute), want: t0.Add(12 * time.Minute)},
		"jitter moves it earlier":     {tok: tok(15 * time.Minute), jitter: 0.05, rnd: 1, want: t0.Add(12*time.Minute - 45*time.Second)},
		"half jitter":                 {tok: tok(15 * time.Minute), jitter: 0.05, rnd: 0.5, want: t0.Add(12*time.Minute - 22500*time.Millisecond)},
		"4m token: 60s before exp":    {tok: tok(4 * time.Minute), want: t0.Add(3 * time.Minute)},
		"2m token: 60s before exp":    {tok: tok(2 * time.Minute), want: t0.Add(time.Minute)},
		"1m token: margin halves":     {tok: tok(time.Minute), want: t0.Add(30 * time.Second)},
		"24h token":                   {tok: tok(24 * time.Hour), want: t0.Add(19*time.Hour + 12*time.Minute)},
		"no iat: from receipt":        {tok: exchanger.Token{Received: t0, Claims: jwtinfo.Claims{Expiry: t0.Add(10 * time.Minute)}}, want: t0.Add(8 * time.Minute)},
		"iat in future: from receipt": {tok: exchanger.Token{Received: t0, Claims: jwtinfo.Claims{IssuedAt: t0.Add(time.Hour), Expiry: t0.Add(10 * time.Minute)}}, want: t0.Add(8 * time.Minute)},
		"backdated iat: from iat":     {tok: exchanger.Token{Received: t0, Claims: jwtinfo.Claims{IssuedAt: t0.Add(-5 * time.Minute), Expiry: t0.Add(5 * time.Minute)}}, want: t0.Add(3 * time.Minute)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := NextRefresh(tc.tok, 0.8, tc.jitter, time.Minute, tc.rnd)
			if !got.Equal(tc.want) {
				t.Fatalf("NextRefresh = %v after t0, want %v", got.Sub(t0), tc.want.Sub(t0))
			}
			if got.After(tc.tok.Claims.Expiry.Add(-time.Minute)) && tc.tok.Lifetime() >= 5*time.Minute {
				t.Fatalf("refresh %v is later than 60s before expiry", tc.tok.Claims.Expiry.Sub(got))
			}
		})
	}
}

type fixture struct {
	t       *testing.T
	issuer  *issuertest.Issuer
	dir     string
	subject string
	out     string
	logs    *observer.ObservedLogs
	r       *Refresher
	cancel  context.CancelFunc
	done    chan error
}

func newFixture(t *testing.T, lifetime time.Duration, mutate func(*Config)) *fixture {
	t.Helper()
	f := &fixture{t: t, issuer: issuertest.New(lifetime), dir: t.TempDir()}
	t.Cleanup(f.issuer.Close)
	f.subject = filepath.Join(f.dir, "sa-token")
	f.out = filepath.Join(f.dir, "tokens", "token.jwt")
	if err := os.Mkdir(filepath.Dir(f.out), 0o755); err != nil {
		t.Fatal(err)
	}
	f.writeSubject("subject-1")
	cfg := Config{
		SubjectTokenFile: f.subject,
		OutputFile:       f.out,
		FileMode:         0o440,
		Fraction:         0.8,
		Margin:           100 * time.Millisecond, // 60s in production; scaled to the short test tokens
		BackoffMin:       50 * time.Millisecond,
		BackoffMax:       400 * time.Millisecond,
		RefusedRetry:     300 * time.Millisecond,
		MinInterval:      10 * time.Millisecond,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	f.logs = logs
	f.r = New(cfg, &exchanger.Client{URL: f.issuer.TokenURL(), HTTP: testHTTP, Now: time.Now}, zap.New(core))
	return f
}

var testHTTP = mustClient()

func mustClient() *http.Client {
	c, err := exchanger.NewHTTPClient("", "", 5*time.Second)
	if err != nil {
		panic(err)
	}
	return c
}

func (f *fixture) writeSubject(tok string) {
	f.t.Helper()
	if err := os.WriteFile(f.subject, []byte(tok+"\n"), 0o600); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) start() time.Time {
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	f.done = make(chan error, 1)
	started := time.Now()
	go func() { f.done <- f.r.Run(ctx) }()
	f.t.Cleanup(func() { f.stop() })
	return started
}

func (f *fixture) stop() time.Duration {
	if f.cancel == nil {
		return 0
	}
	start := time.Now()
	f.cancel()
	f.cancel = nil
	select {
	case err := <-f.done:
		if err != nil {
			f.t.Errorf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		f.t.Fatal("Run did not return after cancel")
	}
	return time.Since(start)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

func (f *fixture) file() (string, bool) {
	data, err := os.ReadFile(f.out)
	if err != nil {
		return "", false
	}
	return string(data), true
}

func (f *fixture) assertNoTokenInLogs() {
	f.t.Helper()
	secrets := append(f.issuer.Minted(), "subject-1", "subject-2", "subject-3")
	for _, e := range f.logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + anyString(v)
		}
		for _, s := range secrets {
			if s != "" && strings.Contains(line, s) {
				f.t.Fatalf("log line contains a token: %q", e.Message)
			}
		}
	}
}

func anyString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	if e, ok := v.(error); ok {
		return e.Error()
	}
	return ""
}

func TestFirstTokenFastAndSubjectReread(t *testing.T) {
	f := newFixture(t, 2*time.Second, nil)
	started := f.start()
	took := waitFor(t, 2*time.Second, "first token", func() bool { _, ok := f.file(); return ok })
	first := time.Since(started)
	// At once, not after a refresh interval (these 2 s tokens would be
	// refreshed after 1.6 s): the bound is loose because this runs under
	// -race at the lowest priority beside the e2e suites (129 ms seen there,
	// about 1 ms alone); how fast is the benchmarks' question.
	if first > time.Second {
		t.Errorf("first token on disk after %v, want it at once (well within the 1.6 s a refresh would wait)", first)
	}
	t.Logf("first token on disk %v after start (%v polling)", first, took)
	tok, _ := f.file()
	if err := probe.Probe(f.out, time.Now(), 0); err != nil {
		t.Fatalf("probe after the first token: %v", err)
	}

	// The kubelet rotates the projected token; the next exchange must use the new one.
	f.writeSubject("subject-2")
	waitFor(t, 5*time.Second, "second exchange", func() bool { return f.issuer.Count() >= 2 })
	subjects, times := f.issuer.Requests()
	if subjects[0] != "subject-1" || subjects[1] != "subject-2" {
		t.Fatalf("subjects sent = %v, want subject-1 then subject-2", subjects[:2])
	}
	// 80% of the first token's lifetime (no jitter configured here), as
	// NextRefresh computes from its claims, and before it expired; a late
	// scheduler on a loaded machine may only delay it towards exp.
	claims, err := jwtinfo.Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	due := NextRefresh(exchanger.Token{Claims: claims, Received: times[0]}, 0.8, 0, 100*time.Millisecond, 0)
	if times[1].Before(due.Add(-10*time.Millisecond)) || !times[1].Before(claims.Expiry) {
		t.Fatalf("refresh came at %v after the first exchange; due at %v, the token expires at %v",
			times[1].Sub(times[0]), due.Sub(times[0]), claims.Expiry.Sub(times[0]))
	}
	waitFor(t, time.Second, "second token on disk", func() bool { s, _ := f.file(); return s != tok })
	f.assertNoTokenInLogs()
}

func TestOutageBackoffKeepExpireRecover(t *testing.T) {
	// 5s tokens: refreshed at 4s, expired at 5s; the second between is the
	// outage's, long enough for a few retries (50, 100, 200, 400 ms apart)
	// even when this runs at the lowest priority beside the e2e suites.
	f := newFixture(t, 5*time.Second, nil)
	f.start()
	waitFor(t, 2*time.Second, "first token", func() bool { _, ok := f.file(); return ok })
	good, _ := f.file()
	f.issuer.Set(issuertest.Unavailable)
	before := f.issuer.Count()

	// During the outage the last good token stays, and probe accepts it:
	// checked after three failed retries and before its exp, derived from
	// the token itself.
	claims, err := jwtinfo.Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Until(claims.Expiry.Add(-200*time.Millisecond)), "three retries during the outage", func() bool { return f.issuer.Count()-before >= 3 })
	if s, ok := f.file(); !ok || s != good {
		t.Fatal("the last good token was not kept during the outage")
	}
	if err := probe.Probe(f.out, time.Now(), 0); err != nil {
		t.Fatalf("probe during the outage, before expiry: %v", err)
	}
	// Retries back off: each pause the loop picks (its retry_in) is longer
	// than the last until the maximum; with ±30% jitter on a doubling
	// interval the first is at most 1.3 and the second at least 1.4 times
	// the minimum (without the doubling it would be at most 1.3). The pauses it
	// picked are checked, not the gaps observed between requests: at the
	// lowest priority beside the e2e suites the scheduler's delays swamp
	// 50 and 100 ms (gaps of 159 then 129 ms were seen there).
	var waits []time.Duration
	for _, e := range f.logs.FilterMessage("exchange failed; retrying").All() {
		if d, ok := e.ContextMap()["retry_in"].(time.Duration); ok {
			waits = append(waits, d)
		}
	}
	const backoffMin = 50 * time.Millisecond // the fixture's BackoffMin
	if len(waits) < 2 || waits[1] <= waits[0] || waits[0] > backoffMin*13/10+time.Millisecond || waits[1] < backoffMin*14/10-time.Millisecond {
		t.Errorf("backoff did not grow from %v: pauses %v", backoffMin, waits)
	}
	_, times := f.issuer.Requests()
	t.Logf("pauses picked %v; requests %v", waits, times[before:])

	// Past expiry with no replacement the file is gone and probe fails.
	waitFor(t, 2*time.Second, "expired token removed", func() bool { _, ok := f.file(); return !ok })
	if err := probe.Probe(f.out, time.Now(), 0); err == nil {
		t.Fatal("probe succeeded with no token file")
	}

	// Recovery: a new token appears within the backoff bound.
	f.issuer.Set(issuertest.OK)
	waitFor(t, 2*time.Second, "token after recovery", func() bool { s, ok := f.file(); return ok && s != good })
	if err := probe.Probe(f.out, time.Now(), 0); err != nil {
		t.Fatalf("probe after recovery: %v", err)
	}
	if f.logs.FilterMessage("exchange failed; retrying").Len() == 0 {
		t.Error("no retry was logged")
	}
	if f.logs.FilterMessage("token expired with no replacement; removed the file until the issuer answers").Len() != 1 {
		t.Error("the expiry was not logged once")
	}
	f.assertNoTokenInLogs()
}

func TestRefusalRetriedSlowlyWithDescription(t *testing.T) {
	f := newFixture(t, time.Minute, nil)
	f.issuer.Set(issuertest.Refuse)
	f.start()
	waitFor(t, 2*time.Second, "two refused attempts", func() bool { return f.issuer.Count() >= 2 })
	_, times := f.issuer.Requests()
	if gap := times[1].Sub(times[0]); gap < 250*time.Millisecond {
		t.Fatalf("refusal retried after %v, want the slow retry (300ms)", gap)
	}
	entries := f.logs.FilterMessage("exchange failed; retrying").All()
	if len(entries) == 0 {
		t.Fatal("refusal not logged")
	}
	if d := entries[0].ContextMap()["error_description"]; d != "namespace test-vault is not allowed by endpoint vault" {
		t.Fatalf("error_description logged as %q", d)
	}
	f.issuer.Set(issuertest.OK)
	waitFor(t, 2*time.Second, "token once allowed", func() bool { _, ok := f.file(); return ok })
}

// TestStatusOfFailures: while exchanges fail the sidecar keeps the last
// failure beside the token, the probe prints it (that is what the kubelet's
// probe event shows), and a good exchange removes it.
func TestStatusOfFailures(t *testing.T) {
	var status string
	f := newFixture(t, 3*time.Second, func(c *Config) { c.StatusFile = contract.StatusPath(c.OutputFile); status = c.StatusFile })
	f.issuer.Set(issuertest.Refuse)
	f.start()
	waitFor(t, 2*time.Second, "two refused attempts", func() bool { return f.issuer.Count() >= 2 })
	waitFor(t, time.Second, "a status of two failures", func() bool {
		b, _ := os.ReadFile(status)
		return strings.HasPrefix(string(b), refusedPrefix+"2 attempt(s) failed since ")
	})
	err := probe.Probe(f.out, time.Now(), 0)
	for _, want := range []string{"no token at " + f.out, refusedPrefix + "2 attempt(s) failed since", "no valid token held", "retry in", "HTTP 400", "namespace test-vault is not allowed by endpoint vault"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("probe while refused = %v, want it to say %q", err, want)
		}
	}

	f.issuer.Set(issuertest.OK)
	waitFor(t, 2*time.Second, "token once allowed", func() bool { _, ok := f.file(); return ok })
	waitFor(t, time.Second, "the status removed", func() bool { _, err := os.Stat(status); return os.IsNotExist(err) })
	if err := probe.Probe(f.out, time.Now(), 0); err != nil {
		t.Fatalf("probe after recovery: %v", err)
	}

	// An outage after a good token: the status says the token is held, and
	// a probe that passes prints nothing of it.
	f.issuer.Set(issuertest.Unavailable)
	waitFor(t, 4*time.Second, "a status while holding the token", func() bool {
		b, _ := os.ReadFile(status)
		return strings.Contains(string(b), "holding the last token until ")
	})
	if err := probe.Probe(f.out, time.Now(), 0); err != nil {
		t.Fatalf("probe while the held token is valid: %v", err)
	}
	waitFor(t, 4*time.Second, "expired token removed", func() bool { _, ok := f.file(); return !ok })
	err = probe.Probe(f.out, time.Now(), 0)
	if err == nil || !strings.Contains(err.Error(), "HTTP 503") {
		t.Fatalf("probe after the held token expired = %v, want the last failure (HTTP 503)", err)
	}
	b, _ := os.ReadFile(status)
	for _, secret := range append(f.issuer.Minted(), "subject-1") {
		if strings.Contains(string(b)+err.Error(), secret) {
			t.Fatal("the status or the probe's output holds a token")
		}
	}
	f.issuer.Set(issuertest.OK)
	waitFor(t, 2*time.Second, "token after the outage", func() bool { _, ok := f.file(); return ok })
	waitFor(t, time.Second, "the status removed", func() bool { _, err := os.Stat(status); return os.IsNotExist(err) })
	f.assertNoTokenInLogs()
}

// TestAwaitRefused: await (the native sidecar's postStart hook, during which
// the kubelet runs no probe) gives up at once when the issuer refused the
// missing token's exchange, with the issuer's reason, and waits out other
// failures until its timeout.
func TestAwaitRefused(t *testing.T) {
	f := newFixture(t, time.Minute, func(c *Config) { c.StatusFile = contract.StatusPath(c.OutputFile) })
	f.issuer.Set(issuertest.Unavailable)
	f.start()
	waitFor(t, 2*time.Second, "a failed attempt", func() bool { _, err := os.Stat(contract.StatusPath(f.out)); return err == nil })
	start := time.Now()
	err := probe.Await(context.Background(), []string{f.out}, 0, 300*time.Millisecond)
	if err == nil || time.Since(start) < 300*time.Millisecond || !strings.Contains(err.Error(), "HTTP 503") {
		t.Fatalf("await during an outage returned %v after %v; want the timeout, with the last failure", err, time.Since(start))
	}

	f.issuer.Set(issuertest.Refuse)
	waitFor(t, 2*time.Second, "a refusal in the status", func() bool {
		b, _ := os.ReadFile(contract.StatusPath(f.out))
		return strings.HasPrefix(string(b), refusedPrefix)
	})
	start = time.Now()
	err = probe.Await(context.Background(), []string{f.out}, 0, time.Minute)
	if err == nil || time.Since(start) > time.Second || !strings.Contains(err.Error(), "the issuer refused") || !strings.Contains(err.Error(), "namespace test-vault is not allowed by endpoint vault") {
		t.Fatalf("await after a refusal returned %v after %v; want at once, with the issuer's reason", err, time.Since(start))
	}

	// A refusal recorded by an earlier container (older than staleStatus when
	// await starts) does not stop await.
	f.stop()
	old := time.Now().Add(-time.Minute)
	if err := os.Chtimes(contract.StatusPath(f.out), old, old); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	err = probe.Await(context.Background(), []string{f.out}, 0, 300*time.Millisecond)
	if err == nil || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("await on an earlier container's refusal returned %v after %v; want the timeout", err, time.Since(start))
	}
	// And a new run removes it at its start.
	f.issuer.Set(issuertest.OK)
	f.start()
	waitFor(t, 2*time.Second, "the old status removed", func() bool { _, err := os.Stat(contract.StatusPath(f.out)); return os.IsNotExist(err) })

	// A refusal recorded for a token that is there again does not stop await.
	f.issuer.Set(issuertest.OK)
	waitFor(t, 2*time.Second, "a token once allowed", func() bool { _, ok := f.file(); return ok })
	if err := probe.Await(context.Background(), []string{f.out}, 0, time.Second); err != nil {
		t.Fatalf("await with the token there: %v", err)
	}
}

func TestDeletedFileRecreated(t *testing.T) {
	f := newFixture(t, time.Hour, nil)
	f.start()
	waitFor(t, 2*time.Second, "first token", func() bool { _, ok := f.file(); return ok })
	tok, _ := f.file()
	for i := range 3 {
		if err := os.Remove(f.out); err != nil {
			t.Fatal(err)
		}
		took := waitFor(t, time.Second, "file written again", func() bool { _, ok := f.file(); return ok })
		if s, _ := f.file(); s != tok {
			t.Fatalf("round %d: rewritten file holds another token", i)
		}
		t.Logf("round %d: rewritten after %v", i, took)
	}
	if f.issuer.Count() != 1 {
		t.Fatalf("rewriting cost %d exchanges, want none beyond the first", f.issuer.Count()-1)
	}
}

// TestNoFileWatch: with NoFileWatch (the load generator's) a deleted file
// stays deleted until the next refresh, and the loop holds no watch.
func TestNoFileWatch(t *testing.T) {
	f := newFixture(t, time.Hour, func(c *Config) { c.NoFileWatch = true })
	f.start()
	waitFor(t, 2*time.Second, "first token", func() bool { _, ok := f.file(); return ok })
	if err := os.Remove(f.out); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // TestDeletedFileRecreated's loop writes it again well within this
	if _, ok := f.file(); ok {
		t.Fatal("the deleted file was written again without a file watch")
	}
}

func TestStopsPromptlyDuringHangingExchange(t *testing.T) {
	f := newFixture(t, time.Hour, nil)
	f.issuer.Set(issuertest.Hang)
	f.start()
	waitFor(t, 2*time.Second, "request in flight", func() bool { return f.issuer.Count() >= 1 })
	if took := f.stop(); took > time.Second {
		t.Fatalf("stop took %v, want under 1s", took)
	}
}

// TestConcurrentReaderSeesOnlyWholeTokens: 1,000 rotations by the real loop,
// 100,000 reads, each a complete, parsable, unexpired token.
func TestConcurrentReaderSeesOnlyWholeTokens(t *testing.T) {
	f := newFixture(t, time.Hour, func(c *Config) { c.MinInterval = time.Millisecond })
	// Backdated by 10h: the token is always past its refresh point, so the
	// loop rotates as fast as MinInterval allows, while each file stays valid.
	f.issuer.SetLifetime(time.Hour, 10*time.Hour)
	f.start()
	waitFor(t, 2*time.Second, "first token", func() bool { _, ok := f.file(); return ok })

	var bad, reads atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for reads.Load() < 100_000 || f.issuer.Count() < 1000 {
			data, err := os.ReadFile(f.out)
			reads.Add(1)
			if err != nil {
				bad.Add(1)
				continue
			}
			if _, err := jwtinfo.Parse(string(data)); err != nil {
				bad.Add(1)
			}
		}
	}()
	wg.Wait()
	if b := bad.Load(); b > 0 {
		t.Fatalf("%d of %d reads saw a missing, partial or unparsable token", b, reads.Load())
	}
	t.Logf("%d reads across %d rotations, all whole", reads.Load(), f.issuer.Count())
}

func TestBadIssuerAnswersRetriedNeverFatal(t *testing.T) {
	for name, b := range map[string]issuertest.Behavior{
		"non-JSON":          issuertest.NonJSON,
		"HTML error page":   issuertest.HTMLError,
		"no access_token":   issuertest.MissingAccessToken,
		"wrong issued type": issuertest.WrongIssuedType,
		"expires_in zero":   issuertest.ZeroExpiresIn,
		"body over 1 MiB":   issuertest.HugeBody,
		"already expired":   issuertest.AlreadyExpired,
		"429 too many":      issuertest.TooMany,
		"503 unavailable":   issuertest.Unavailable,
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, time.Hour, nil)
			f.issuer.Set(b)
			f.start()
			waitFor(t, 3*time.Second, "two failed attempts", func() bool { return f.issuer.Count() >= 2 })
			if _, ok := f.file(); ok {
				t.Fatal("a bad answer was written to the token file")
			}
			if f.logs.FilterMessage("exchange failed; retrying").Len() == 0 {
				t.Fatal("failure not logged")
			}
			f.issuer.Set(issuertest.OK)
			waitFor(t, 3*time.Second, "token after the issuer recovers", func() bool { _, ok := f.file(); return ok })
			f.assertNoTokenInLogs()
		})
	}
}

func TestOnce(t *testing.T) {
	f := newFixture(t, time.Hour, nil)
	if err := f.r.Once(context.Background()); err != nil {
		t.Fatalf("Once: %v", err)
	}
	st, err := os.Stat(f.out)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != fs.FileMode(0o440) {
		t.Fatalf("mode %v, want 0440", st.Mode().Perm())
	}
	f.issuer.Set(issuertest.Refuse)
	err = f.r.Once(context.Background())
	var xe *exchanger.Error
	if !errors.As(err, &xe) || xe.Kind != exchanger.Refused || !strings.Contains(err.Error(), "not allowed") {
		t.Fatalf("Once against a refusing issuer = %v, want a refusal quoting the description", err)
	}
}

// TestLifetimeNoteLoggedWhenItChanges: the issuer's note on a lifetime it
// did not grant is a warning once, not at every refresh.
func TestLifetimeNoteLoggedWhenItChanges(t *testing.T) {
	f := newFixture(t, time.Hour, nil)
	f.r.ex = &exchanger.Client{URL: f.issuer.TokenURL(), HTTP: testHTTP, Now: time.Now, Lifetime: 2 * time.Hour}
	for range 3 {
		if err := f.r.Once(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	warned := f.logs.FilterMessage("the issuer did not grant the lifetime asked for").All()
	if len(warned) != 1 || !strings.Contains(anyString(warned[0].ContextMap()["note"]), "longer than the endpoint's") {
		t.Fatalf("%d warnings (%v), want one with the issuer's note", len(warned), warned)
	}
}

func TestMissingSubjectTokenRetried(t *testing.T) {
	f := newFixture(t, time.Hour, nil)
	if err := os.Remove(f.subject); err != nil {
		t.Fatal(err)
	}
	f.start()
	waitFor(t, 2*time.Second, "failure logged", func() bool { return f.logs.FilterMessage("exchange failed; retrying").Len() >= 2 })
	f.writeSubject("subject-3")
	waitFor(t, 2*time.Second, "token once the subject token appears", func() bool { _, ok := f.file(); return ok })
}

// TestCopies: a token with copies (token group volumes) is written to each,
// with the token's mode; a removed copy is written again; an expired token
// leaves no copy behind; the status file takes the token's mode.
func TestCopies(t *testing.T) {
	var copies []string
	var status string
	f := newFixture(t, 2*time.Second, func(c *Config) {
		for _, g := range []string{"group-1", "group-2"} {
			dir := filepath.Join(filepath.Dir(filepath.Dir(c.OutputFile)), g)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			copies = append(copies, filepath.Join(dir, "token.jwt"))
		}
		c.Copies, c.StatusFile = copies, contract.StatusPath(c.OutputFile)
		status = c.StatusFile
	})
	// What an earlier run left half-written beside a copy is removed at start.
	leftover := filepath.Join(filepath.Dir(copies[0]), ".sts-tmp-token.jwt-123")
	if err := os.WriteFile(leftover, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.start()
	waitFor(t, 2*time.Second, "first token", func() bool { _, ok := f.file(); return ok })
	tok, _ := f.file()
	same := func() bool {
		for _, c := range copies {
			if b, err := os.ReadFile(c); err != nil || string(b) != tok {
				return false
			}
		}
		return true
	}
	waitFor(t, time.Second, "both copies hold the token", same)
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("the temporary file an earlier run left beside a copy is still there (%v)", err)
	}
	for _, c := range copies {
		if fi, err := os.Stat(c); err != nil || fi.Mode().Perm() != 0o440 {
			t.Fatalf("copy %s: %v %v, want mode 0440", c, fi.Mode(), err)
		}
	}
	if err := os.Remove(copies[1]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "the removed copy written again", func() bool { b, _ := os.ReadFile(copies[1]); return string(b) == tok })

	// An outage past expiry: no copy keeps the expired token.
	f.issuer.Set(issuertest.Unavailable)
	waitFor(t, 4*time.Second, "a status while failing", func() bool { _, err := os.Stat(status); return err == nil })
	if fi, err := os.Stat(status); err != nil || fi.Mode().Perm() != 0o440 {
		t.Fatalf("status file: %v %v, want the token's mode 0440", fi.Mode(), err)
	}
	waitFor(t, 4*time.Second, "expired token and copies removed", func() bool {
		for _, p := range append([]string{f.out}, copies...) {
			if _, err := os.Stat(p); err == nil {
				return false
			}
		}
		return true
	})
	f.issuer.Set(issuertest.OK)
	old := tok
	waitFor(t, 3*time.Second, "a new token in every copy", func() bool {
		s, ok := f.file()
		if !ok || s == old {
			return false
		}
		tok = s
		return same()
	})
}

// refusedPrefix is how a status file of a refusal begins (what users read).
const refusedPrefix = "the issuer refused the exchange; "
