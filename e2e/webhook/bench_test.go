package webhook

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-sts/kube-sts/e2e/internal/stswebhook"
	"github.com/kube-sts/kube-sts/e2e/internal/testca"
)

var benchPods atomic.Int64

// BenchmarkPodCreate creates labeled Pods through the real API server, with
// and without sts-webhook registered; the difference in p99 is what the
// webhook adds to a create.
func BenchmarkPodCreate(b *testing.B) {
	for _, withWebhook := range []bool{false, true} {
		name := map[bool]string{false: "without-webhook", true: "with-webhook"}[withWebhook]
		b.Run(name, func(b *testing.B) {
			env := cp.Require(b)
			ctx := context.Background()
			ns := fmt.Sprintf("bench-%d", benchPods.Add(1))
			if _, err := env.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
			if _, err := env.Clientset.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
			if withWebhook {
				ca, err := testca.New("bench")
				if err != nil {
					b.Fatal(err)
				}
				wh := stswebhook.Start(b, env, stswebhook.Options{Config: webhookConfig, CA: ca, Host: "127.0.0.1"})
				stswebhook.Register(ctx, b, env, "kube-sts-"+ns, wh.URL, ca.CertPEM)
				// Wait until the registration is in effect.
				for i := 0; ; i++ {
					p, err := env.Clientset.CoreV1().Pods(ns).Create(ctx, labeledPod(ns, fmt.Sprintf("warm-%d", i), nil), metav1.CreateOptions{})
					if err != nil {
						b.Fatal(err)
					}
					if len(p.Spec.InitContainers) > 0 {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				p, err := env.Clientset.CoreV1().Pods(ns).Create(ctx, labeledPod(ns, fmt.Sprintf("p-%d", i), nil), metav1.CreateOptions{})
				lat = append(lat, time.Since(start))
				if err != nil {
					b.Fatal(err)
				}
				if withWebhook != (len(p.Spec.InitContainers) > 0) {
					b.Fatalf("mutated=%v with webhook=%v", len(p.Spec.InitContainers) > 0, withWebhook)
				}
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pods/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
