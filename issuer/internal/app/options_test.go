package app

import (
	"io"
	"strings"
	"testing"
)

// TestOptions: literal defaults, the namespace from the environment unless a
// flag names it, and Validate reporting every problem at once.
func TestOptions(t *testing.T) {
	o := NewOptions()
	if o.Review != "tokenreview" || o.WatchMaxStale.String() != "2s" {
		t.Fatalf("review defaults: %q %v", o.Review, o.WatchMaxStale)
	}
	if o.Listen != ":8443" || o.KubeQPS != 1000 || o.KubeBurst != 2000 || o.MaxInFlight != 256 || o.MaxPending != 256 || o.MaxPendingPerAddress != 32 || o.MaxConnections != 512 || o.MaxConnectionsPerAddress != 32 || o.PerToken != 5 || o.APITimeout.String() != "5s" {
		t.Fatalf("defaults: %+v", o)
	}
	env := func(k string) string { return map[string]string{"POD_NAMESPACE": "sts-system"}[k] }
	o.Complete(env)
	if o.Namespace != "sts-system" {
		t.Fatalf("namespace from the environment: %q", o.Namespace)
	}
	o = NewOptions()
	o.Namespace = "explicit"
	o.Complete(env)
	if o.Namespace != "explicit" {
		t.Fatalf("--namespace overridden by the environment: %q", o.Namespace)
	}

	o = NewOptions()
	o.APITimeout, o.KubeQPS, o.MaxInFlight, o.TLSCertFile, o.LogLevel, o.Review, o.WatchMaxStale = 0, 0, 0, "", "loud", "informer", 0
	err := o.Validate()
	for _, want := range []string{"--api-timeout", "--kube-api-qps", "--max-inflight-exchanges", "--tls-cert-file", "--log-level", `--review must be one of tokenreview, watch, not "informer"`, "--watch-max-stale"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %s", err, want)
		}
	}
	if _, err := parse([]string{"stray"}, io.Discard); err == nil || !strings.Contains(err.Error(), `unexpected argument "stray"`) {
		t.Fatalf("stray argument: %v", err)
	}
}

// TestMetricsOff: empty and "0" both turn /metrics off, as for the webhook.
func TestMetricsOff(t *testing.T) {
	for in, want := range map[string]string{"": "", "0": "", ":9090": ":9090", "127.0.0.1:0": "127.0.0.1:0"} {
		o := NewOptions()
		o.MetricsListen = in
		o.Complete(func(string) string { return "" })
		if o.MetricsListen != want {
			t.Errorf("--metrics-listen=%q: %q, want %q", in, o.MetricsListen, want)
		}
	}
}
