// Package install installs the Helm chart for real on the local node: the
// pinned kube-scheduler and kube-controller-manager join the API server,
// containerd and the kubelet. First the README's quick start runs as
// written (make push to a registry, helm install from it, Vault, a labeled
// Pod; quickstart_test.go says what the node changes); then the chart of
// this tree goes in with its local values file and our release images; the
// Deployments must become Ready through their probes; then the reference
// scenario runs against the in-cluster issuer and webhook, the issuer Pod is
// restarted mid-run, and the sidecar rides it out on its last good token.
package install

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/flow"
	"github.com/kube-sts/kube-sts/e2e/internal/node"
	"github.com/kube-sts/kube-sts/e2e/internal/procs"
	"github.com/kube-sts/kube-sts/e2e/internal/quickstart"
	"github.com/kube-sts/kube-sts/e2e/internal/scenario"
	"github.com/kube-sts/kube-sts/shared/contract"
)

// As for the scenario: the ServiceAccount admission plugin mounts API
// credentials into Pods, which our Deployments and Vault's injector need.
var cp = &controlplane.Harness{ExtraAPIServerArgs: map[string][]string{"disable-admission-plugins": nil}}

func TestMain(m *testing.M) {
	if real := os.Getenv(kubectlShimEnv); real != "" {
		os.Exit(kubectlShim(real, os.Args[1:]))
	}
	os.Exit(cp.Main(m))
}

const releaseNS = scenario.ReleaseNS

