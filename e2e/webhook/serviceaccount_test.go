package webhook

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-sts/kube-sts/e2e/internal/scrape"
	"github.com/kube-sts/kube-sts/e2e/internal/stswebhook"
	"github.com/kube-sts/kube-sts/e2e/internal/testca"
	"github.com/kube-sts/kube-sts/shared/contract"
)

// admissions is the webhook's sts_webhook_admissions_total over every
// injector and result: how many admissions it has decided.
func admissions(t testing.TB, metricsURL string) float64 {
	t.Helper()
	n, err := scrape.SumAt(metricsURL, "sts_webhook_admissions_total")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestServiceAccountOptIn: sts-webhook with --serviceaccount-opt-in behind
// the shipped registration plus the serviceaccount-opt-in component's
// entry, granted the component's RBAC, on the real API server. In a
// namespace labeled kube-sts.io/serviceaccount-opt-in: "true" a Pod whose
// ServiceAccount is annotated kube-sts.io/inject gets the sidecar, also
// when the ServiceAccount was created a moment before; one whose
// ServiceAccount is not annotated, or that opts out with its label, is
// untouched; the label still works alone. In a namespace not enabled the
// annotation does nothing and the API server does not even call the
// webhook for an unlabeled Pod.
func TestServiceAccountOptIn(t *testing.T) {
	env := cp.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ca, err := testca.New("sa-opt-in")
	if err != nil {
		t.Fatal(err)
	}
	wh := stswebhook.Start(t, env, stswebhook.Options{Config: webhookConfig, CA: ca, Host: "127.0.0.1", ServiceAccountOptIn: true})
	stswebhook.RegisterServiceAccountOptIn(ctx, t, env, "kube-sts-sa-opt-in", wh.URL, ca.CertPEM)
	cs := env.Clientset.CoreV1()
	const enabled, notEnabled = "sa-opt-in", "sa-not-enabled"
	for ns, labels := range map[string]map[string]string{enabled: {contract.LabelServiceAccountOptIn: "true"}, notEnabled: nil} {
		if _, err := cs.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		for sa, inject := range map[string]string{"default": "", "app": "vault-sts", "typo": "vault"} {
			o := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}
			if inject != "" {
				o.Annotations = map[string]string{contract.AnnotationInject: inject}
			}
			if _, err := cs.ServiceAccounts(ns).Create(ctx, o, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	pod := func(ns, name, sa string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
			Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "test", Image: "local/app:test"}}}}
	}
	create := func(t *testing.T, p *corev1.Pod) (injected bool) {
		t.Helper()
		got, err := cs.Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create %s/%s: %v", p.Namespace, p.Name, err)
		}
		return got.Annotations[contract.InjectedAnnotation] == "vault-sts" && len(got.Spec.InitContainers) > 0 &&
			got.Spec.InitContainers[0].Name == contract.ContainerName
	}

	for i, c := range []struct {
		name, ns, sa string
		labels       map[string]string
		injected     bool
	}{
		{"annotated ServiceAccount, unlabeled Pod: injected", enabled, "app", nil, true},
		{"ServiceAccount not annotated: untouched", enabled, "default", nil, false},
		{"the Pod's label false opts it out", enabled, "app", map[string]string{"tremolo.io/vault-sts": "false"}, false},
		{"the label alone still injects", enabled, "default", map[string]string{"tremolo.io/vault-sts": "true"}, true},
		{"namespace not enabled: the annotation does nothing", notEnabled, "app", nil, false},
		{"namespace not enabled: the label still injects", notEnabled, "default", map[string]string{"tremolo.io/vault-sts": "true"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := create(t, pod(c.ns, fmt.Sprintf("case-%d", i), c.sa, c.labels)); got != c.injected {
				t.Fatalf("injected: %v, want %v", got, c.injected)
			}
		})
	}

	t.Run("an unlabeled Pod of a namespace not enabled never reaches the webhook", func(t *testing.T) {
		before := admissions(t, wh.MetricsURL)
		for i := range 5 {
			if create(t, pod(notEnabled, fmt.Sprintf("unseen-%d", i), "app", nil)) {
				t.Fatal("injected")
			}
		}
		// The same in the enabled namespace is decided by the webhook:
		// the counter moves, so it would have moved above too.
		if create(t, pod(enabled, "seen", "default", nil)) {
			t.Fatal("injected")
		}
		if d := admissions(t, wh.MetricsURL) - before; d != 1 {
			t.Fatalf("the webhook decided %v admissions, want 1 (the enabled namespace's Pod only)", d)
		}
	})

	t.Run("a ServiceAccount created a moment before its Pod", func(t *testing.T) {
		for i := range 10 {
			sa := fmt.Sprintf("fresh-%d", i)
			if _, err := cs.ServiceAccounts(enabled).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa,
				Annotations: map[string]string{contract.AnnotationInject: "vault-sts"}}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if !create(t, pod(enabled, sa, sa, nil)) {
				t.Fatalf("the Pod of %s was not injected", sa)
			}
		}
		t.Logf("10 of 10 injected; %v read from the API server (not in the watched cache yet)",
			metricValue(t, wh.MetricsURL, "sts_webhook_serviceaccount_live_lookups_total"))
	})

	t.Run("an annotation naming no injector is refused with the reason", func(t *testing.T) {
		_, err := cs.Pods(enabled).Create(ctx, pod(enabled, "typo", "typo", nil), metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), `ServiceAccount typo's annotation kube-sts.io/inject names "vault", which is no kube-sts injector`) {
			t.Fatalf("create: %v", err)
		}
	})
}
