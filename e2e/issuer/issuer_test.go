// Package issuer tests sts-issuer as a black box on the real API server: a
// live Pod gets a token that verifies through OIDC discovery with go-oidc and
// with hashicorp/cap (what Vault's JWT auth uses); disallowed namespaces are
// refused; and, in both review modes (TestReviewModes), a deleted Pod's token
// is refused within flow.DeletedPodBound while the API server still accepts
// it, and so are a terminating or replaced Pod's, wrong audiences, a
// Secret-bound token, a deleted ServiceAccount's and garbage.
package issuer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	capjwt "github.com/hashicorp/cap/jwt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/kube"
	"github.com/kube-sts/kube-sts/e2e/internal/stsissuer"
	"github.com/kube-sts/kube-sts/e2e/internal/testca"
	"github.com/kube-sts/kube-sts/shared/exchange"
)

var cp = controlplane.New()

func TestMain(m *testing.M) { os.Exit(cp.Main(m)) }

const vaultAudience = "https://vault.kube-sts.test/"

type fixture struct {
	env     *controlplane.Env
	iss     *stsissuer.Issuer
	vault   string // the managed-keys RS256 endpoint
	files   string // the file-keys ES256 endpoint
	keyFile string // the files endpoint's key
}

// setup starts one issuer with two endpoints; it stops with t.
func setup(t testing.TB, extraArgs ...string) *fixture {
	t.Helper()
	env := cp.Require(t)
	ca, err := testca.New("kube-sts e2e")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "tls.key")
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalECPrivateKey(ec)
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	iss := stsissuer.Start(t, env, ca, func(base string) string {
		return fmt.Sprintf(`
cluster: kube-sts-e2e
endpoints:
- name: vault
  issuer: %[1]s/vault
  audience: %[2]s
  keys:
    managed: {secret: vault-keys, namespace: kube-sts}
  podTTL: {allow: false}
  allow:
  - namespace: "test-*"
  deny:
  - namespace: test-denied
- name: files
  issuer: %[1]s/files
  audience: %[2]s
  algorithm: ES256
  ttl: 5m
  podTTL: {min: 2m}
  keys:
    files: [%[3]s]
    reloadInterval: 200ms
  allow:
  - {namespace: "*", serviceAccount: "for-vault"}
  claims: {pod: true, podUID: true}
`, base, vaultAudience, keyFile)
	}, extraArgs...)
	return &fixture{env: env, iss: iss, vault: iss.Base + "/vault", files: iss.Base + "/files", keyFile: keyFile}
}

