package manifests

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

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

// TestToolchainAnswersCachedWithoutLock: while one toolchain.sh builds (the
// tools lane builds weed beside the suites), another asking for a cached
// tool is answered at once; only a build waits for the cache's lock.
func TestToolchainAnswersCachedWithoutLock(t *testing.T) {
	script := filepath.Join(procs.RepoRoot(), "e2e", "hack", "toolchain.sh")
	out, err := exec.Command("bash", script, "versions").Output()
	if err != nil {
		t.Fatalf("toolchain.sh versions: %v", err)
	}
	_, helmVersion, _ := strings.Cut(string(out), "HELM_VERSION=")
	helmVersion, _, _ = strings.Cut(helmVersion, " ")
	cache := t.TempDir()
	stub := filepath.Join(cache, "bin", "helm-"+helmVersion, "helm")
	if err := os.MkdirAll(filepath.Dir(stub), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stub, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Another process holds the lock, as a build does.
	holder := exec.Command("flock", filepath.Join(cache, ".toolchain.lock"), "sleep", "60")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	for i := 0; ; i++ { // until the holder has the lock
		if err := exec.Command("flock", "-n", filepath.Join(cache, ".toolchain.lock"), "true").Run(); err != nil {
			break
		}
		if i == 100 {
			t.Fatal("the holder never took the lock")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// ask runs toolchain.sh --print-bin=name for up to 3 seconds: its
	// path, its log, and whether it finished.
	ask := func(name string) (path, log string, finished bool) {
		cmd := exec.Command("bash", script, "--print-bin="+name)
		cmd.Env = append(os.Environ(), "KUBE_STS_CACHE="+cache)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("toolchain.sh --print-bin=%s: %v\n%s", name, err, stderr.String())
			}
			return strings.TrimSpace(stdout.String()), stderr.String(), true
		case <-time.After(3 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
			return "", stderr.String(), false
		}
	}
	if got, log, finished := ask("helm"); !finished || got != stub {
		t.Errorf("a cached helm while the lock is held: %q (finished: %v); want %s at once\n%s", got, finished, stub, log)
	}
	// A tool that is not cached waits for the lock before it starts to build.
	if _, log, finished := ask("kustomize"); finished || strings.Contains(log, "building") {
		t.Errorf("an uncached kustomize while the lock is held did not wait for it (finished: %v):\n%s", finished, log)
	}
}
