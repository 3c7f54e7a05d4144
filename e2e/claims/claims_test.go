// Package claims proves that relying parties can bind on the extra claims
// an endpoint adds (Pod labels, static values, the node) with real Vault:
// a role bound to a namespace and an app label lets the right Pod in and
// refuses a Pod of the same namespace with another app label.
package claims

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/kube"
	"github.com/kube-sts/kube-sts/e2e/internal/stsissuer"
	"github.com/kube-sts/kube-sts/e2e/internal/testca"
	"github.com/kube-sts/kube-sts/e2e/internal/vaultdev"
)

var cp = controlplane.New()

func TestMain(m *testing.M) { os.Exit(cp.Main(m)) }

const audience = "https://vault.kube-sts.test"

func TestVaultBindsOnPodLabels(t *testing.T) {
	env := cp.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ca, err := testca.New("claims")
	if err != nil {
		t.Fatal(err)
	}
	iss := stsissuer.Start(t, env, ca, func(base string) string {
		return fmt.Sprintf(`
cluster: prod-east
endpoints:
- name: vault
  issuer: %s/vault
  audience: %s
  ttl: 1m
  keys: {managed: {secret: vault-keys}}
  allow: [{namespace: payments}]
  claims:
    node: true
    static: {env: prod}
    fromPodLabels: [app, app.kubernetes.io/part-of]
`, base, audience)
	})
	issuer := iss.Base + "/vault"

	vaultBin, err := controlplane.Binary(ctx, "vault")
	if err != nil {
		t.Fatal(err)
	}
	_, addr := vaultdev.Start(t, t.TempDir(), vaultBin)
	// docs/relying-parties.md's example: the role binds the namespace and the app label
	// together (labels are chosen by whoever creates Pods in the namespace).
	vaultdev.EnableJWT(ctx, t, addr, "kube-sts", issuer, ca.CertPEM, "payments-api", map[string]any{"bound_audiences": []string{audience},
		"bound_claims": map[string]string{"namespace": "payments", "app": "payments-api", "env": "prod"}, "token_ttl": "1m", "token_policies": []string{"default"}})

	// The node claim needs the Node: the token's node binding carries its
	// UID only when the API server found it.
	if _, err := env.Clientset.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	labeledOn := func(name, node string, labels map[string]string) *corev1.Pod {
		p := kube.Workload(ctx, t, env.Clientset, "payments", "api", name)
		p.Labels = labels
		p, err := env.Clientset.CoreV1().Pods("payments").Update(ctx, p, metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := env.Clientset.CoreV1().Pods("payments").Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: name},
			Target: corev1.ObjectReference{Kind: "Node", Name: node}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		return p
	}
	labeled := func(name string, labels map[string]string) *corev1.Pod { return labeledOn(name, "node-a", labels) }
	mint := func(p *corev1.Pod) string {
		t.Helper()
		r, err := iss.Exchange(ctx, issuer, kube.PodToken(ctx, t, env.Clientset, p, issuer))
		if err != nil || r.Status != http.StatusOK {
			t.Fatalf("exchange for %s: %v %+v", p.Name, err, r.Error)
		}
		return r.Response.AccessToken
	}

	right := mint(labeled("api-0", map[string]string{"app": "payments-api", "app.kubernetes.io/part-of": "payments"}))
	wrong := mint(labeled("batch-0", map[string]string{"app": "payments-batch"}))

	t.Run("the token carries the endpoint's extra claims", func(t *testing.T) {
		c := payload(t, right)
		for k, want := range map[string]string{"app": "payments-api", "app_kubernetes_io_part_of": "payments", "env": "prod", "node": "node-a", "sub": "prod-east:payments:api"} {
			if c[k] != want {
				t.Errorf("claim %s = %v, want %q", k, c[k], want)
			}
		}
		if _, ok := payload(t, wrong)["app_kubernetes_io_part_of"]; ok {
			t.Error("a label the Pod does not have became a claim")
		}
	})
	t.Run("a Pod bound to a Node that does not exist gets no node claim", func(t *testing.T) {
		// Whoever may create Pods chooses spec.nodeName; the audit bound a
		// Pending Pod to pci-node-1 and got node: pci-node-1 in its token.
		p := labeledOn("pinned-0", "pci-node-1", map[string]string{"app": "payments-api"})
		r, err := iss.Exchange(ctx, issuer, kube.PodToken(ctx, t, env.Clientset, p, issuer))
		if err != nil || r.Status != http.StatusBadRequest || r.Error == nil || !strings.Contains(r.Error.Description, `node "pci-node-1" has no UID`) {
			t.Fatalf("exchange for a Pod on a Node that does not exist: %v %d %+v", err, r.Status, r.Error)
		}
	})
	t.Run("Vault lets the Pod with the bound app label in", func(t *testing.T) {
		if code, b := vaultdev.Login(ctx, t, addr, "kube-sts", "payments-api", right); code != http.StatusOK {
			t.Errorf("login with app=payments-api: %d %s", code, b)
		}
	})
	t.Run("Vault refuses a Pod of the same namespace with another app label", func(t *testing.T) {
		code, b := vaultdev.Login(ctx, t, addr, "kube-sts", "payments-api", wrong)
		if code == http.StatusOK || !strings.Contains(b, "app") {
			t.Errorf("login with app=payments-batch: %d %s; want a refusal naming the app claim", code, b)
		}
		t.Logf("Vault answered %d: %s", code, strings.TrimSpace(b))
	})
}

func payload(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatal("not a JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c
}