func TestIssuer(t *testing.T) {
	f := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := f.env.Clientset
	pod := kube.Workload(ctx, t, cs, "test-vault", "for-vault", "watch-vault-volume")

	t.Run("live pod gets a token that verifies with go-oidc and cap/jwt", func(t *testing.T) {
		for _, issuer := range []string{f.vault, f.files} {
			subject := kube.PodToken(ctx, t, cs, pod, issuer)
			res, err := f.iss.Exchange(ctx, issuer, subject)
			if err != nil || res.Status != 200 {
				t.Fatalf("%s: exchange: %v %+v", issuer, err, res)
			}
			tok := res.Response.AccessToken
			f.track(t, tok, subject)

			octx := oidc.ClientContext(ctx, f.iss.Client)
			provider, err := oidc.NewProvider(octx, issuer)
			if err != nil {
				t.Fatalf("%s: go-oidc discovery: %v", issuer, err)
			}
			idt, err := provider.Verifier(&oidc.Config{ClientID: vaultAudience}).Verify(octx, tok)
			if err != nil {
				t.Fatalf("%s: go-oidc verify: %v", issuer, err)
			}
			if idt.Subject != "kube-sts-e2e:test-vault:for-vault" {
				t.Errorf("sub = %q", idt.Subject)
			}
			var claims map[string]any
			if err := idt.Claims(&claims); err != nil {
				t.Fatal(err)
			}
			if claims["cluster"] != "kube-sts-e2e" || claims["namespace"] != "test-vault" || claims["saname"] != "for-vault" {
				t.Errorf("claims %v", claims)
			}
			if issuer == f.files && (claims["pod"] != pod.Name || claims["pod_uid"] != string(pod.UID)) {
				t.Errorf("pod claims %v / %v", claims["pod"], claims["pod_uid"])
			}

			ks, err := capjwt.NewOIDCDiscoveryKeySet(ctx, issuer, string(f.iss.CA.CertPEM))
			if err != nil {
				t.Fatalf("%s: cap discovery: %v", issuer, err)
			}
			v, err := capjwt.NewValidator(ks)
			if err != nil {
				t.Fatal(err)
			}
			alg := capjwt.RS256
			if issuer == f.files {
				alg = capjwt.ES256
			}
			got, err := v.Validate(ctx, tok, capjwt.Expected{Issuer: issuer, Audiences: []string{vaultAudience}, SigningAlgorithms: []capjwt.Alg{alg}})
			if err != nil {
				t.Fatalf("%s: cap validate: %v", issuer, err)
			}
			if got["sub"] != "kube-sts-e2e:test-vault:for-vault" {
				t.Errorf("cap sub = %v", got["sub"])
			}
			// A bound audience that is not ours is refused by the relying party.
			if _, err := v.Validate(ctx, tok, capjwt.Expected{Issuer: issuer, Audiences: []string{"https://other/"}, SigningAlgorithms: []capjwt.Alg{alg}}); err == nil {
				t.Errorf("%s: cap accepted the token for another audience", issuer)
			}
		}
	})

	t.Run("a Pod's lifetime: shorter granted down to podTTL.min, never longer, not where forbidden", func(t *testing.T) {
		for _, tc := range []struct {
			issuer      string
			asked, want time.Duration
			noteIn      string
		}{
			{f.files, 3 * time.Minute, 3 * time.Minute, ""},
			{f.files, time.Minute, 2 * time.Minute, "shorter than endpoint files's podTTL.min 2m0s"},
			{f.files, 10 * time.Minute, 5 * time.Minute, "longer than endpoint files's ttl 5m0s"},
			{f.vault, 3 * time.Minute, 15 * time.Minute, "endpoint vault does not let Pods choose the token lifetime"},
		} {
			subject := kube.PodToken(ctx, t, cs, pod, tc.issuer)
			req := exchange.NewRequest(subject)
			req.Lifetime = tc.asked
			res, err := f.iss.ExchangeRequest(ctx, tc.issuer, req)
			if err != nil || res.Status != 200 {
				t.Fatalf("%s asking %v: %v %+v", tc.issuer, tc.asked, err, res)
			}
			f.track(t, res.Response.AccessToken, subject)
			tok, err := jwt.ParseSigned(res.Response.AccessToken, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
			if err != nil {
				t.Fatal(err)
			}
			var claims jwt.Claims
			if err := tok.UnsafeClaimsWithoutVerification(&claims); err != nil {
				t.Fatal(err)
			}
			note := res.Response.LifetimeNote
			if got := claims.Expiry.Time().Sub(claims.IssuedAt.Time()); got != tc.want || (tc.noteIn == "") != (note == "") || !strings.Contains(note, tc.noteIn) {
				t.Errorf("%s asking %v: lifetime %v, note %q; want %v and a note with %q", tc.issuer, tc.asked, got, note, tc.want, tc.noteIn)
			}
		}
	})

	t.Run("disallowed namespace refused", func(t *testing.T) {
		for _, ns := range []string{"test-denied", "prod"} {
			p := kube.Workload(ctx, t, cs, ns, "for-vault", "app")
			subject := kube.PodToken(ctx, t, cs, p, f.vault)
			f.track(t, subject)
			res, err := f.iss.Exchange(ctx, f.vault, subject)
			if err != nil || res.Status != 400 || !strings.Contains(res.Error.Description, "may not use endpoint vault") {
				t.Fatalf("%s: exchange = %v %+v, want a policy refusal", ns, err, res)
			}
		}
	})

	t.Run("a refused Pod gets a TokenRefused Event within 5 s; a flood of refusals a bounded count", func(t *testing.T) {
		p := kube.Workload(ctx, t, cs, "test-denied", "for-vault", "told")
		subject := kube.PodToken(ctx, t, cs, p, f.vault)
		f.track(t, subject)
		refusedAt := time.Now()
		if res, err := f.iss.Exchange(ctx, f.vault, subject); err != nil || res.Status != 400 {
			t.Fatalf("exchange = %v %+v, want a policy refusal", err, res)
		}
		sel := "involvedObject.uid=" + string(p.UID) + ",reason=TokenRefused"
		var ev corev1.Event
		for {
			list, err := cs.CoreV1().Events(p.Namespace).List(ctx, metav1.ListOptions{FieldSelector: sel})
			if err != nil {
				t.Fatal(err)
			}
			if len(list.Items) > 0 {
				ev = list.Items[0]
				break
			}
			if time.Since(refusedAt) > 5*time.Second {
				t.Fatalf("no TokenRefused Event on Pod %s/%s within 5 s of the refusal", p.Namespace, p.Name)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("Event after %v: %s", time.Since(refusedAt).Round(time.Millisecond), ev.Message)
		if ev.Type != corev1.EventTypeWarning || ev.Source.Component != "sts-issuer" ||
			!strings.HasPrefix(ev.Message, "endpoint vault refused the token exchange: invalid_request: ServiceAccount test-denied/for-vault may not use endpoint vault") {
			t.Errorf("Event %s %s from %q: %q", ev.Type, ev.Reason, ev.Source.Component, ev.Message)
		}
		for _, seg := range strings.Split(subject, ".") {
			if strings.Contains(ev.Message, seg) {
				t.Fatal("the Event quotes the subject token")
			}
		}

		// A flood from one Pod: client-go's correlator counts repeats into
		// one Event and lets 25 writes a Pod through, then one per 5 minutes.
		// Twenty tokens of the Pod, each presented within the per-token
		// limit (5 a second), so that every refusal is the rule's.
		const flood = 100
		for range flood / 5 {
			tok := kube.PodToken(ctx, t, cs, p, f.vault)
			f.track(t, tok)
			for range 5 {
				if res, err := f.iss.Exchange(ctx, f.vault, tok); err != nil || res.Status != 400 {
					t.Fatalf("exchange = %v %+v, want a policy refusal", err, res)
				}
			}
		}
		time.Sleep(2 * time.Second) // the recorder writes in the background
		list, err := cs.CoreV1().Events(p.Namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.uid=" + string(p.UID)})
		if err != nil {
			t.Fatal(err)
		}
		total := int32(0)
		for _, e := range list.Items {
			total += e.Count
		}
		t.Logf("%d refusals made %d Event objects counting %d", flood+1, len(list.Items), total)
		if len(list.Items) != 1 || total < 2 || total > 25 {
			t.Errorf("%d refusals made %d Events counting %d; want one Event counting at most the correlator's burst of 25", flood+1, len(list.Items), total)
		}
	})

	t.Run("token for another audience refused with the audience named", func(t *testing.T) {
		subject := kube.PodToken(ctx, t, cs, pod, f.files) // projected for the files endpoint
		res, err := f.iss.Exchange(ctx, f.vault, subject)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != 400 || !strings.Contains(res.Error.Description, "not valid for audience") || !strings.Contains(res.Error.Description, f.vault) {
			t.Fatalf("token of another audience: %+v", res)
		}
	})

	t.Run("key file replaced under load: no failed request", func(t *testing.T) {
		// Several tokens of the Pod in turn: one token may be presented 5
		// times a second, and this loop sends 50 a second.
		var subjects []string
		for range 16 {
			subjects = append(subjects, kube.PodToken(ctx, t, cs, pod, f.files))
		}
		before, err := f.iss.JWKS(ctx, f.files)
		if err != nil {
			t.Fatal(err)
		}
		ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.MarshalPKCS8PrivateKey(ec)
		swapped := false
		deadline := time.Now().Add(5 * time.Second)
		for n := 0; time.Now().Before(deadline); n++ {
			if n == 20 {
				// What a Secret volume update looks like: a new file renamed into place.
				tmp := f.keyFile + ".new"
				if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tmp, f.keyFile); err != nil {
					t.Fatal(err)
				}
			}
			res, err := f.iss.Exchange(ctx, f.files, subjects[n%len(subjects)])
			if err != nil || res.Status != 200 {
				t.Fatalf("exchange %d during the key swap: %v %+v", n, err, res)
			}
			f.track(t, res.Response.AccessToken)
			after, err := f.iss.JWKS(ctx, f.files)
			if err != nil {
				t.Fatal(err)
			}
			if n > 20 && string(after) != string(before) {
				swapped = true
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if !swapped {
			t.Fatal("the JWKS did not change after the key file was replaced")
		}
	})

	t.Run("metrics count exchanges", func(t *testing.T) {
		// Its own issued, denied and pod_gone exchanges: no other subtest needed.
		issued := kube.PodToken(ctx, t, cs, pod, f.vault)
		denied := kube.PodToken(ctx, t, cs, kube.Workload(ctx, t, cs, "test-denied", "for-vault", "metrics-denied"), f.vault)
		gonePod := kube.Workload(ctx, t, cs, "test-vault", "for-vault", "metrics-gone")
		gone := kube.PodToken(ctx, t, cs, gonePod, f.vault)
		// Exchanged once while the Pod lives, so that after the delete the
		// API server (which caches its verdict ~10 s) still accepts it and
		// the issuer's live Pod check is what refuses it.
		if res, err := f.iss.Exchange(ctx, f.vault, gone); err != nil || res.Status != 200 {
			t.Fatalf("exchange before delete: %v %+v", err, res)
		}
		kube.DeletePod(ctx, t, cs, gonePod)
		f.track(t, issued, denied, gone)
		for _, subject := range []string{issued, denied, gone} {
			if _, err := f.iss.Exchange(ctx, f.vault, subject); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := http.Get(f.iss.MetricsURL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, want := range []string{
			`sts_issuer_exchanges_total{endpoint="vault",result="issued"}`,
			`sts_issuer_exchanges_total{endpoint="vault",result="pod_gone"}`,
			`sts_issuer_exchanges_total{endpoint="vault",result="denied"}`,
			`sts_issuer_apiserver_request_duration_seconds_count{call="tokenreview",result="ok"}`,
			`sts_issuer_signing_key_age_seconds{endpoint="files"}`,
			`sts_issuer_keys_published{endpoint="vault"} 1`,
		} {
			if !strings.Contains(string(body), want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})

	t.Run("audit lines, and no token in the issuer's log", func(t *testing.T) {
		// Every subtest checks its own tokens at its end (f.track); this one
		// checks the audit lines of one issuance and one refusal.
		subject := kube.PodToken(ctx, t, cs, pod, f.vault)
		res, err := f.iss.Exchange(ctx, f.vault, subject)
		if err != nil || res.Status != 200 {
			t.Fatalf("exchange: %v %+v", err, res)
		}
		f.track(t, subject, res.Response.AccessToken)
		other := kube.PodToken(ctx, t, cs, pod, "https://someone-else.test")
		f.track(t, other)
		if _, err := f.iss.Exchange(ctx, f.vault, other); err != nil {
			t.Fatal(err)
		}
		log := string(f.iss.Log())
		if !strings.Contains(log, `"token issued"`) || !strings.Contains(log, `"exchange refused"`) {
			t.Fatalf("the audit lines are missing from the log:\n%s", log)
		}
	})
}

// track fails t at its end if any segment of toks appears in the issuer's
// log, so that every subtest proves on its own that no token is logged.
func (f *fixture) track(t *testing.T, toks ...string) {
	t.Helper()
	t.Cleanup(func() {
		log := string(f.iss.Log())
		for _, tok := range toks {
			for _, part := range strings.Split(tok, ".") {
				if len(part) > 20 && strings.Contains(log, part) {
					t.Error("a token (or a segment of one) appears in the issuer's log")
					return
				}
			}
		}
	})
}
