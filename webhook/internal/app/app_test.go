package app

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/kube-sts/kube-sts/webhook/internal/config"
)

func TestNativeModes(t *testing.T) {
	cfg, err := config.Parse([]byte(`
injectors:
- {name: auto, exchangeURL: https://sts/v/token, image: i}
- {name: always, exchangeURL: https://sts/v/token, image: i, nativeSidecar: always}
- {name: never, exchangeURL: https://sts/v/token, image: i, nativeSidecar: never}
`))
	if err != nil {
		t.Fatal(err)
	}
	for version, wantAuto := range map[string]bool{"v1.28.9": false, "v1.29.0": true, "v1.37.2": true, "v1.30.1-eks-1234": true, "v1.27.0+k3s1": false} {
		calls := 0
		modes, err := nativeModes(cfg, func() (string, error) { calls++; return version, nil })
		if err != nil {
			t.Fatal(err)
		}
		if modes["auto"] != wantAuto || !modes["always"] || modes["never"] || calls != 1 {
			t.Fatalf("%s: modes %v (version asked %d times)", version, modes, calls)
		}
	}
	if _, err := nativeModes(cfg, func() (string, error) { return "", errors.New("unreachable") }); err == nil {
		t.Fatal("an unreachable API server was ignored in auto mode")
	}
}

func TestParseOptions(t *testing.T) {
	for name, tc := range map[string]struct {
		args   []string
		wantIn string
	}{
		"defaults":         {},
		"bad tls mode":     {args: []string{"--tls-mode", "acme"}, wantIn: `--tls-mode "acme"`},
		"bad listen":       {args: []string{"--listen", "9443"}, wantIn: "--listen"},
		"bad log level":    {args: []string{"--log-level", "loud"}, wantIn: "--log-level"},
		"self needs names": {args: []string{"--tls-mode", "self", "--dns-name", ""}, wantIn: "required with --tls-mode=self"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parse(tc.args, io.Discard)
			if tc.wantIn == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantIn) {
				t.Fatalf("parse = %v, want %q", err, tc.wantIn)
			}
		})
	}
}

// TestCheckConfig: --check-config validates the file with the real parser and
// exits without touching the API server.
func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good, bad := dir+"/good.yaml", dir+"/bad.yaml"
	if err := os.WriteFile(good, []byte("injectors: [{name: vault-sts, exchangeURL: https://sts/vault/token, image: i}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("injectors: [{name: Vault, exchangeURL: ftp://x, image: i}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := Run(context.Background(), []string{"--check-config", "--config", good, "--kubeconfig", "/nonexistent"}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "is valid") {
		t.Fatalf("valid file: %v %q", err, out.String())
	}
	err := Run(context.Background(), []string{"--check-config", "--config", bad}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "injectors[0].name") || !strings.Contains(err.Error(), "injectors[0].exchangeURL") {
		t.Fatalf("invalid file: %v", err)
	}
}

// TestComplete: the namespace comes from --namespace, else $POD_NAMESPACE,
// else kube-sts.
func TestComplete(t *testing.T) {
	for _, tc := range []struct{ flag, env, want string }{{"", "", "kube-sts"}, {"", "sts-system", "sts-system"}, {"mine", "sts-system", "mine"}} {
		o := NewOptions()
		o.Namespace = tc.flag
		o.Complete(func(string) string { return tc.env })
		if o.Namespace != tc.want {
			t.Errorf("--namespace %q, POD_NAMESPACE %q: %q, want %q", tc.flag, tc.env, o.Namespace, tc.want)
		}
	}
}

// TestMetricsOff: empty and "0" both turn /metrics off, as for the issuer;
// controller-runtime is handed its "0".
func TestMetricsOff(t *testing.T) {
	for in, want := range map[string]string{"": "0", "0": "0", ":8080": ":8080", "127.0.0.1:0": "127.0.0.1:0"} {
		o := NewOptions()
		o.MetricsListen = in
		o.Complete(func(string) string { return "" })
		if got := metricsBind(o.MetricsListen); got != want {
			t.Errorf("--metrics-listen=%q: bind %q, want %q", in, got, want)
		}
	}
}
