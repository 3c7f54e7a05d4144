package procs

import (
	"testing"
)

func TestPortRange(t *testing.T) {
	for _, c := range []struct {
		spec      string
		low, high int
		bad       bool
	}{
		{spec: "", low: 20000, high: 32768},
		{spec: "20000-26000", low: 20000, high: 26000},
		{spec: " 26000 - 32768 ", low: 26000, high: 32768},
		{spec: "26000", bad: true},
		{spec: "80-2000", bad: true},
		{spec: "30000-30050", bad: true},
		{spec: "30000-70000", bad: true},
		{spec: "a-b", bad: true},
	} {
		low, high, err := portRange(c.spec, 32768)
		if c.bad {
			if err == nil {
				t.Errorf("portRange(%q) = %d, %d; want an error", c.spec, low, high)
			}
			continue
		}
		if err != nil || low != c.low || high != c.high {
			t.Errorf("portRange(%q) = %d, %d, %v; want %d, %d", c.spec, low, high, err, c.low, c.high)
		}
	}
}

// Every port handed out under PortsEnv is inside its range, and none twice.
func TestLoopbackPortStaysInItsRange(t *testing.T) {
	t.Setenv(PortsEnv, "23000-23200")
	seen := map[int]bool{}
	for range 50 {
		p, err := LoopbackPort()
		if err != nil {
			t.Fatal(err)
		}
		if p < 23000 || p >= 23200 {
			t.Fatalf("port %d outside 23000-23200", p)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
	t.Setenv(PortsEnv, "nonsense")
	if _, err := LoopbackPort(); err == nil {
		t.Fatal("a malformed range was accepted")
	}
}
