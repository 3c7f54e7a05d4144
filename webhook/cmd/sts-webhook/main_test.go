package main

import (
	"errors"
	"io"
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
			_, err := parseOptions(tc.args, io.Discard)
			if tc.wantIn == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantIn) {
				t.Fatalf("parseOptions = %v, want %q", err, tc.wantIn)
			}
		})
	}
}
