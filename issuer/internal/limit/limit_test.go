package limit

import (
	"testing"
	"time"
)

func TestGate(t *testing.T) {
	g := NewGate(2)
	for i := range 2 {
		if !g.TryEnter() {
			t.Fatalf("slot %d not granted", i+1)
		}
	}
	if g.TryEnter() {
		t.Fatal("third holder admitted")
	}
	if g.InUse() != 2 {
		t.Fatalf("InUse = %d", g.InUse())
	}
	g.Leave()
	if !g.TryEnter() {
		t.Fatal("freed slot not granted")
	}
	g.Leave()
	g.Leave()
	if g.InUse() != 0 || g.Peak() != 2 {
		t.Fatalf("after everyone left: InUse %d, Peak %d; want 0 and 2", g.InUse(), g.Peak())
	}
}

func TestPerKey(t *testing.T) {
	now := time.Unix(1000, 0)
	p := NewPerKey(3, time.Second, 2, func() time.Time { return now })
	for i := range 3 {
		if ok, _ := p.Allow("a"); !ok {
			t.Fatalf("use %d refused", i+1)
		}
	}
	now = now.Add(300 * time.Millisecond)
	ok, wait := p.Allow("a")
	if ok || wait != 700*time.Millisecond {
		t.Fatalf("fourth use in the window: ok=%v wait=%v", ok, wait)
	}
	if ok, _ := p.Allow("b"); !ok {
		t.Fatal("another key refused")
	}
	// The table is full (2 keys): a third key passes untracked.
	for range 10 {
		if ok, _ := p.Allow("c"); !ok {
			t.Fatal("untracked key refused")
		}
	}
	now = now.Add(700 * time.Millisecond)
	if ok, _ := p.Allow("a"); !ok {
		t.Fatal("refused in the next window")
	}
}
