package inject

import "testing"

// BenchmarkMutate is the pure mutation of the reference Pod (Select + Mutate
// on a copy, as the handler does).
func BenchmarkMutate(b *testing.B) {
	pod := loadPod(b, "reference-sts")
	inj := injectors(b)
	b.ReportAllocs()
	for b.Loop() {
		p := pod.DeepCopy()
		in, err := Select(p, inj)
		if err != nil || in == nil {
			b.Fatal(err)
		}
		if err := Mutate(p, in, true); err != nil {
			b.Fatal(err)
		}
	}
}
