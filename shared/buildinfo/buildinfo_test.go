package buildinfo

import (
	"runtime"
	"strings"
	"testing"
)

func TestTextAndLabels(t *testing.T) {
	Version, Commit, Date = "v1.2.3", "0123456789abcdef", "2026-12-04T05:00:00Z"
	t.Cleanup(func() { Version, Commit, Date = "dev", "", "" })
	i := Get()
	text := i.Text("sts-issuer")
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if lines[0] != "sts-issuer v1.2.3" {
		t.Errorf("first line %q: scripts read it as <binary> <version>", lines[0])
	}
	for _, want := range []string{"commit:   0123456789abcdef", "date:     2026-12-04T05:00:00Z", "go:       " + runtime.Version(), "platform: " + runtime.GOOS + "/" + runtime.GOARCH} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("missing %q in:\n%s", want, text)
		}
	}
	if n, v := LabelNames(), i.LabelValues(); len(n) != len(v) || v[0] != "v1.2.3" || v[1] != "0123456789abcdef" {
		t.Errorf("labels %v = %v", n, v)
	}
}

func TestUnstampedSaysUnknown(t *testing.T) {
	// A test binary carries no VCS stamp: unstamped fields say so rather
	// than staying empty.
	i := Get()
	if i.Commit == "" || i.Date == "" {
		t.Fatalf("empty fields in %+v", i)
	}
}
