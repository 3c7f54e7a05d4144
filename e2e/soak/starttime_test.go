package soak

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kube-sts/kube-sts/e2e/internal/flow"
	"github.com/kube-sts/kube-sts/e2e/internal/node"
	"github.com/kube-sts/kube-sts/e2e/internal/scenario"
	"github.com/kube-sts/kube-sts/shared/contract"
)

// startTimes measures what kube-sts adds to a Pod's start: the same Pod
// created n times each unlabeled, labeled for kube-sts, and labeled with
// Vault's injector too, one at a time; the time from the create call to the
// application's first log line (the kubelet's nanosecond CRI timestamp).
func startTimes(ctx context.Context, t *testing.T, s *scenario.Stack, n int) string {
	kinds := []struct {
		name  string
		build func(i int) *corev1.Pod
	}{
		{"unlabeled", func(i int) *corev1.Pod { return plainPod(fmt.Sprintf("start-plain-%02d", i), false) }},
		{"kube-sts", func(i int) *corev1.Pod { return plainPod(fmt.Sprintf("start-sts-%02d", i), true) }},
		{"kube-sts + Vault's injector", func(i int) *corev1.Pod {
			p := flow.ExamplePod(flow.PodOptions{Namespace: ns, Name: fmt.Sprintf("start-vault-%02d", i), Image: node.AppImage,
				PullPolicy: corev1.PullNever, Args: []string{"/etc/secrets/myenv"}, HostNetwork: true, VaultService: s.VaultAddr})
			p.Spec.TerminationGracePeriodSeconds = ptr.To[int64](1)
			return p
		}},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-40s %8s %8s   %s\n", "Pod (create call → app's first log line)", "p50", "p95", "p50 of: create → sidecar started, → token on disk, → app started")
	for _, k := range kinds {
		var took, toSidecar, toToken, toApp []time.Duration
		for i := range n {
			st, err := startOne(ctx, s, k.build(i))
			if err != nil {
				t.Errorf("%s: %v", k.name, err)
				break
			}
			took = append(took, st.app)
			if !st.token.IsZero() {
				toSidecar = append(toSidecar, st.sidecar.Sub(st.created))
				toToken = append(toToken, st.token.Sub(st.sidecar))
				toApp = append(toApp, st.created.Add(st.app).Sub(st.token))
			}
		}
		if len(took) == 0 {
			continue
		}
		phases := ""
		if len(toToken) > 0 {
			phases = fmt.Sprintf("%v, %v, %v", p50(toSidecar), p50(toToken), p50(toApp))
		}
		slices.Sort(took)
		fmt.Fprintf(&b, "%-40s %8v %8v   %s\n", k.name, pct(took, 50).Round(time.Millisecond), pct(took, 95).Round(time.Millisecond), phases)
	}
	fmt.Fprintf(&b, "(n=%d of each, one at a time)\n", n)
	return b.String()
}

func p50(d []time.Duration) time.Duration {
	slices.Sort(d)
	return pct(d, 50).Round(time.Millisecond)
}

// started is when a Pod's parts started, from the kubelet's CRI log
// timestamps: the sidecar's first line, its first "token refreshed", and
// the app's first line (app: since the create call).
type started struct {
	created        time.Time
	sidecar, token time.Time
	app            time.Duration
}

func pct(sorted []time.Duration, p int) time.Duration {
	return sorted[min(len(sorted)-1, (len(sorted)*p+99)/100-1)]
}

func plainPod(name string, labeled bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			HostNetwork: true, RestartPolicy: corev1.RestartPolicyNever, ServiceAccountName: flow.ServiceAccount,
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers:                    []corev1.Container{{Name: flow.AppContainer, Image: node.AppImage, ImagePullPolicy: corev1.PullNever, Args: []string{"/etc/hostname"}}},
		},
	}
	if labeled {
		p.Labels = map[string]string{"tremolo.io/" + flow.Label: "true"}
	}
	return p
}

// startOne creates the Pod, waits for its app's first log line and deletes it.
func startOne(ctx context.Context, s *scenario.Stack, pod *corev1.Pod) (started, error) {
	pods := s.Env.Clientset.CoreV1().Pods(ns)
	st := started{created: time.Now()}
	p, err := pods.Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return st, err
	}
	defer func() { _ = pods.Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}) }()
	deadline := st.created.Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if log, _ := s.Node.ContainerLog(p, flow.AppContainer); log != "" {
			if at, ok := criTime(log); ok {
				st.app = at.Sub(st.created)
				if side, _ := s.Node.ContainerLog(p, contract.ContainerName); side != "" {
					st.sidecar, _ = criTime(side)
					st.token = firstAfter(side, `"msg":"token refreshed"`, st.created)
				}
				return st, nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return st, fmt.Errorf("%s: the app wrote nothing within 2m", p.Name)
}
