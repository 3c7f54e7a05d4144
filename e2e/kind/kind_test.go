//go:build kind

// Package kind runs the reference scenario against kube-sts installed with
// its Helm chart on a kind cluster, as a user would install it (Services,
// cluster DNS, Vault and its agent injector from Vault's Helm chart). GitHub
// Actions runs it (.github/workflows/e2e-kind.yaml) with
//
//	go test -tags kind -count=1 -v ./kind/
//
// after the install; it reads KUBECONFIG. The steps are package flow's, the
// same as the local node suites run; only logs (through the API server) and
// the exchange (through the API server's Service proxy) differ.
package kind

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube-sts/kube-sts/e2e/internal/flow"
	"github.com/kube-sts/kube-sts/shared/exchange"
)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

var (
	stsNamespace   = env("KUBE_STS_NAMESPACE", "kube-sts")
	issuerService  = env("KUBE_STS_ISSUER_SERVICE", "kube-sts-issuer")
	vaultNamespace = env("VAULT_NAMESPACE", "vault")
	vaultPod       = env("VAULT_POD", "vault-0")
	// The issuer as the chart publishes it in the cluster: Vault fetches
	// discovery here, and it is the tokens' iss and the projected tokens' audience.
	issuerURL = "https://" + issuerService + "." + stsNamespace + ".svc/vault"
)

// target reaches the cluster through its API server only.
type target struct{ cs kubernetes.Interface }

func (k target) Client() kubernetes.Interface { return k.cs }

func (k target) Logs(ctx context.Context, pod *corev1.Pod, container string) (string, error) {
	b, err := k.cs.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: container}).DoRaw(ctx)
	return string(b), err
}

// Exchange goes through the API server's proxy to the issuer's Service.
func (k target) Exchange(ctx context.Context, subjectToken string) (int, []byte, error) {
	var status int
	res := k.cs.CoreV1().RESTClient().Post().
		AbsPath("/api/v1/namespaces", stsNamespace, "services", "https:"+issuerService+":443", "proxy", "vault", "token").
		SetHeader("Content-Type", exchange.ContentTypeForm).
		Body([]byte(exchange.NewRequest(subjectToken).Encode())).
		Do(ctx).StatusCode(&status)
	body, err := res.Raw()
	if status != 0 {
		err = nil // an OAuth error answer is a result here, not a failure
	}
	return status, body, err
}

// vault runs the vault CLI inside Vault's dev-mode Pod, as root.
func vault(stdin string, args ...string) (string, error) {
	cmd := exec.Command("kubectl", append([]string{"exec", "-i", "-n", vaultNamespace, vaultPod, "--",
		"env", "VAULT_TOKEN=root", "VAULT_ADDR=http://127.0.0.1:8200", "vault"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestReferenceScenarioOnKind(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(), nil).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	k := target{cs}

	sec, err := cs.CoreV1().Secrets(stsNamespace).Get(ctx, "kube-sts-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("configuring Vault as docs/relying-parties.md says, trusting %s", issuerURL)
	if _, err := flow.ConfigureVault(vault, flow.VaultConfig{IssuerURL: issuerURL, CAPEM: sec.Data["ca.crt"]}); err != nil {
		t.Fatal(err)
	}
	if err := flow.PrepareNamespace(ctx, cs, flow.Namespace); err != nil {
		t.Fatal(err)
	}
	// docs/pods.md's Pod as written.
	pod := flow.ExamplePod(flow.PodOptions{
		Namespace: flow.Namespace, Name: "test-vault-vault-watch", Image: "ubuntu:22.04",
		Command: []string{"bash", "-c", "while true; do cat /etc/secrets/myenv; echo; sleep 1; done"},
	})
	if pod, err = cs.CoreV1().Pods(flow.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := flow.WaitForSecret(ctx, k, pod, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Log("the application container has the secret")
	took, err := flow.DeletedPodRefused(ctx, k, pod, issuerURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after the Pod was deleted, the next exchange was refused (%v)", took.Round(time.Millisecond))
}
