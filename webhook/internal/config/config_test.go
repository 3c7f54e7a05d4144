package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	if in.ReadinessProbe == nil || *in.ReadinessProbe {
		t.Fatalf("readinessProbe defaults to %v, want false", in.ReadinessProbe)
	}
	c, err = Parse([]byte(`injectors: [{name: vault-sts, exchangeURL: "https://sts.example/vault/token", image: sidecar:1, readinessProbe: true}]`))
	if err != nil || !*c.Injectors[0].ReadinessProbe {
		t.Fatalf("readinessProbe: true read as %v (%v)", c.Injectors[0].ReadinessProbe, err)
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

// TestInjectorFieldsStrict: the image, the exchange URL and the CA bundle are
// checked as strictly as the issuer's fields, each with the reason.
func TestInjectorFieldsStrict(t *testing.T) {
	ca := testCAPEM(t)
	base := func(extra string) string {
		return "injectors:\n- name: vault-sts\n  exchangeURL: https://sts.example.com/vault/token\n  image: sidecar:v1\n" + extra
	}
	bad := map[string]struct{ yaml, want string }{
		"placeholder image":   {strings.Replace(base(""), "sidecar:v1", "<registry>/kube-sts/sts-creds-sidecar:v1", 1), "still holds a placeholder"},
		"upper-case image":    {strings.Replace(base(""), "sidecar:v1", "Kube-STS/Sidecar:v1", 1), "is not an image reference"},
		"image with a scheme": {strings.Replace(base(""), "sidecar:v1", "https://reg.example/sidecar:v1", 1), "is a URL"},
		"http exchange":       {strings.Replace(base(""), "https://sts.example.com", "http://sts.example.com", 1), "plain http"},
		"http, not loopback":  {strings.Replace(base("  insecureHTTP: true\n"), "https://sts.example.com", "http://10.0.0.1:8080", 1), "only a loopback address"},
		"not the token path":  {strings.Replace(base(""), "/vault/token", "/vault", 1), "is not the issuer's token endpoint"},
		"garbage CA":          {base("  caPEM: not a certificate\n"), "injectors[0].caPEM: holds no PEM certificate"},
		"key in CA bundle":    {base("  caPEM: |\n    -----BEGIN PRIVATE KEY-----\n    AAAA\n    -----END PRIVATE KEY-----\n"), "holds a PRIVATE KEY block"},
	}
	for name, tc := range bad {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	good := []string{
		base(""),
		strings.Replace(base("  insecureHTTP: true\n"), "https://sts.example.com", "http://127.0.0.1:8443", 1),
		strings.Replace(base("  insecureHTTP: true\n"), "https://sts.example.com", "http://[::1]:8443", 1),
		strings.Replace(base(""), "sidecar:v1", "reg.example:5000/kube-sts/sts-creds-sidecar:v0.1.0", 1),
		strings.Replace(base(""), "sidecar:v1", "reg.example/kube-sts/sts-creds-sidecar@sha256:"+strings.Repeat("ab", 32), 1),
		strings.Replace(base(""), "sidecar:v1", "local/sts-creds-sidecar:e2e", 1),
		base("  caPEM: |\n    " + strings.ReplaceAll(strings.TrimSpace(ca), "\n", "\n    ") + "\n"),
	}
	for _, y := range good {
		if _, err := Parse([]byte(y)); err != nil {
			t.Errorf("refused:\n%s\n%v", y, err)
		}
	}
}

func testCAPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
