package publish

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-sts/kube-sts/issuer/internal/keys"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func gen(newest, oldest time.Duration) Generation {
	return Generation{Newest: t0.Add(newest), Oldest: t0.Add(oldest)}
}

func TestGenerationOrder(t *testing.T) {
	tests := []struct {
		a, b Generation
		want bool
	}{
		{gen(0, 0), gen(time.Hour, 0), true},                 // a key was added
		{gen(time.Hour, 0), gen(time.Hour, time.Hour), true}, // the old key retired
		{gen(time.Hour, time.Hour), gen(time.Hour, 0), false},
		{gen(time.Hour, 0), gen(time.Hour, 0), false},
		{gen(2*time.Hour, 0), gen(time.Hour, time.Hour), false}, // newest wins over oldest
	}
	for _, tc := range tests {
		if got := tc.a.Before(tc.b); got != tc.want {
			t.Errorf("%s before %s = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		back, err := ParseGeneration(tc.a.String())
		if err != nil || back != tc.a {
			t.Errorf("ParseGeneration(%q) = %v, %v", tc.a.String(), back, err)
		}
	}
	for _, bad := range []string{"", "x", "2026-11-27T12:00:00Z", "2026-11-27T12:00:00Z/yesterday"} {
		if _, err := ParseGeneration(bad); err == nil {
			t.Errorf("ParseGeneration(%q) accepted", bad)
		}
	}
}

func docs(g Generation, jwks string) Documents {
	return Documents{Discovery: []byte(`{"issuer":"https://oidc.example/prod-east/aws"}`), JWKS: []byte(jwks), Generation: g}
}

func TestDirLayoutAndModes(t *testing.T) {
	root := t.TempDir()
	d := Dir{Root: root}
	p := New(Options{Endpoint: "aws", Base: "prod-east/aws", Target: d, Interval: time.Minute})
	if err := p.Attempt(context.Background(), docs(gen(0, 0), `{"keys":[1]}`)); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"prod-east/aws/jwks":                             `{"keys":[1]}`,
		"prod-east/aws/.well-known/openid-configuration": `{"issuer":"https://oidc.example/prod-east/aws"}`,
		"prod-east/aws/" + GenerationFile:                gen(0, 0).String() + "\n",
	} {
		path := filepath.Join(root, name)
		b, err := os.ReadFile(path)
		if err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", name, b, err, want)
		}
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() != 0o644 {
			t.Errorf("%s mode %v, want 0644 (a web server must read it)", name, fi.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(filepath.Join(root, "prod-east/aws"))
	for _, e := range entries {
		if strings.Contains(e.Name(), "tmp-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
	// A host-only issuer publishes at the root.
	p = New(Options{Endpoint: "root", Base: "", Target: d, Interval: time.Minute})
	if err := p.Attempt(context.Background(), docs(gen(0, 0), `{"keys":[]}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, ".well-known/openid-configuration")); err != nil {
		t.Error(err)
	}
}

type recorded struct {
	mu      sync.Mutex
	results []string
}

func (r *recorded) Published(endpoint, target, result string, _ time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results = append(r.results, result)
}

func (r *recorded) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.results) == 0 {
		return ""
	}
	return r.results[len(r.results)-1]
}

// Two replicas publish to one directory; the one that has not seen the
// rotation yet must not take the new key away.
func TestReplicasConverge(t *testing.T) {
	d := Dir{Root: t.TempDir()}
	var ma, mb recorded
	a := New(Options{Endpoint: "aws", Base: "aws", Target: d, Interval: time.Minute, Metrics: &ma})
	b := New(Options{Endpoint: "aws", Base: "aws", Target: d, Interval: time.Minute, Metrics: &mb})
	ctx := context.Background()
	jwks := func() string { s, _ := os.ReadFile(filepath.Join(d.Root, "aws/jwks")); return string(s) }

	old, rotated, retired := gen(0, 0), gen(time.Hour, 0), gen(time.Hour, time.Hour)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.Attempt(ctx, docs(old, "old")))
	must(b.Attempt(ctx, docs(rotated, "old+new"))) // b rotated
	must(a.Attempt(ctx, docs(old, "old")))         // a has not resynced yet
	if got := jwks(); got != "old+new" || ma.last() != ResultSuperseded {
		t.Fatalf("after the stale replica wrote: jwks %q, result %q; want old+new kept, superseded", got, ma.last())
	}
	must(a.Attempt(ctx, docs(rotated, "old+new"))) // a caught up: same generation, writes
	if ma.last() != ResultPublished {
		t.Errorf("same generation: %q, want published", ma.last())
	}
	must(a.Attempt(ctx, docs(retired, "new")))     // a retired the old key
	must(b.Attempt(ctx, docs(rotated, "old+new"))) // b has not
	if got := jwks(); got != "new" {
		t.Errorf("after retirement: jwks %q, want the retired key gone", got)
	}
	// Something else wrote there (no readable generation): overwritten.
	must(os.WriteFile(filepath.Join(d.Root, "aws", GenerationFile), []byte("by hand\n"), 0o644))
	must(b.Attempt(ctx, docs(rotated, "old+new")))
	if mb.last() != ResultPublished {
		t.Errorf("unreadable generation: %q, want published over it", mb.last())
	}
}

// failing is a target whose writes fail until healed.
type failing struct {
	Dir
	mu     sync.Mutex
	broken bool
	puts   int
}

func (f *failing) Put(ctx context.Context, base string, objs []Object, cc, g string) error {
	f.mu.Lock()
	f.puts++
	broken := f.broken
	f.mu.Unlock()
	if broken {
		return os.ErrPermission
	}
	return f.Dir.Put(ctx, base, objs, cc, g)
}

func (f *failing) set(broken bool) { f.mu.Lock(); f.broken = broken; f.mu.Unlock() }
func (f *failing) count() int      { f.mu.Lock(); defer f.mu.Unlock(); return f.puts }

func TestRetriesAndReadiness(t *testing.T) {
	target := &failing{Dir: Dir{Root: t.TempDir()}, broken: true}
	var m recorded
	var mu sync.Mutex
	now := t0
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	p := New(Options{Endpoint: "aws", Base: "aws", Target: target, Interval: time.Hour,
		RetryMin: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond, UnreadyAfter: 10 * time.Minute, Metrics: &m, Now: clock})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	p.Update(docs(gen(0, 0), "k"))

	waitFor(t, func() bool { return target.count() >= 4 }, "retries after failures")
	if m.last() != ResultError {
		t.Errorf("result %q, want error", m.last())
	}
	if err := p.Check(); err != nil {
		t.Errorf("failing for less than unreadyAfter: Check = %v, want nil", err)
	}
	advance(11 * time.Minute)
	err := p.Check()
	if err == nil || !strings.Contains(err.Error(), "publishing to directory:") || !strings.Contains(err.Error(), "11m") {
		t.Errorf("failing for 11m: Check = %v", err)
	}
	if err != nil && strings.Contains(err.Error(), "permission") {
		t.Errorf("the readiness message carries the cause (it belongs in the log): %v", err)
	}
	target.set(false)
	waitFor(t, func() bool { return p.Check() == nil }, "ready once a write succeeds")
	if b, err := os.ReadFile(filepath.Join(target.Root, "aws/jwks")); err != nil || string(b) != "k" {
		t.Errorf("jwks %q, %v", b, err)
	}
	// After a success the next write waits for the interval or a change.
	n := target.count()
	time.Sleep(100 * time.Millisecond)
	if target.count() != n {
		t.Errorf("wrote %d more times without a change or the interval", target.count()-n)
	}
	p.Update(docs(gen(time.Hour, 0), "k2"))
	waitFor(t, func() bool { b, _ := os.ReadFile(filepath.Join(target.Root, "aws/jwks")); return string(b) == "k2" }, "a key change published at once")
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}

func TestUnreadyAfterZeroNeverFails(t *testing.T) {
	target := &failing{Dir: Dir{Root: t.TempDir()}, broken: true}
	now := t0
	p := New(Options{Endpoint: "aws", Target: target, Interval: time.Hour, Now: func() time.Time { return now }})
	if err := p.Attempt(context.Background(), docs(gen(0, 0), "k")); err == nil {
		t.Fatal("a broken target took the write")
	}
	now = now.Add(24 * time.Hour)
	if err := p.Check(); err != nil {
		t.Errorf("UnreadyAfter 0: Check = %v, want nil", err)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestGenerationOfKeySet(t *testing.T) {
	rec := func(created time.Time) keys.Record {
		r, err := keys.NewRecord(keys.ES256, created, created)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	set, err := keys.SetOf([]keys.Record{rec(t0.Add(time.Hour)), rec(t0), rec(t0.Add(30 * time.Minute))}, t0.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if g := GenerationOf(set); g != gen(time.Hour, 0) {
		t.Errorf("GenerationOf = %s, want newest +1h, oldest t0", g)
	}
}
