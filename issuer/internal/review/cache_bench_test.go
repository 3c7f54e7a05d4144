package review

import (
	"fmt"
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

// realistic is a Pod as the watch delivers it: a Deployment's Pod with a
// sidecar, probes, volumes and a status.
func realistic(i int) *corev1.Pod {
	c := corev1.Container{Name: "app", Image: "registry.example/team/app:v1.2.3",
		Env:            []corev1.EnvVar{{Name: "VAULT_ADDR", Value: "https://vault.example:8200"}, {Name: "LOG_LEVEL", Value: "info"}},
		Resources:      corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}},
		VolumeMounts:   []corev1.VolumeMount{{Name: "sts-tokens", MountPath: "/tokens"}, {Name: "sts-token", MountPath: "/var/run/secrets/sts"}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready"}}},
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-7d9f8c6b5-%05d", i), Namespace: fmt.Sprintf("team-%d", i%100), UID: types.UID(fmt.Sprintf("0b7c1e2a-5f0d-4c1b-9a77-%012d", i)),
			ResourceVersion: "123456", Labels: map[string]string{"app": "app", "pod-template-hash": "7d9f8c6b5", "tremolo.io/vault-sts": "true"},
			Annotations:     map[string]string{"kube-sts.io/injected": "vault-sts"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "app-7d9f8c6b5", UID: "r"}}},
		Spec: corev1.PodSpec{ServiceAccountName: "app", NodeName: fmt.Sprintf("node-%d", i%500),
			InitContainers: []corev1.Container{c}, Containers: []corev1.Container{c, c},
			Volumes: []corev1.Volume{{Name: "sts-tokens", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: "Memory"}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Ready: true}, {Name: "app", Ready: true}}},
	}
}

// BenchmarkCacheBytesPerPod: what review mode watch's Pod cache holds per
// Pod (podState, with and without labels) in the informer's store, against
// keeping the Pod as the watch delivers it. Reported as bytes/pod.
func BenchmarkCacheBytesPerPod(b *testing.B) {
	const n = 20000
	for _, tc := range []struct {
		name string
		obj  func(*corev1.Pod) any
	}{
		{"state", func(p *corev1.Pod) any { return stateOf(p, false) }},
		{"state-with-labels", func(p *corev1.Pod) any { return stateOf(p, true) }},
		{"whole-pod", func(p *corev1.Pod) any { return p }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				store := cache.NewIndexer(cache.DeletionHandlingMetaNamespaceKeyFunc, cache.Indexers{})
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				for i := range n {
					if err := store.Add(tc.obj(realistic(i))); err != nil {
						b.Fatal(err)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/pod")
				runtime.KeepAlive(store)
			}
		})
	}
}
