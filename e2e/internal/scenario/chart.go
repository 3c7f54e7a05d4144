package scenario

import (
	"context"
	"crypto/x509"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/flow"
	"github.com/kube-sts/kube-sts/e2e/internal/procs"
)

// The Helm release the node suites install.
const (
	Release   = "kube-sts"
	ReleaseNS = "kube-sts"
)

// Chart is the chart installed on the node with its local values file.
type Chart struct {
	IssuerPort, IssuerMetricsPort, WebhookPort int
	// Output is what helm install printed (the NOTES).
	Output string
	// CAPEM is the self-managed CA that serves the issuer and the webhook.
	CAPEM []byte
	Pool  *x509.CertPool
	Took  time.Duration

	helm, kubeconfig string
	// set are the --set values of the install (ports, API server), which
	// upgrades keep.
	set []string
}

// ChartOptions change what InstallChart installs.
type ChartOptions struct {
	// ValueFiles go after ci/local-values.yaml (helm --values, later win).
	ValueFiles []string
	// IssuerURLPort is the port in issuer.url, which the sidecars call and
	// which is the tokens' iss: a load balancer before the issuer's
	// replicas. Default: the issuer's own port.
	IssuerURLPort int
	// Chart is the chart's directory (default: this tree's); its own
	// ci/local-values.yaml goes first.
	Chart string
	// Set are more --set values (e.g. the images of another version).
	Set []string
}

func (o ChartOptions) chart() string {
	if o.Chart != "" {
		return o.Chart
	}
	return filepath.Join(procs.RepoRoot(), "manifests", "charts", "kube-sts")
}

// helmArgs are the arguments after the release name of install and upgrade.
func (c *Chart) helmArgs(o ChartOptions) []string {
	chart := o.chart()
	args := []string{chart, "--namespace", ReleaseNS, "--kubeconfig", c.kubeconfig,
		"--values", filepath.Join(chart, "ci", "local-values.yaml")}
	for _, f := range o.ValueFiles {
		args = append(args, "--values", f)
	}
	return append(args, "--set", strings.Join(append(append([]string{}, c.set...), o.Set...), ","), "--wait", "--timeout", "5m")
}

