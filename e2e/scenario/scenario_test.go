package scenario

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-sts/kube-sts/e2e/controlplane"
	"github.com/kube-sts/kube-sts/shared/contract"
)

// A real node needs what envtest turns off: the ServiceAccount admission
// plugin mounts API credentials into Pods (Vault's injector relies on it).
var cp = &controlplane.Harness{ExtraAPIServerArgs: map[string][]string{"disable-admission-plugins": nil}}

func TestMain(m *testing.M) { os.Exit(cp.Main(m)) }

func TestReferenceScenario(t *testing.T) {
	env := cp.Require(t)
	s := Up(t, env, t.Logf)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pods := env.Clientset.CoreV1()

	for _, tc := range []struct {
		name          string
		withJSONPatch bool
	}{
		{"reference-as-written", true},
		{"without-json-patch", false},
	} {
		if testing.Short() && !tc.withJSONPatch {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			in := s.ReferencePod(Namespace, tc.name, tc.withJSONPatch)
			pod, err := pods.Pods(Namespace).Create(ctx, in, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			if got := pod.Spec.InitContainers[0].Name; got != contract.ContainerName {
				t.Fatalf("initContainers[0] = %s, want %s", got, contract.ContainerName)
			}
			s.waitForSecret(ctx, t, pod)
			// Vault's init container started only after the token existed.
			p, err := pods.Pods(Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			sidecarLog, _ := s.Node.ContainerLog(p, contract.ContainerName)
			first := firstRefresh(t, sidecarLog)
			var vaultInit *corev1.ContainerStatus
			for i := range p.Status.InitContainerStatuses {
				if p.Status.InitContainerStatuses[i].Name == "vault-agent-init" {
					vaultInit = &p.Status.InitContainerStatuses[i]
				}
			}
			if vaultInit == nil || vaultInit.State.Terminated == nil {
				t.Fatalf("vault-agent-init status %+v", vaultInit)
			}
			if started := vaultInit.State.Terminated.StartedAt.Time; started.Before(first.Truncate(time.Second)) {
				t.Fatalf("vault-agent-init started at %v, before the first token (%v)", started, first)
			}
			t.Logf("%s: first STS token at %v, vault-agent-init started %v", tc.name, first.Format(time.RFC3339Nano), vaultInit.State.Terminated.StartedAt.Time.Format(time.RFC3339))
		})
	}
}

func (s *Stack) waitForSecret(ctx context.Context, t *testing.T, pod *corev1.Pod) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		log, _ := s.Node.ContainerLog(pod, "test")
		if strings.Contains(log, `MY_SECRET_PASSWORD="`+Password+`"`) {
			return
		}
		if time.Now().After(deadline) {
			p, _ := s.Env.Clientset.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
			var logs strings.Builder
			for _, c := range []string{contract.ContainerName, "vault-agent-init", "vault-agent", "test"} {
				l, _ := s.Node.ContainerLog(pod, c)
				logs.WriteString("--- " + c + ":\n" + tail(l) + "\n")
			}
			t.Fatalf("the app never saw the secret; pod status %+v\n%s\nvault log:\n%s", p.Status, logs.String(), tail(string(s.Vault.Log())))
		}
		time.Sleep(time.Second)
	}
}

func tail(s string) string {
	if len(s) > 3000 {
		return s[len(s)-3000:]
	}
	return s
}

// firstRefresh is the time of the sidecar's first "token refreshed" line.
func firstRefresh(t *testing.T, log string) time.Time {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `"token refreshed"`) {
			continue
		}
		i := strings.Index(line, `"ts":"`)
		if i < 0 {
			continue
		}
		ts := line[i+6:]
		ts = ts[:strings.IndexByte(ts, '"')]
		tm, err := time.Parse("2006-01-02T15:04:05.000Z0700", ts)
		if err != nil {
			t.Fatalf("parse %q: %v", ts, err)
		}
		return tm
	}
	t.Fatalf("no token refreshed line in the sidecar log:\n%s", log)
	return time.Time{}
}
