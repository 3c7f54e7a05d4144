package probe

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kube-sts/kube-sts/shared/contract"
	"github.com/kube-sts/kube-sts/sidecar/internal/issuertest"
	"github.com/kube-sts/kube-sts/sidecar/internal/status"
)

// TestStatusBounded: a status file larger than the probe prints (not one the
// sidecar writes) is cut, so a probe's output stays within what the kubelet
// keeps.
func TestStatusBounded(t *testing.T) {
	out := filepath.Join(t.TempDir(), "token.jwt")
	if err := os.WriteFile(contract.StatusPath(out), []byte(strings.Repeat("x", 10*status.MaxBytes)), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Probe(out, time.Now(), 0)
	if err == nil || len(err.Error()) > status.MaxBytes+200 {
		t.Fatalf("probe printed %d bytes", len(err.Error()))
	}
}

func TestProbe(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1_768_236_189, 0)
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o440); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := map[string]struct {
		path   string
		wantIn string
	}{
		"valid":            {path: write("valid", issuertest.Mint(1, now, now.Add(time.Hour)))},
		"valid with space": {path: write("space", issuertest.Mint(1, now, now.Add(time.Hour))+"\n")},
		"missing":          {path: filepath.Join(dir, "missing"), wantIn: "no token at"},
		"empty":            {path: write("empty", ""), wantIn: "does not hold a JWT"},
		"garbage":          {path: write("garbage", "not a jwt"), wantIn: "does not hold a JWT"},
		"expired":          {path: write("expired", issuertest.Mint(1, now.Add(-time.Hour), now.Add(-time.Second))), wantIn: "expires at"},
		"within margin":    {path: write("margin", issuertest.Mint(1, now, now.Add(5*time.Second))), wantIn: "within 10s"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := Probe(tc.path, now, 10*time.Second)
			if tc.wantIn == "" {
				if err != nil {
					t.Fatalf("Probe: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantIn) {
				t.Fatalf("Probe = %v, want error containing %q", err, tc.wantIn)
			}
		})
	}
}

// TestAwait: await returns as soon as a valid token lands (well within a
// probe period), and fails after its timeout with the probe's reason.
func TestAwait(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token.jwt")
	go func() {
		time.Sleep(100 * time.Millisecond)
		_ = os.WriteFile(path+".tmp", []byte(issuertest.Mint(1, time.Now(), time.Now().Add(time.Hour))), 0o440)
		_ = os.Rename(path+".tmp", path)
	}()
	start := time.Now()
	if err := Await(context.Background(), []string{path}, 10*time.Second, 10*time.Second); err != nil {
		t.Fatalf("Await: %v", err)
	}
	if took := time.Since(start); took < 100*time.Millisecond || took > 500*time.Millisecond {
		t.Errorf("Await returned after %v, want soon after the write at 100ms", took)
	}
	err := Await(context.Background(), []string{filepath.Join(dir, "never")}, 10*time.Second, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "no valid token after 100ms") || !strings.Contains(err.Error(), "no token at") {
		t.Fatalf("Await on a file that never comes: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Await(ctx, []string{filepath.Join(dir, "never")}, 10*time.Second, time.Hour); err == nil {
		t.Fatal("Await ignored its context")
	}
}

// TestAwaitAll: with several tokens (a Pod's further injectors), await
// returns only when every file holds a valid token, and its error names the
// files still missing, not those already there.
func TestAwaitAll(t *testing.T) {
	dir := t.TempDir()
	first, further := filepath.Join(dir, "token.jwt"), filepath.Join(dir, "aws-role.jwt")
	if err := os.WriteFile(first, []byte(issuertest.Mint(1, time.Now(), time.Now().Add(time.Hour))), 0o440); err != nil {
		t.Fatal(err)
	}
	err := Await(context.Background(), []string{first, further}, 10*time.Second, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "no token at "+further) || strings.Contains(err.Error(), first) {
		t.Fatalf("Await with the further token missing: %v", err)
	}
	wrote := make(chan time.Time, 1)
	go func() {
		time.Sleep(100 * time.Millisecond)
		_ = os.WriteFile(further+".tmp", []byte(issuertest.Mint(2, time.Now(), time.Now().Add(time.Hour))), 0o440)
		wrote <- time.Now() // before the rename, which Await may see at once
		_ = os.Rename(further+".tmp", further)
	}()
	if err := Await(context.Background(), []string{first, further}, 10*time.Second, 10*time.Second); err != nil {
		t.Fatalf("Await: %v", err)
	}
	select {
	case <-wrote:
	default:
		t.Fatal("Await returned before the further token was written")
	}
	if err := All([]string{first, further}, time.Now(), 0); err != nil {
		t.Fatalf("ProbeAll: %v", err)
	}
}