func TestChartOnLocalNode(t *testing.T) {
	env := cp.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	c := env.Clientset

	t.Log("starting kube-scheduler and kube-controller-manager")
	ctrl, err := env.StartControllers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ctrl.Stop)
	cp.OnInterrupt(ctrl.Stop)

	blocks, err := quickstart.FromREADME()
	if err != nil {
		t.Fatal(err)
	}
	public := startPublicName(t)
	s := scenario.BaseWith(t, cp, env, t.Logf, scenario.BaseOptions{
		Release: []string{"sts-issuer", "sts-webhook", "sts-creds-sidecar"},
		Images:  quickStartImages(t, blocks),
		// Vault reaches the quick start's public issuer name through it.
		VaultEnv: public.VaultEnv(),
	})
	t.Log("starting Vault's agent injector")
	s.StartVaultInjector(ctx, t)

	if !t.Run("the README's quick start, as written", func(t *testing.T) { runQuickStart(ctx, t, s, public, blocks) }) {
		return
	}

	t.Log("helm install, waiting for the Deployments to become Ready")
	chart := scenario.InstallChart(ctx, t, s, scenario.ChartOptions{})
	t.Logf("installed and Ready in %v", chart.Took.Round(time.Second))
	if !strings.Contains(chart.Output, "vault write auth/jwt-vault/config") {
		t.Errorf("the install printed no Vault commands:\n%s", chart.Output)
	}
	caPEM := chart.CAPEM
	s.IssuerURL = fmt.Sprintf("https://localhost:%d/vault", chart.IssuerPort)
	target := &scenario.Local{Env: env, Node: s.Node, ExchangeURL: s.IssuerURL + "/token", HTTP: procs.TLSClient(chart.Pool)}

	t.Logf("configuring Vault's JWT auth to trust %s", s.IssuerURL)
	if s.Accessor, err = flow.ConfigureVault(s.VaultRunner(), flow.VaultConfig{IssuerURL: s.IssuerURL, CAPEM: caPEM, TokenTTL: "10s", TokenMaxTTL: "20s"}); err != nil {
		t.Fatal(err)
	}
	if err := flow.PrepareNamespace(ctx, c, flow.Namespace); err != nil {
		t.Fatal(err)
	}

	// docs/pods.md's Pod, placed by the scheduler (no nodeName).
	pod := flow.ExamplePod(flow.PodOptions{
		Namespace: flow.Namespace, Name: "reference", Image: node.AppImage, PullPolicy: corev1.PullNever,
		Args: []string{"/etc/secrets/myenv"}, HostNetwork: true, VaultService: s.VaultAddr,
	})
	pod, err = c.CoreV1().Pods(flow.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create the reference Pod: %v", err)
	}
	if pod.Annotations[contract.InjectedAnnotation] != flow.Label || len(pod.Spec.InitContainers) == 0 || pod.Spec.InitContainers[0].Name != contract.ContainerName {
		t.Fatalf("the in-cluster webhook did not inject: annotations %v, init containers %d", pod.Annotations, len(pod.Spec.InitContainers))
	}
	if err := flow.WaitForSecret(ctx, target, pod, 3*time.Minute); err != nil {
		t.Fatalf("%v\nVault:\n%s", err, flow.Tail(string(s.Vault.Log()), 2000))
	}
	pod, _ = c.CoreV1().Pods(flow.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	t.Logf("the app has its secret; the Pod runs on %s", pod.Spec.NodeName)

	t.Run("issuer Pod restarted across a refresh: the sidecar rides it out on its last good token", func(t *testing.T) {
		restartIssuer(ctx, t, s, target, pod)
	})

	t.Run("the deleted Pod's token is refused by the in-cluster issuer", func(t *testing.T) {
		took, err := flow.DeletedPodRefused(ctx, target, pod, s.IssuerURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("refused %v after the delete call", took.Round(time.Millisecond))
	})
}

// The sidecar's zap log: ISO 8601 times, durations in seconds.
var refreshedLine = regexp.MustCompile(`"ts":"([^"]+)".*"msg":"token refreshed".*"next_refresh_in":([0-9.]+)`)

// restartIssuer takes the issuer Pod away just before the sidecar's next
// refresh and brings a new one back only after that refresh has failed: a
// plain Pod delete is over in about 3 s here, too quick to be sure a refresh
// meets it, so the Deployment is scaled to 0 and back to 1. Through the gap
// the sidecar must keep its last token in place and unexpired, retry, and
// get a new token from the new Pod, while the application keeps its secret.
func restartIssuer(ctx context.Context, t *testing.T, s *scenario.Stack, target *scenario.Local, pod *corev1.Pod) {
	c := s.Env.Clientset
	sel := "app.kubernetes.io/name=sts-issuer"
	old, err := c.CoreV1().Pods(releaseNS).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil || len(old.Items) != 1 {
		t.Fatalf("issuer Pods: %v %d", err, len(old.Items))
	}

	// When is the next refresh? The sidecar logs it with every token.
	var next time.Time
	deadline := time.Now().Add(time.Minute)
	for next.IsZero() {
		log, _ := target.Logs(ctx, pod, contract.ContainerName)
		if m := refreshedLine.FindAllStringSubmatch(log, -1); len(m) > 0 {
			last := m[len(m)-1]
			ts, err1 := time.Parse("2006-01-02T15:04:05.000Z0700", last[1])
			in, err2 := time.ParseDuration(last[2] + "s")
			if err1 == nil && err2 == nil {
				next = ts.Add(in)
			}
		}
		if next.IsZero() && time.Now().After(deadline) {
			t.Fatalf("no refresh schedule in the sidecar log:\n%s", flow.Tail(log, 2000))
		}
		time.Sleep(time.Second)
	}
	if wait := time.Until(next) - 5*time.Second; wait > 0 {
		t.Logf("next refresh at %s; stopping the issuer %v from now", next.Format(time.RFC3339), wait.Round(time.Second))
		time.Sleep(wait)
	}
	stopped := time.Now()
	scale(ctx, t, s, 0)

	// While no issuer runs, the token file stays and stays valid, until
	// the sidecar has met the outage at its refresh.
	checkToken := func() {
		jwt, err := s.Node.ReadPodFile(pod, "kubernetes.io~empty-dir", contract.VolumeName, contract.TokenFileName)
		if err != nil || jwt == "" {
			t.Fatalf("the token file is gone %v into the outage: %v", time.Since(stopped).Round(time.Millisecond), err)
		}
		claims, err := scenario.Claims(jwt)
		if err != nil {
			t.Fatal(err)
		}
		if exp := time.Unix(int64(claims["exp"].(float64)), 0); !exp.After(time.Now()) {
			t.Fatalf("the token in the file expired at %v during the outage", exp)
		}
	}
	checks := 0
	deadline = next.Add(time.Minute)
	for {
		checkToken()
		checks++
		log, _ := target.Logs(ctx, pod, contract.ContainerName)
		if linesAfter(log, stopped, "exchange failed; retrying") > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sidecar's refresh never met the outage:\n%s", flow.Tail(log, 2000))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("the refresh failed %v after the issuer stopped; the token file was valid at each of %d checks", time.Since(stopped).Round(time.Second), checks)

	restarted := time.Now()
	scale(ctx, t, s, 1)
	var newPod *corev1.Pod
	for newPod == nil {
		checkToken()
		pods, _ := c.CoreV1().Pods(releaseNS).List(ctx, metav1.ListOptions{LabelSelector: sel})
		for i := range pods.Items {
			if p := &pods.Items[i]; p.UID != old.Items[0].UID && p.DeletionTimestamp == nil && scenario.Ready(p) {
				newPod = p
			}
		}
		if time.Since(restarted) > 3*time.Minute {
			t.Fatalf("no new issuer Pod Ready 3m after the restart\n%s", podReport(ctx, s))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("new issuer Pod %s Ready %v after the restart", newPod.Name, time.Since(restarted).Round(time.Second))

	// The sidecar's retries reach the new Pod (its backoff is at most 30 s).
	deadline = time.Now().Add(time.Minute)
	for {
		log, _ := target.Logs(ctx, pod, contract.ContainerName)
		if n := linesAfter(log, restarted, "token refreshed"); n > 0 {
			t.Logf("the sidecar retried %d time(s) during the outage, then refreshed from the new Pod", linesAfter(log, stopped, "exchange failed; retrying"))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no refresh after the restart; sidecar log:\n%s", flow.Tail(log, 3000))
		}
		checkToken()
		time.Sleep(time.Second)
	}
	if log, _ := target.Logs(ctx, pod, flow.AppContainer); !strings.Contains(log, flow.SecretLine) {
		t.Fatal("the app lost its secret")
	}
	p, _ := c.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	for _, st := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		if st.Name == contract.ContainerName && st.RestartCount > 0 {
			t.Errorf("the sidecar restarted %d times", st.RestartCount)
		}
	}
}

// scale sets the issuer Deployment's replicas.
func scale(ctx context.Context, t *testing.T, s *scenario.Stack, n int32) {
	t.Helper()
	if err := scenario.Scale(ctx, s, releaseNS, "kube-sts-issuer", n); err != nil {
		t.Fatal(err)
	}
}

// linesAfter counts log lines with msg logged after t.
func linesAfter(log string, t time.Time, msg string) int {
	n := 0
	for _, at := range flow.LogTimes(log, msg) {
		if at.After(t) {
			n++
		}
	}
	return n
}

func podReport(ctx context.Context, s *scenario.Stack) string {
	return scenario.PodReport(ctx, s, releaseNS)
}
