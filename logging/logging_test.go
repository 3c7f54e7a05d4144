package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestStyle(t *testing.T) {
	var buf bytes.Buffer
	log, err := New("info", &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Named("server").Info("serving", zap.String("listen_addr", ":8443"))
	log.Debug("hidden at info")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one line (debug is below info), got %d: %q", len(lines), buf.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatalf("not a JSON line: %v", err)
	}
	for k, want := range map[string]string{"level": "info", "logger": "server", "msg": "serving", "listen_addr": ":8443"} {
		if rec[k] != want {
			t.Errorf("%s = %v, want %q", k, rec[k], want)
		}
	}
	ts, _ := rec["ts"].(string)
	if _, err := time.Parse("2006-01-02T15:04:05.000Z0700", ts); err != nil {
		t.Errorf("ts %q is not ISO 8601 with milliseconds: %v", ts, err)
	}
}

func TestLevels(t *testing.T) {
	for _, l := range Levels {
		if _, err := New(l, &bytes.Buffer{}); err != nil {
			t.Errorf("%s: %v", l, err)
		}
	}
	for _, l := range []string{"verbose", "INFO", "fatal", "panic", ""} {
		_, err := New(l, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "use debug, info, warn or error") {
			t.Errorf("level %q: got %v, want an error naming the levels", l, err)
		}
		if CheckLevel(l) == nil {
			t.Errorf("CheckLevel(%q) accepted it", l)
		}
	}
}

// TestEndpoint: the endpoint's name is under endpoint, and under the
// deprecated sts as well.
func TestEndpoint(t *testing.T) {
	var b strings.Builder
	log, err := New("info", &b)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("token issued", Endpoint("vault"))
	_ = log.Sync()
	var line map[string]any
	if err := json.Unmarshal([]byte(b.String()), &line); err != nil {
		t.Fatal(err)
	}
	if line["endpoint"] != "vault" || line["sts"] != "vault" {
		t.Errorf("line %v, want endpoint and sts = vault", line)
	}
}