// InstallChart installs manifests/charts/kube-sts with ci/local-values.yaml on
// free loopback ports, and waits until its Deployments are Ready through
// their probes. The scheduler and controller manager must run
// (Env.StartControllers).
func InstallChart(ctx context.Context, t testing.TB, s *Stack, o ChartOptions) *Chart {
	t.Helper()
	c := &Chart{IssuerPort: procs.FreePort(t), IssuerMetricsPort: procs.FreePort(t), WebhookPort: procs.FreePort(t)}
	if o.IssuerURLPort == 0 {
		o.IssuerURLPort = c.IssuerPort
	}
	// The API server's port for the Pods' in-cluster clients (no kube-proxy
	// routes the Service VIP).
	apiHost, apiPort := HostPort(t, s.Env.Config.Host)
	var err error
	if c.helm, err = controlplane.Binary(ctx, "helm"); err != nil {
		t.Fatal(err)
	}
	if c.kubeconfig, err = s.Env.KubeconfigFile(s.Work, "helm-admin", "system:masters"); err != nil {
		t.Fatal(err)
	}
	c.set = []string{
		fmt.Sprintf("issuer.port=%d", c.IssuerPort),
		fmt.Sprintf("issuer.metricsPort=%d", c.IssuerMetricsPort),
		fmt.Sprintf("issuer.url=https://localhost:%d", o.IssuerURLPort),
		fmt.Sprintf("webhook.port=%d", c.WebhookPort),
		fmt.Sprintf("webhook.probePort=%d", procs.FreePort(t)),
		fmt.Sprintf("webhook.metricsPort=%d", procs.FreePort(t)),
		fmt.Sprintf("webhook.url=https://localhost:%d/mutate", c.WebhookPort),
		"kubernetesAPI.host=" + apiHost,
		"kubernetesAPI.port=" + apiPort,
	}
	c.Took, c.Output = c.helmRun(ctx, t, s, append([]string{"install", Release, "--create-namespace"}, c.helmArgs(o)...)...)
	// The issuer serves the self-managed certificate the webhook made;
	// clients trust its CA, read from the Secret as the NOTES say.
	tlsSecret, err := s.Env.Clientset.CoreV1().Secrets(ReleaseNS).Get(ctx, "kube-sts-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.CAPEM, c.Pool = tlsSecret.Data["ca.crt"], x509.NewCertPool()
	if !c.Pool.AppendCertsFromPEM(c.CAPEM) {
		t.Fatal("no CA in the self-managed Secret kube-sts-tls")
	}
	return c
}

// Upgrade runs helm upgrade with o (the install's ports and API server kept)
// and waits like InstallChart.
func (c *Chart) Upgrade(ctx context.Context, t testing.TB, s *Stack, o ChartOptions) time.Duration {
	t.Helper()
	took, _ := c.helmRun(ctx, t, s, append([]string{"upgrade", Release}, c.helmArgs(o)...)...)
	return took
}

// Rollback runs helm rollback to revision and waits like InstallChart.
func (c *Chart) Rollback(ctx context.Context, t testing.TB, s *Stack, revision int) time.Duration {
	t.Helper()
	took, _ := c.helmRun(ctx, t, s, "rollback", Release, strconv.Itoa(revision), "--namespace", ReleaseNS,
		"--kubeconfig", c.kubeconfig, "--wait", "--timeout", "5m")
	return took
}

// helmRun runs helm, then checks that both Deployments are Ready and
// Available as helm --wait says.
func (c *Chart) helmRun(ctx context.Context, t testing.TB, s *Stack, args ...string) (time.Duration, string) {
	t.Helper()
	start := time.Now()
	out, err := exec.CommandContext(ctx, c.helm, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s\n%s", args[0], err, out, PodReport(ctx, s, ReleaseNS))
	}
	took := time.Since(start)
	// helm --wait already waited; the Deployments must say so themselves.
	for _, name := range []string{"kube-sts-issuer", "kube-sts-webhook"} {
		d, err := s.Env.Clientset.AppsV1().Deployments(ReleaseNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d.Status.ReadyReplicas != *d.Spec.Replicas || d.Status.UpdatedReplicas != *d.Spec.Replicas || !available(d) {
			t.Fatalf("%s: %d of %d ready (%d updated) after helm %s --wait, conditions %+v\n%s", name, d.Status.ReadyReplicas, *d.Spec.Replicas, d.Status.UpdatedReplicas, args[0], d.Status.Conditions, PodReport(ctx, s, ReleaseNS))
		}
	}
	return took, string(out)
}

// Scale sets a Deployment's replicas.
func Scale(ctx context.Context, s *Stack, ns, name string, n int32) error {
	api := s.Env.Clientset.AppsV1().Deployments(ns)
	sc, err := api.GetScale(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	sc.Spec.Replicas = n
	_, err = api.UpdateScale(ctx, name, sc, metav1.UpdateOptions{})
	return err
}

func available(d *appsv1.Deployment) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Ready says whether a Pod's Ready condition is true.
func Ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// PodReport shows a namespace's Pods, their logs and events, for failures.
func PodReport(ctx context.Context, s *Stack, ns string) string {
	var b strings.Builder
	pods, err := s.Env.Clientset.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		fmt.Fprintf(&b, "pod %s: phase %s node %q conditions %+v\n", p.Name, p.Status.Phase, p.Spec.NodeName, p.Status.Conditions)
		for _, c := range p.Spec.Containers {
			l, _ := s.Node.ContainerLog(p, c.Name)
			fmt.Fprintf(&b, "--- %s:\n%s\n", c.Name, flow.Tail(l, 2000))
		}
	}
	ev, _ := s.Env.Clientset.CoreV1().Events(ns).List(ctx, metav1.ListOptions{Limit: 50})
	for _, e := range ev.Items {
		fmt.Fprintf(&b, "event %s %s: %s\n", e.InvolvedObject.Name, e.Reason, e.Message)
	}
	return b.String()
}
