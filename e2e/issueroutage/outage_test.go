// Package issueroutage stops the API server under a running sts-issuer: every
// exchange must then fail with 503 temporarily_unavailable and nothing may be
// issued. It has its own control plane, because it kills it.
package issueroutage

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/kube"
	"github.com/kube-sts/kube-sts/e2e/internal/stsissuer"
	"github.com/kube-sts/kube-sts/e2e/internal/testca"
)

var cp = controlplane.New()

func TestMain(m *testing.M) { os.Exit(cp.Main(m)) }

func TestAPIServerDownMeans503(t *testing.T) {
	env := cp.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ca, err := testca.New("outage")
	if err != nil {
		t.Fatal(err)
	}
	iss := stsissuer.Start(t, env, ca, func(base string) string {
		return fmt.Sprintf(`
cluster: c
endpoints:
- name: vault
  issuer: %s/vault
  audience: vault
  algorithm: EdDSA
  keys: {managed: {secret: vault-keys}}
  allow: [{namespace: "*"}]
`, base)
	}, "--api-timeout", "2s")
	issuer := iss.Base + "/vault"
	pod := kube.Workload(ctx, t, env.Clientset, "test-vault", "for-vault", "app")
	subject := kube.PodToken(ctx, t, env.Clientset, pod, issuer)
	if res, err := iss.Exchange(ctx, issuer, subject); err != nil || res.Status != 200 {
		t.Fatalf("exchange with the API server up: %v %+v", err, res)
	}
	issuedBefore := strings.Count(string(iss.Log()), `"token issued"`)

	if err := env.StopAPIServer(); err != nil {
		t.Fatalf("stop the API server: %v", err)
	}
	for i := range 5 {
		start := time.Now()
		res, err := iss.Exchange(ctx, issuer, subject)
		if err != nil {
			t.Fatalf("attempt %d: %v", i, err)
		}
		if res.Status != 503 || res.Error == nil || res.Error.Code != "temporarily_unavailable" {
			t.Fatalf("attempt %d with the API server down: %+v, want 503 temporarily_unavailable", i, res)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("attempt %d took %v; the API timeout is 2s", i, took)
		}
		time.Sleep(250 * time.Millisecond) // below the per-token limit of 5 a second
	}
	log := string(iss.Log())
	if n := strings.Count(log, `"token issued"`); n != issuedBefore {
		t.Fatalf("%d tokens issued while the API server was down", n-issuedBefore)
	}
	if !strings.Contains(log, `"reason":"tokenreview_unavailable"`) {
		t.Fatalf("the refusals are not audited with their reason:\n%s", log)
	}
}
