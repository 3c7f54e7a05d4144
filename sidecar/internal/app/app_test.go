package app

import "testing"

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
