package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kube-sts/kube-sts/sidecar/internal/testissuer"
)

// The exit codes are what the kubelet sees, so they are checked on the real binary.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sts-creds-sidecar")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// fixture is the built binary, a test issuer, and the env that points the
// binary at them (subject token file written, output file in a temp dir).
type fixture struct {
	bin string
	iss *testissuer.Issuer
	env []string
	out string
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	bin := buildBinary(t)
	iss := testissuer.New(time.Hour)
	t.Cleanup(iss.Close)
	dir := t.TempDir()
	subject := filepath.Join(dir, "sa")
	out := filepath.Join(dir, "token.jwt")
	if err := os.WriteFile(subject, []byte("subject"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"STS_EXCHANGE_URL=" + iss.TokenURL(), "STS_SUBJECT_TOKEN_FILE=" + subject, "STS_OUTPUT_FILE=" + out}
	return fixture{bin: bin, iss: iss, env: env, out: out}
}

func (f fixture) cmd(args ...string) *exec.Cmd {
	c := exec.Command(f.bin, args...)
	c.Env = f.env
	return c
}

func TestBinaryModes(t *testing.T) {
	f := newFixture(t)
	bin, iss, cmd := f.bin, f.iss, f.cmd

	if b, err := cmd("probe").CombinedOutput(); exitCode(err) != 1 || !strings.Contains(string(b), "no token yet") {
		t.Fatalf("probe before any token: exit %d, %q; want 1 and a reason", exitCode(err), b)
	}
	if b, err := cmd("once").CombinedOutput(); exitCode(err) != 0 {
		t.Fatalf("once: exit %d: %s", exitCode(err), b)
	}
	if b, err := cmd("probe").CombinedOutput(); exitCode(err) != 0 || len(b) != 0 {
		t.Fatalf("probe after once: exit %d, output %q; want 0 and silence", exitCode(err), b)
	}
	if b, err := cmd("probe", "--probe-margin", "2h").CombinedOutput(); exitCode(err) != 1 || !strings.Contains(string(b), "within 2h") {
		t.Fatalf("probe with a margin beyond expiry: exit %d, %q", exitCode(err), b)
	}

	iss.Set(testissuer.Refuse)
	b, err := cmd("once").CombinedOutput()
	if exitCode(err) != 1 || !strings.Contains(string(b), "namespace test-vault is not allowed") {
		t.Fatalf("once against a refusing issuer: exit %d, %q; want 1 quoting the issuer", exitCode(err), b)
	}
	for _, tok := range iss.Minted() {
		if strings.Contains(string(b), tok) {
			t.Fatal("output contains a token")
		}
	}

	if b, err := exec.Command(bin, "once").CombinedOutput(); exitCode(err) != 1 || !strings.Contains(string(b), "STS_EXCHANGE_URL") {
		t.Fatalf("once without configuration: exit %d, %q", exitCode(err), b)
	}
	if b, err := exec.Command(bin, "--version").CombinedOutput(); exitCode(err) != 0 || !strings.HasPrefix(string(b), "sts-creds-sidecar ") {
		t.Fatalf("--version: exit %d, %q", exitCode(err), b)
	}
}

func TestBinaryExitsOnSIGTERM(t *testing.T) {
	f := newFixture(t)
	out := f.out
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		c := f.cmd("run")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, err := os.Stat(out); err == nil {
				break
			}
			if time.Now().After(deadline) {
				_ = c.Process.Kill()
				t.Fatal("no token written")
			}
			time.Sleep(5 * time.Millisecond)
		}
		start := time.Now()
		_ = c.Process.Signal(sig)
		err := c.Wait()
		if took := time.Since(start); took > time.Second {
			t.Fatalf("%v: exited after %v, want under 1s", sig, took)
		}
		if exitCode(err) != 0 {
			t.Fatalf("%v: exit %d, want 0", sig, exitCode(err))
		}
		_ = os.Remove(out)
	}
}
