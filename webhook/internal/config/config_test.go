package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte(`injectors: [{name: vault-sts, exchangeURL: "https://sts.example/vault/token", image: sidecar:1}]`))
	if err != nil {
		t.Fatal(err)
	}
	in := c.Injectors[0]
	if in.SubjectAudience != "https://sts.example/vault" || in.ExpirationSeconds != 600 || *in.User != 100 || *in.Group != 1000 ||
		in.TokenPathEnv != "STS_TOKEN_FILE" || in.ValueEnv != "STS_TOKEN_ENABLED" || in.NativeSidecar != NativeAuto || in.ImagePullPolicy != "IfNotPresent" {
		t.Fatalf("defaults %+v", in)
	}
	if in.Resources.Requests.Cpu().String() != "5m" || in.Resources.Requests.Memory().String() != "16Mi" || in.Resources.Limits.Memory().String() != "32Mi" {
		t.Fatalf("resources %+v", in.Resources)
	}
	if in.ReadinessProbe == nil || !*in.ReadinessProbe {
		t.Fatalf("readinessProbe defaults to %v, want true", in.ReadinessProbe)
	}
	c, err = Parse([]byte(`injectors: [{name: vault-sts, exchangeURL: "https://sts.example/vault/token", image: sidecar:1, readinessProbe: false}]`))
	if err != nil || *c.Injectors[0].ReadinessProbe {
		t.Fatalf("readinessProbe: false read as %v (%v)", c.Injectors[0].ReadinessProbe, err)
	}
}

func TestValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		yaml   string
		wantIn []string
	}{
		"empty":       {yaml: `{}`, wantIn: []string{"injectors: at least one"}},
		"unknown key": {yaml: `injector: []`, wantIn: []string{`unknown field "injector"`}},
		"everything wrong": {yaml: `injectors: [{name: "Vault STS", exchangeURL: "ftp://x", expirationSeconds: 60, user: 0, group: -1, imagePullPolicy: Sometimes, nativeSidecar: maybe, caPEM: x, caConfigMap: {name: ouca}}]`,
			wantIn: []string{"injectors[0].name:", "injectors[0].exchangeURL:", "injectors[0].expirationSeconds: 60", "injectors[0].image: is required",
				"injectors[0].imagePullPolicy:", "injectors[0].user: 0 must be a non-root uid", "injectors[0].group: -1", "set one of caPEM, caFile or caConfigMap, not 2", "injectors[0].nativeSidecar: \"maybe\""}},
		"relative caFile": {yaml: `injectors: [{name: a, exchangeURL: "https://s/t", image: i, caFile: tls/ca.crt}]`, wantIn: []string{`injectors[0].caFile: "tls/ca.crt" must be an absolute path`}},
		"duplicate":       {yaml: `injectors: [{name: a, exchangeURL: "https://s/t", image: i}, {name: a, exchangeURL: "https://s/t", image: i}]`, wantIn: []string{`injectors[1].name: "a" is also the name of injectors[0]`}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.wantIn {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestLoadErrorsNameFileLineAndField: the webhook's file is read as strictly
// as the issuer's, and its errors say where.
func TestLoadErrorsNameFileLineAndField(t *testing.T) {
	file := filepath.Join(t.TempDir(), "webhook.yaml")
	if err := os.WriteFile(file, []byte(`injectors:
- name: vault-sts
  exchangeURL: https://sts.example.com/vault/token
  image: sidecar:v1
  readinessProbe: yes
  expirationSeconds: 60
`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(file)
	if want := file + `:5: injectors[0].readinessProbe: "yes" is not a boolean: write true or false`; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("missing %q in:\n%v", want, err)
	}
	// Decoded, its validation errors point at their lines as well.
	if err := os.WriteFile(file, []byte(strings.Replace(mustRead(t, file), "yes", "true", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(file)
	if want := file + ":6: injectors[0].expirationSeconds: 60 must be between 600"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("missing %q in:\n%v", want, err)
	}
}

func mustRead(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
