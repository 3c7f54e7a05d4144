package status

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWriteRead: what Write puts in the file, Read gives back, with the
// kind of failure; the text is the one users see in kubectl describe pod.
func TestWriteRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".token.jwt.status")
	since := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	f := Failure{Refused: true, Attempts: 2, Since: since, Last: since.Add(30 * time.Second), RetryIn: 30 * time.Second, Err: "HTTP 400 invalid_request: denied"}
	if err := Write(path, f, 0o440); err != nil {
		t.Fatal(err)
	}
	r, ok := Read(path)
	want := "the issuer refused the exchange; 2 attempt(s) failed since 2026-12-03T10:00:00Z, the last at 2026-12-03T10:00:30Z (no valid token held; retry in 30s): HTTP 400 invalid_request: denied"
	if !ok || !r.Refused || r.Text != want || time.Since(r.Written) > time.Minute {
		t.Fatalf("Read = %+v, %v; want refused, %q, written just now", r, ok, want)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o440 {
		t.Errorf("mode %v, want the token's 0440", fi.Mode().Perm())
	}
	f.Refused, f.HeldUntil = false, since.Add(time.Hour)
	if err := Write(path, f, 0o440); err != nil {
		t.Fatal(err)
	}
	if r, _ := Read(path); r.Refused || !strings.HasPrefix(r.Text, "the exchange is failing; 2 attempt(s)") || !strings.Contains(r.Text, "holding the last token until 2026-12-03T11:00:00Z") {
		t.Fatalf("a failing exchange: %+v", r)
	}
	if err := Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, ok := Read(path); ok {
		t.Fatal("a removed status is read")
	}
	if err := Remove(path); err != nil {
		t.Fatalf("removing a missing status: %v", err)
	}
}

// TestReadBounded: a status file larger than MaxBytes (not one the sidecar
// writes) is cut.
func TestReadBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	if err := os.WriteFile(path, []byte(strings.Repeat("x", 10*MaxBytes)), 0o644); err != nil {
		t.Fatal(err)
	}
	if r, ok := Read(path); !ok || len(r.Text) != MaxBytes {
		t.Fatalf("read %d bytes, want %d", len(r.Text), MaxBytes)
	}
}
