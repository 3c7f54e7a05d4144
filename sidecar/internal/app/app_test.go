package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/kube-sts/kube-sts/sidecar/internal/issuertest"
)

func TestGCPercent(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	if p, ok := gcPercent(getenv); !ok || p != DefaultGCPercent {
		t.Errorf("without GOGC: gcPercent = %d, %v; want %d, true", p, ok, DefaultGCPercent)
	}
	env["GOGC"] = "200"
	if _, ok := gcPercent(getenv); ok {
		t.Error("with GOGC set the sidecar must leave the runtime's setting alone")
	}
}

// TestRunSetsGCPercent: the binary's entry point applies the default, not
// only the helper computing it.
func TestRunSetsGCPercent(t *testing.T) {
	if os.Getenv("GOGC") != "" {
		t.Skip("GOGC is set for this test process; Run leaves it alone by design")
	}
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	if err := Run(context.Background(), []string{"--version"}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	if got := debug.SetGCPercent(100); got != DefaultGCPercent {
		t.Errorf("after Run the GC percent is %d, want %d", got, DefaultGCPercent)
	}
}

// TestAwaitLogs: await says in the sidecar's log that the token came, when
// the hook started and how long it waited (the kubelet drops a successful
// postStart hook's own output), or why no token came.
func TestAwaitLogs(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token.jwt")
	if err := os.WriteFile(tok, []byte(issuertest.Mint(1, time.Now(), time.Now().Add(time.Hour))), 0o440); err != nil {
		t.Fatal(err)
	}
	getenv := func(string) string { return "" }
	record := func(log *bytes.Buffer) map[string]any {
		t.Helper()
		var rec map[string]any
		if err := json.Unmarshal(bytes.TrimSpace(log.Bytes()), &rec); err != nil {
			t.Fatalf("want one JSON log line, got %q: %v", log.String(), err)
		}
		return rec
	}
	var log bytes.Buffer
	before := time.Now()
	if err := run(context.Background(), []string{"await", "--output-file", tok}, getenv, io.Discard, &log); err != nil {
		t.Fatalf("await with the token there: %v", err)
	}
	rec := record(&log)
	started, err := time.Parse("2006-01-02T15:04:05.000Z0700", fmt.Sprint(rec["started"]))
	if rec["msg"] != "token awaited" || err != nil || started.Before(before.Truncate(time.Millisecond)) || started.After(time.Now()) {
		t.Errorf("await's log line: %v (started: %v)", rec, err)
	}
	if w, ok := rec["waited"].(float64); !ok || w < 0 || w > 5 {
		t.Errorf("waited = %v, want seconds", rec["waited"])
	}

	log.Reset()
	err = run(context.Background(), []string{"await", "--output-file", filepath.Join(dir, "never"), "--await-timeout", "50ms"}, getenv, io.Discard, &log)
	rec = record(&log)
	if err == nil || rec["msg"] != "no token awaited" || !strings.Contains(fmt.Sprint(rec["error"]), "no valid token after 50ms") {
		t.Errorf("await without a token: %v; logged %v", err, rec)
	}
}
