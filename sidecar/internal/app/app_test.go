package app

import (
	"context"
	"io"
	"os"
	"runtime/debug"
	"testing"
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
