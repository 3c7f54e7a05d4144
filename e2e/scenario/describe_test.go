package scenario

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-sts/kube-sts/e2e/internal/flow"
	"github.com/kube-sts/kube-sts/e2e/internal/scenario"
	"github.com/kube-sts/kube-sts/shared/contract"
)

// testDescribeSaysWhy: `kubectl describe pod` (the real kubectl) says why a
// token is missing, in the two places a Pod can be without one:
//   - at start (native sidecar): the issuer refuses the exchange and says so
//     in a TokenRefused Event on the Pod; no probe runs during the postStart
//     hook, so the hook fails at once, the kubelet restarts the sidecar, and
//     the sidecar's last state (its termination message) carries the
//     issuer's reason too;
//   - while running: the issuer is gone for longer than a token lives; the
//     sidecar's readiness probe (the scenario's vault-sts injector turns it
//     on: readinessProbe: true) fails, the Pod turns NotReady, and the
//     Unhealthy event carries the last failure.
//
// It stops the issuer: it runs last but for the log check.
func testDescribeSaysWhy(ctx context.Context, t *testing.T, s *scenario.Stack) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatalf("kubectl is part of this machine's setup: %v", err)
	}
	kubeconfig, err := s.Env.KubeconfigFile(s.Work, "describer", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	pods := s.Env.Clientset.CoreV1()
	describe := func(ns, name string, want []string, within time.Duration) string {
		t.Helper()
		var out []byte
		for deadline := time.Now().Add(within); ; time.Sleep(2 * time.Second) {
			out, err = exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfig, "describe", "pod", "-n", ns, name).CombinedOutput()
			if err == nil && containsAll(string(out), want) {
				break
			}
			if time.Now().After(deadline) {
				p, _ := pods.Pods(ns).Get(ctx, name, metav1.GetOptions{})
				log, _ := s.Node.ContainerLog(p, contract.ContainerName)
				t.Fatalf("kubectl describe pod %s/%s did not say %q within %v; err %v:\n%s\nsidecar log:\n%s", ns, name, want, within, err, flow.Tail(string(out), 3000), flow.Tail(log, 2000))
			}
		}
		lines := strings.Split(string(out), "\n")
		for i, line := range lines {
			if strings.Contains(line, want[0]) {
				return strings.Join(lines[i:min(i+8, len(lines))], "\n")
			}
		}
		return ""
	}

	// At start: refused.
	p, err := pods.Pods(scenario.RefusedNamespace).Create(ctx, s.ReferencePod(scenario.RefusedNamespace, "refused", false), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = pods.Pods(scenario.RefusedNamespace).Delete(context.Background(), p.Name, metav1.DeleteOptions{})
	}()
	created := time.Now()
	line := describe(scenario.RefusedNamespace, p.Name, []string{
		"Last State:",
		"stopped without a valid token: no token at " + contract.TokenPath,
		"the issuer refused",
		"ServiceAccount " + scenario.RefusedNamespace + "/" + scenario.ServiceAccount + " may not use",
		"FailedPostStartHook",
		// The issuer's own Event (issuer/internal/events), stuck in Init or not.
		"TokenRefused",
		"endpoint vault refused the token exchange: invalid_request: ServiceAccount " + scenario.RefusedNamespace + "/" + scenario.ServiceAccount + " may not use",
	}, time.Minute)
	t.Logf("refused at start: %v after the create, kubectl describe pod shows\n%s", time.Since(created).Round(time.Second), line)
	if p, err = pods.Pods(scenario.RefusedNamespace).Get(ctx, p.Name, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, st := range p.Status.InitContainerStatuses {
		if st.Name == "vault-agent-init" && st.State.Waiting == nil {
			t.Fatalf("vault-agent-init ran without a token: %+v", st.State)
		}
	}

	// While running: the reference Pod is scenario.Ready through the sidecar's
	// readiness probe until its token runs out with the issuer gone.
	ref, err := pods.Pods(scenario.Namespace).Get(ctx, "reference-as-written", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !scenario.Ready(ref) {
		t.Fatalf("the reference Pod, which has its token, is not Ready: %+v", ref.Status.Conditions)
	}
	s.Issuer.Proc.Stop()
	stopped := time.Now()
	line = describe(scenario.Namespace, ref.Name, []string{
		"Readiness probe failed",
		"the exchange is failing",
		"connection refused",
	}, 2*time.Minute)
	t.Logf("issuer gone: %v after the stop (one-minute tokens), kubectl describe pod shows\n%s", time.Since(stopped).Round(time.Second), line)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
		if ref, err = pods.Pods(scenario.Namespace).Get(ctx, ref.Name, metav1.GetOptions{}); err == nil && !scenario.Ready(ref) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reference Pod stayed scenario.Ready without a token: %+v", ref.Status.Conditions)
		}
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
