package inject

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/kube-sts/kube-sts/shared/contract"
)

// BenchmarkMutate is the pure mutation of the reference Pod (Select + Mutate
// on a copy, as the handler does).
func BenchmarkMutate(b *testing.B) {
	pod := loadPod(b, "reference-sts")
	inj := injectors(b)
	var p *corev1.Pod
	b.ReportAllocs()
	for b.Loop() {
		p = pod.DeepCopy()
		in, err := Select(p, inj, nil)
		if err != nil || len(in) == 0 {
			b.Fatal(err)
		}
		if err := Mutate(p, in, true); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	// A no-op Mutate would look fast: the measured result must be injected.
	if len(p.Spec.InitContainers) == 0 || p.Spec.InitContainers[0].Name != contract.ContainerName || len(p.Spec.Volumes) <= len(pod.Spec.Volumes) {
		b.Fatal("the benchmarked mutation did not inject the sidecar first")
	}
}

// BenchmarkMutateFloor is BenchmarkMutate's floor: a mutation that knows its
// answer and only hands back a fresh copy of the injected Pod (the caller
// owns what it gets, so a copy is the least any mutation returns). The
// difference to BenchmarkMutate is our selection and mutation.
func BenchmarkMutateFloor(b *testing.B) {
	pod := loadPod(b, "reference-sts")
	in, err := Select(pod, injectors(b), nil)
	if err != nil || len(in) == 0 {
		b.Fatal(err)
	}
	injected := pod.DeepCopy()
	if err := Mutate(injected, in, true); err != nil {
		b.Fatal(err)
	}
	var p *corev1.Pod
	b.ReportAllocs()
	for b.Loop() {
		p = injected.DeepCopy()
	}
	b.StopTimer()
	if len(p.Spec.InitContainers) == 0 || p.Spec.InitContainers[0].Name != contract.ContainerName {
		b.Fatal("the floor's Pod is not the injected one")
	}
}
