package node

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/node"
	"github.com/kube-sts/kube-sts/e2e/internal/procs"
)

var cp = controlplane.New()

func TestMain(m *testing.M) { os.Exit(cp.Main(m)) }

// TestNodeRunsAPod proves the node harness: a host-network Pod runs under the
// real kubelet and containerd, and its output is read from the kubelet's logs.
func TestNodeRunsAPod(t *testing.T) {
	env := cp.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kubelet, err := controlplane.Binary(ctx, "kubelet")
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.Start(ctx, env, node.Options{Kubelet: kubelet})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	work := t.TempDir()
	pause := procs.Build(t, "e2e", "./cmd/pause")
	app := procs.Build(t, "e2e", "./cmd/testapp")
	for _, img := range []node.Image{
		{Tag: node.PauseImage, Add: []string{pause + ":/pause"}, Entrypoint: "/pause"},
		{Tag: node.AppImage, Add: []string{app + ":/testapp"}, Entrypoint: "/testapp", User: "65532"},
	} {
		tar, err := node.BuildImage(ctx, work, img)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.ImportImage(ctx, tar); err != nil {
			t.Fatal(err)
		}
	}
	if err := node.PrepareNamespace(ctx, env, "default"); err != nil {
		t.Fatal(err)
	}
	pod, err := env.Clientset.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "hello"},
		Spec: corev1.PodSpec{
			NodeName:    node.Name,
			HostNetwork: true,
			Containers:  []corev1.Container{{Name: "app", Image: node.AppImage, ImagePullPolicy: corev1.PullNever, Args: []string{"/etc/hostname-not-there"}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		log, _ := n.ContainerLog(pod, "app")
		if strings.Contains(log, "waiting for /etc/hostname-not-there") {
			break
		}
		if time.Now().After(deadline) {
			p, _ := env.Clientset.CoreV1().Pods("default").Get(ctx, "hello", metav1.GetOptions{})
			t.Fatalf("no output from the pod; status %+v\nkubelet log: %s", p.Status, n.Dir)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
