package refresh

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kube-sts/kube-sts/sidecar/internal/exchanger"
	"github.com/kube-sts/kube-sts/sidecar/internal/issuertest"
)

// jwtExpiring is a JWT-shaped token that expires at exp.
func jwtExpiring(exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"ES256","typ":"JWT"}`)) + "." +
		enc([]byte(fmt.Sprintf(`{"jti":"left-over","iat":%d,"exp":%d}`, exp.Add(-time.Hour).Unix(), exp.Unix()))) + ".c2ln"
}

// TestLeftoverExpiredTokenRemovedAtStart: a token an earlier run left behind
// that has expired is removed at once, even while the issuer is down.
func TestLeftoverExpiredTokenRemovedAtStart(t *testing.T) {
	f := newFixture(t, time.Minute, nil)
	f.issuer.Set(issuertest.Unavailable)
	if err := os.WriteFile(f.out, []byte(jwtExpiring(time.Now().Add(-time.Second))), 0o440); err != nil {
		t.Fatal(err)
	}
	f.start()
	waitFor(t, 2*time.Second, "expired leftover removed", func() bool { _, ok := f.file(); return !ok })
}

// TestLeftoverValidTokenExpires: a valid leftover is served until it expires
// and then removed while the issuer stays down; it does not survive forever.
func TestLeftoverValidTokenExpires(t *testing.T) {
	f := newFixture(t, time.Minute, nil)
	f.issuer.Set(issuertest.Unavailable)
	exp := time.Now().Add(1500 * time.Millisecond).Truncate(time.Second).Add(time.Second)
	left := jwtExpiring(exp)
	if err := os.WriteFile(f.out, []byte(left), 0o440); err != nil {
		t.Fatal(err)
	}
	f.start()
	waitFor(t, 2*time.Second, "first failed exchange", func() bool { return f.issuer.Count() >= 1 })
	if s, ok := f.file(); !ok || s != left {
		t.Fatal("the valid leftover was not kept while the issuer is down")
	}
	waitFor(t, time.Until(exp)+2*time.Second, "leftover removed at its exp", func() bool { _, ok := f.file(); return !ok })
	if late := time.Since(exp); late < 0 {
		t.Fatalf("removed %v before its exp", -late)
	}
	f.assertNoTokenInLogs()
}

// TestUnwritableTokensDirRetriesOnlyTheWrite: when /tokens cannot take the
// file, the fetched token is kept and only the write is retried; one
// exchange, then the file appears as soon as the directory does.
func TestUnwritableTokensDirRetriesOnlyTheWrite(t *testing.T) {
	f := newFixture(t, time.Minute, nil)
	dir := filepath.Dir(f.out)
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	f.start()
	waitFor(t, 2*time.Second, "failed writes", func() bool { return f.logs.FilterMessage("exchange failed; retrying").Len() >= 3 })
	if n := f.issuer.Count(); n != 1 {
		t.Fatalf("%d exchanges while only the write failed, want 1", n)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "token written once the directory is back", func() bool { _, ok := f.file(); return ok })
	if s, _ := f.file(); s != f.issuer.Minted()[0] {
		t.Fatal("the file does not hold the token fetched first")
	}
	if n := f.issuer.Count(); n != 1 {
		t.Fatalf("%d exchanges, want 1", n)
	}
}

// TestBackoffMaxIsHardCap: jitter never takes a retry past BackoffMax.
func TestBackoffMaxIsHardCap(t *testing.T) {
	f := newFixture(t, time.Minute, func(c *Config) { c.BackoffMin, c.BackoffMax = time.Second, 30*time.Second })
	transient := &exchanger.Error{Kind: exchanger.Transient, Status: 503, Err: errors.New("issuer answered HTTP 503")}
	top := time.Duration(0)
	for range 200 {
		w := f.r.retryAfter(transient)
		if w > 30*time.Second {
			t.Fatalf("retry after %v with a 30s maximum", w)
		}
		top = max(top, w)
	}
	if top != 30*time.Second {
		t.Fatalf("the backoff never reached its maximum: %v", top)
	}
}
