package webhook

import (
	"context"
	"fmt"
	"strings"
	"testing"

	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/stswebhook"
	"github.com/kube-sts/kube-sts/e2e/internal/testca"
	"github.com/kube-sts/kube-sts/shared/contract"
)

// BenchmarkUnlabeledPodCreate measures what ServiceAccount opt-in costs
// the Pods that do not use it: an unlabeled Pod whose ServiceAccount is not
// annotated, created through the real API server in a namespace that
// enables opt-in (so every Pod create there reaches a webhook), b.N times
// per phase, interleaved rounds, in three variants:
//
//	none   no webhook registered for the namespace
//	noop   the shipped ServiceAccount entry pointed at a minimal HTTPS
//	       server that allows without a patch: the floor of calling any
//	       webhook for every Pod
//	ours   the same entry calling sts-webhook --serviceaccount-opt-in
//	       (shipped defaults, --log-level info), which answers from the
//	       Pod's labels and its ServiceAccount in the watched cache
//
// Issue #29's goal: ours ≤ noop + 1 ms at p99. Run it with -benchtime 300x.
func BenchmarkUnlabeledPodCreate(b *testing.B) {
	env := cp.Require(b)
	ctx := context.Background()
	run := benchRuns.Add(1)
	ca, err := testca.New("bench-sa")
	if err != nil {
		b.Fatal(err)
	}
	wh := stswebhook.Start(b, env, stswebhook.Options{Config: webhookConfig, CA: ca, Host: "127.0.0.1", LogLevel: "info", ServiceAccountOptIn: true})
	noop := startFloor(b, ca, nil)
	saURL := strings.TrimSuffix(wh.URL, "/mutate") + "/mutate-serviceaccount"

	type variant struct{ name, url, ns string }
	variants := []*variant{{name: "none"}, {name: "noop", url: noop.url}, {name: "ours", url: saURL}}
	for _, v := range variants {
		v.ns = fmt.Sprintf("bench-sa-%d-%s", run, v.name)
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: v.ns, Labels: map[string]string{"kube-sts.io/bench-sa": v.name, contract.LabelServiceAccountOptIn: "true"}}}
		if _, err := env.Clientset.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		if _, err := env.Clientset.CoreV1().ServiceAccounts(v.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		if v.url == "" {
			continue
		}
		registerServiceAccountEntry(ctx, b, env, fmt.Sprintf("kube-sts-bench-sa-%d-%s", run, v.name), v.name, v.url, ca.CertPEM)
		// In effect once the floor's calls or ours's decisions move.
		awaitRegistration(ctx, b, env, v.name, v.ns, unlabeledPod, func() func(*corev1.Pod) bool {
			before, handled := noop.calls.Load(), admissions(b, wh.MetricsURL)
			return func(*corev1.Pod) bool { return noop.calls.Load() > before || admissions(b, wh.MetricsURL) > handled }
		})
	}
	handled0, count0 := admissionSeconds(b, wh.MetricsURL)
	phases := make([]*phase, len(variants))
	for i, v := range variants {
		phases[i] = &phase{name: v.name, ns: v.ns}
	}
	p99 := interleave(ctx, b, env, phases, unlabeledPod, func(i int, p *corev1.Pod) {
		if len(p.Spec.InitContainers) > 0 {
			b.Fatalf("%s: an unlabeled Pod was injected", variants[i].name)
		}
	})
	b.ReportMetric(p99["ours"]-p99["noop"], "ours-noop-p99-ms")
	b.ReportMetric(handlerMicros(b, wh.MetricsURL, handled0, count0), "ours-handler-µs")
}

// unlabeledPod is a Pod that asks for no injector (annotations unused).
func unlabeledPod(ns, name string, _ map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "bench"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "test", Image: "local/app:test"}}}}
}

// registerServiceAccountEntry registers the serviceaccount-opt-in
// component's entry alone, for the namespaces labeled
// kube-sts.io/bench-sa=variant, pointed at url.
func registerServiceAccountEntry(ctx context.Context, b *testing.B, env *controlplane.Env, name, variant, url string, caPEM []byte) {
	cfg := stswebhook.ServiceAccountOptInManifest(b)
	cfg.Name = name
	w := &cfg.Webhooks[len(cfg.Webhooks)-1]
	cfg.Webhooks = []admissionregv1.MutatingWebhook{*w}
	w = &cfg.Webhooks[0]
	w.NamespaceSelector.MatchExpressions = append(w.NamespaceSelector.MatchExpressions,
		metav1.LabelSelectorRequirement{Key: "kube-sts.io/bench-sa", Operator: metav1.LabelSelectorOpIn, Values: []string{variant}})
	w.ClientConfig = admissionregv1.WebhookClientConfig{URL: ptr.To(url), CABundle: caPEM}
	stswebhook.Create(ctx, b, env, cfg)
}
