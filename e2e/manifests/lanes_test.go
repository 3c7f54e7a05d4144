package manifests

import (
	"errors"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kube-sts/kube-sts/e2e/internal/procs"
)

// TestTogetherFailsWhenOneFails: `make test` runs the e2e suites and the
// unit tests through hack/together.sh; a failure of either must fail it,
// every line says whose it is, and the niceness asked for is applied.
func TestTogetherFailsWhenOneFails(t *testing.T) {
	script := filepath.Join(procs.RepoRoot(), "hack", "together.sh")
	run := func(args ...string) (string, int) {
		out, err := exec.Command("bash", append([]string{script}, args...)...).CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return string(out), 0
		case errors.As(err, &ee):
			return string(out), ee.ExitCode()
		}
		t.Fatalf("together.sh: %v\n%s", err, out)
		return "", -1
	}

	out, code := run("first=echo one; echo two", "second:19=nice")
	if code != 0 {
		t.Fatalf("two passing commands: exit %d\n%s", code, out)
	}
	for _, want := range []string{"first  | one\n", "first  | two\n", "second | 19\n", "together: first exited 0", "together: second exited 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	out, code = run("slow=sleep 1; echo late", "bad=echo oops; exit 3")
	if code == 0 {
		t.Fatalf("a failing command did not fail together.sh:\n%s", out)
	}
	for _, want := range []string{"slow | late\n", "bad  | oops\n", "together: bad exited 3", "together: slow exited 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	for _, bad := range []string{"no-equals-sign", "x:20=true", "x:-1=true", "x="} {
		if out, code := run(bad); code == 0 {
			t.Errorf("together.sh %q was accepted:\n%s", bad, out)
		}
	}
}

// TestLanesCoverEverySuite: e2e/hack/lanes.sh puts every e2e package with
// tests in exactly one lane, the node lane holds exactly the packages whose
// tests link the node harness (two kubelets must never run at once), and
// the scale run is alone.
func TestLanesCoverEverySuite(t *testing.T) {
	e2e := filepath.Join(procs.RepoRoot(), "e2e")
	lines := func(name string, args ...string) []string {
		cmd := exec.Command(name, args...)
		cmd.Dir = e2e
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %v: %v", name, args, err)
		}
		return strings.Fields(string(out))
	}
	node := lines("bash", "hack/lanes.sh", "--list", "node")
	api := lines("bash", "hack/lanes.sh", "--list", "api")
	solo := lines("bash", "hack/lanes.sh", "--list", "solo")
	if !slices.Equal(solo, []string{"./scale"}) {
		t.Errorf("the solo lane is %v, want [./scale]", solo)
	}

	var all []string
	for _, dir := range lines("go", "list", "-f", "{{if or .TestGoFiles .XTestGoFiles}}{{.Dir}}{{end}}", "./...") {
		rel, err := filepath.Rel(e2e, dir)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, "./"+rel)
	}
	lanes := slices.Concat(node, api, solo)
	slices.Sort(lanes)
	slices.Sort(all)
	if !slices.Equal(lanes, all) {
		t.Fatalf("the lanes hold %v; the packages with tests are %v", lanes, all)
	}
	for _, want := range []string{"./node", "./scenario", "./soak"} {
		if !slices.Contains(node, want) {
			t.Errorf("%s is not in the node lane %v", want, node)
		}
	}
	for _, pkg := range all {
		deps := lines("go", "list", "-deps", "-test", pkg)
		links := slices.Contains(deps, "github.com/kube-sts/kube-sts/e2e/internal/node")
		if links != slices.Contains(node, pkg) && !slices.Contains(solo, pkg) {
			t.Errorf("%s: links the node harness: %v; in the node lane: %v", pkg, links, slices.Contains(node, pkg))
		}
	}
}
