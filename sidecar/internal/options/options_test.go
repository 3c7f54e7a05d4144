package options

import (
	"errors"
	"flag"
	"io"
	"io/fs"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kube-sts/kube-sts/shared/contract"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParse(t *testing.T) {
	base := map[string]string{"STS_EXCHANGE_URL": "https://sts.example/vault/token"}
	tests := map[string]struct {
		args   []string
		env    map[string]string
		check  func(t *testing.T, o Options)
		wantIn string
	}{
		"defaults from env url": {
			env: base,
			check: func(t *testing.T, o Options) {
				// Literal values: the documented defaults, not Defaults() compared with itself.
				want := Options{
					Mode:             "run",
					SubjectTokenFile: "/var/run/secrets/kube-sts/token",
					ExchangeURL:      "https://sts.example/vault/token",
					OutputFile:       "/tokens/token.jwt",
					HTTPTimeout:      10 * time.Second,
					RefreshFraction:  0.8,
					BackoffMin:       time.Second,
					BackoffMax:       30 * time.Second,
					RefusedRetry:     30 * time.Second,
					LogLevel:         "info",
					FileMode:         0o440,
					ProbeMargin:      10 * time.Second,
					AwaitTimeout:     5 * time.Minute,
					TerminationLog:   "/dev/termination-log",
				}
				if !reflect.DeepEqual(o, want) {
					t.Fatalf("got %+v, want %+v", o, want)
				}
			},
		},
		"every env var": {
			env: map[string]string{
				"STS_EXCHANGE_URL": "https://sts.example/token", "STS_SUBJECT_TOKEN_FILE": "/sa/token", "STS_OUTPUT_FILE": "/out/t.jwt",
				"STS_CA_FILE": "/ca.crt", "STS_CA_PEM": "PEM", "STS_HTTP_TIMEOUT": "3s", "STS_REFRESH_FRACTION": "0.7",
				"STS_BACKOFF_MIN": "2s", "STS_BACKOFF_MAX": "1m", "STS_REFUSED_RETRY": "2m", "STS_LOG_LEVEL": "debug",
				"STS_FILE_MODE": "0400", "STS_PROBE_MARGIN": "30s", "STS_AWAIT_TIMEOUT": "2m",
				"STS_TERMINATION_LOG": "/dev/null", "STS_LIFETIME": "10m0s",
			},
			check: func(t *testing.T, o Options) {
				want := Options{Mode: "run", ExchangeURL: "https://sts.example/token", SubjectTokenFile: "/sa/token", OutputFile: "/out/t.jwt",
					CAFile: "/ca.crt", CAPEM: "PEM", HTTPTimeout: 3 * time.Second, RefreshFraction: 0.7, BackoffMin: 2 * time.Second,
					BackoffMax: time.Minute, RefusedRetry: 2 * time.Minute, LogLevel: "debug", FileMode: 0o400, ProbeMargin: 30 * time.Second,
					AwaitTimeout: 2 * time.Minute, TerminationLog: "/dev/null", Lifetime: 10 * time.Minute}
				if !reflect.DeepEqual(o, want) {
					t.Fatalf("got %+v, want %+v", o, want)
				}
			},
		},
		"flag wins over env": {
			args: []string{"--exchange-url", "https://flag.example/token", "--file-mode=0444"},
			env:  map[string]string{"STS_EXCHANGE_URL": "https://env.example/token", "STS_FILE_MODE": "0400"},
			check: func(t *testing.T, o Options) {
				if o.ExchangeURL != "https://flag.example/token" || o.FileMode != fs.FileMode(0o444) {
					t.Fatalf("got %s %o", o.ExchangeURL, o.FileMode)
				}
			},
		},
		"once mode": {
			args: []string{"once"}, env: base,
			check: func(t *testing.T, o Options) {
				if o.Mode != "once" {
					t.Fatalf("mode %q", o.Mode)
				}
			},
		},
		"probe needs no url": {
			args: []string{"probe", "--output-file", "/tokens/token.jwt"},
			check: func(t *testing.T, o Options) {
				if o.Mode != "probe" {
					t.Fatalf("mode %q", o.Mode)
				}
			},
		},
		"further tokens": {
			env: map[string]string{"STS_EXCHANGE_URL": "https://sts.example/vault/token",
				"STS_TOKENS": `[{"name":"aws-role","exchangeURL":"https://sts.example/aws/token","subjectTokenFile":"/var/run/secrets/kube-sts/aws-role.token","outputFile":"/tokens/aws-role.jwt","caPEM":"PEM"}]`},
			check: func(t *testing.T, o Options) {
				want := []contract.Token{{Name: "aws-role", ExchangeURL: "https://sts.example/aws/token",
					SubjectTokenFile: "/var/run/secrets/kube-sts/aws-role.token", OutputFile: "/tokens/aws-role.jwt", CAPEM: "PEM"}}
				if !reflect.DeepEqual(o.Further, want) {
					t.Fatalf("further tokens %+v, want %+v", o.Further, want)
				}
			},
		},
		"probe of further tokens needs no url": {
			args: []string{"probe"},
			env:  map[string]string{"STS_TOKENS": `[{"name":"aws-role","outputFile":"/tokens/aws-role.jwt"}]`},
			check: func(t *testing.T, o Options) {
				if len(o.Further) != 1 || o.Further[0].OutputFile != "/tokens/aws-role.jwt" {
					t.Fatalf("further tokens %+v", o.Further)
				}
			},
		},
		"further tokens not JSON":    {env: map[string]string{"STS_EXCHANGE_URL": "https://x/token", "STS_TOKENS": "aws-role"}, wantIn: "env STS_TOKENS: not a JSON list"},
		"further token, unknown key": {env: map[string]string{"STS_EXCHANGE_URL": "https://x/token", "STS_TOKENS": `[{"name":"a","url":"https://x"}]`}, wantIn: `unknown field "url"`},
		"further token, problems": {
			env: map[string]string{"STS_EXCHANGE_URL": "https://x/token",
				"STS_TOKENS": `[{"name":"Aws","exchangeURL":"ftp://x","subjectTokenFile":"","outputFile":"/tokens/token.jwt"}]`},
			wantIn: "--tokens (STS_TOKENS) [0]: name \"Aws\" must consist of lower-case letters",
		},
		"further token, same file": {
			env: map[string]string{"STS_EXCHANGE_URL": "https://x/token",
				"STS_TOKENS": `[{"name":"aws","exchangeURL":"https://x/aws/token","subjectTokenFile":"/s","outputFile":"/tokens/token.jwt"}]`},
			wantIn: "outputFile /tokens/token.jwt is also the file of --output-file",
		},
		"missing url": {wantIn: "--exchange-url (STS_EXCHANGE_URL) is required"},
		"lifetime in fractions": {env: map[string]string{"STS_EXCHANGE_URL": "https://x/token", "STS_LIFETIME": "90.5s"},
			wantIn: "--lifetime (STS_LIFETIME) 1m30.5s must be whole seconds from 0 (the endpoint's) to 24h0m0s"},
		"bad url":             {env: map[string]string{"STS_EXCHANGE_URL": "ftp://x"}, wantIn: "is not an http(s) URL"},
		"unknown mode":        {args: []string{"serve"}, env: base, wantIn: `unknown mode "serve"`},
		"bad env duration":    {env: map[string]string{"STS_EXCHANGE_URL": "https://x/token", "STS_HTTP_TIMEOUT": "soon"}, wantIn: "env STS_HTTP_TIMEOUT"},
		"bad env mode":        {env: map[string]string{"STS_EXCHANGE_URL": "https://x/token", "STS_FILE_MODE": "rw"}, wantIn: "env STS_FILE_MODE"},
		"world writable":      {args: []string{"--file-mode", "0666"}, env: base, wantIn: "others cannot write"},
		"unreadable by owner": {args: []string{"--file-mode", "0040"}, env: base, wantIn: "owner can read"},
		"fraction too high":   {args: []string{"--refresh-fraction", "0.99"}, env: base, wantIn: "between 0.1 and 0.95"},
		"backoff inverted":    {args: []string{"--backoff-min", "1m", "--backoff-max", "1s"}, env: base, wantIn: "backoff bounds"},
		"bad log level":       {args: []string{"--log-level", "loud"}, env: base, wantIn: "--log-level"},
		"stray argument":      {args: []string{"run", "extra"}, env: base, wantIn: `unexpected argument "extra"`},
		"several problems": {
			args: []string{"--http-timeout", "0s", "--log-level", "loud"}, env: base,
			check: nil, wantIn: "--http-timeout (STS_HTTP_TIMEOUT) must be positive\n--log-level",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			o, err := Parse(tc.args, env(tc.env), io.Discard)
			if tc.wantIn != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantIn) {
					t.Fatalf("Parse = %v, want error containing %q", err, tc.wantIn)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tc.check(t, o)
		})
	}
}

func TestHelp(t *testing.T) {
	var b strings.Builder
	_, err := Parse([]string{"-h"}, env(nil), &b)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Parse(-h) = %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"once", "probe", "STS_EXCHANGE_URL", "STS_CA_PEM", "-refresh-fraction"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("help does not mention %q", want)
		}
	}
}
