package scenario

import (
	"context"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/flow"
	"github.com/kube-sts/kube-sts/e2e/internal/node"
	"github.com/kube-sts/kube-sts/e2e/internal/stsissuer"
)

// ReferencePod is the write-up's Pod (flow.ExamplePod) on this node
// (nodeName, hostNetwork), with our test app and Vault's dev server.
// withJSONPatch keeps its two agent-*-json-patch annotations.
func (s *Stack) ReferencePod(ns, name string, withJSONPatch bool) *corev1.Pod {
	return flow.ExamplePod(flow.PodOptions{
		Namespace: ns, Name: name,
		Image: node.AppImage, PullPolicy: corev1.PullNever, Args: []string{"/etc/secrets/myenv"},
		HostNetwork: true, NodeName: node.Name,
		VaultService: s.VaultAddr, WithJSONPatch: withJSONPatch,
	})
}

// Local is a flow.Target on the local node: logs straight from the kubelet's
// log folder, exchanges straight to the issuer on loopback.
type Local struct {
	Env         *controlplane.Env
	Node        *node.Node
	ExchangeURL string // https://<issuer>/token
	HTTP        *http.Client
}

// Client implements flow.Target.
func (l *Local) Client() kubernetes.Interface { return l.Env.Clientset }

// Logs implements flow.Target.
func (l *Local) Logs(_ context.Context, pod *corev1.Pod, container string) (string, error) {
	return l.Node.ContainerLog(pod, container)
}

// Exchange implements flow.Target.
func (l *Local) Exchange(ctx context.Context, subjectToken string) (int, []byte, error) {
	return stsissuer.Post(ctx, l.HTTP, l.ExchangeURL, subjectToken)
}

// Target is the stack as flow sees it.
func (s *Stack) Target() *Local {
	return &Local{Env: s.Env, Node: s.Node, ExchangeURL: s.IssuerURL + "/token", HTTP: s.Issuer.Client}
}
