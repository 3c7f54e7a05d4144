package main

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kube-sts/kube-sts/shared/contract"
	"github.com/kube-sts/kube-sts/sidecar/internal/issuertest"
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
	iss *issuertest.Issuer
	env []string
	out string
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	bin := buildBinary(t)
	iss := issuertest.New(time.Hour)
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

	if b, err := cmd("probe").CombinedOutput(); exitCode(err) != 1 || !strings.Contains(string(b), "no token at") {
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

	iss.Set(issuertest.Refuse)
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
	for _, args := range [][]string{{"--version"}, {"version"}} {
		b, err := exec.Command(bin, args...).CombinedOutput()
		if exitCode(err) != 0 || !strings.HasPrefix(string(b), "sts-creds-sidecar ") || !strings.Contains(string(b), "\nplatform: ") {
			t.Fatalf("%v: exit %d, %q", args, exitCode(err), b)
		}
	}
	for _, args := range [][]string{{"-h"}, {"help"}} {
		b, err := exec.Command(bin, args...).CombinedOutput()
		if exitCode(err) != 0 || !strings.Contains(string(b), "Usage: sts-creds-sidecar [run|once|probe|await|version|help]") {
			t.Fatalf("%v: exit %d, %q", args, exitCode(err), b)
		}
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

// TestBinaryFurtherTokens: a Pod with two injectors has one sidecar keeping
// two tokens, each from its own endpoint with its own subject token and CA.
// A hanging endpoint does not delay the other's token; probe names only the
// missing file; once fails naming the endpoint that failed.
func TestBinaryFurtherTokens(t *testing.T) {
	f := newFixture(t)
	aws := issuertest.NewTLS(time.Hour)
	t.Cleanup(aws.Close)
	dir := filepath.Dir(f.out)
	subject := filepath.Join(dir, "aws-role.token")
	out := filepath.Join(dir, "aws-role.jwt")
	if err := os.WriteFile(subject, []byte("subject-aws"), 0o600); err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: aws.Certificate().Raw})
	further, err := json.Marshal([]contract.Token{{Name: "aws-role", ExchangeURL: aws.TokenURL(),
		SubjectTokenFile: subject, OutputFile: out, CAPEM: string(caPEM)}})
	if err != nil {
		t.Fatal(err)
	}
	f.env = append(f.env, contract.EnvTokens+"="+string(further), contract.EnvHTTPTimeout+"=3s")

	aws.Set(issuertest.Hang)
	c := f.cmd("run")
	log := &syncBuffer{}
	c.Stderr = log
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Process.Kill(); _ = c.Wait() }()
	waitFile(t, f.out, 5*time.Second, log)
	if _, err := os.Stat(out); err == nil {
		t.Fatal("the hanging endpoint's token exists")
	}
	b, err := f.cmd("probe").CombinedOutput()
	if exitCode(err) != 1 || !strings.Contains(string(b), "no token at "+out) || strings.Contains(string(b), f.out) {
		t.Fatalf("probe with the further token missing: exit %d, %q; want 1 naming only %s", exitCode(err), b, out)
	}
	// Once the hanging exchange has timed out, probe also says why the
	// token is missing: what the kubelet shows in the Pod's events.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b, _ := f.cmd("probe").CombinedOutput()
		if strings.Contains(string(b), "the exchange is failing; 1 attempt(s) failed since") && strings.Contains(string(b), "Client.Timeout") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("probe never said why the further token is missing: %q", b)
		}
	}
	aws.Set(issuertest.OK)
	waitFile(t, out, 15*time.Second, log)
	if b, err := f.cmd("probe").CombinedOutput(); exitCode(err) != 0 {
		t.Fatalf("probe with both tokens: exit %d, %q", exitCode(err), b)
	}
	if subjects, _ := f.iss.Requests(); len(subjects) == 0 || subjects[0] != "subject" {
		t.Errorf("the first endpoint was sent %q, want its own subject token", subjects)
	}
	if subjects, _ := aws.Requests(); len(subjects) == 0 || subjects[len(subjects)-1] != "subject-aws" {
		t.Errorf("the further endpoint was sent %q, want its own subject token", subjects)
	}
	if !strings.Contains(log.String(), `"token_file":"`+out+`"`) || !strings.Contains(log.String(), `"injector":"aws-role"`) {
		t.Errorf("the log does not say which token its lines are about:\n%s", log.String())
	}
	_ = c.Process.Signal(syscall.SIGTERM)
	if err := c.Wait(); exitCode(err) != 0 {
		t.Fatalf("run: exit %d\n%s", exitCode(err), log.String())
	}

	// once (the init container without native sidecars) writes every token
	// or fails naming the endpoint that failed.
	_ = os.Remove(f.out)
	_ = os.Remove(out)
	aws.Set(issuertest.Refuse)
	b, err = f.cmd("once").CombinedOutput()
	if exitCode(err) != 1 || !strings.Contains(string(b), "exchange at "+aws.TokenURL()) {
		t.Fatalf("once with the further endpoint refusing: exit %d, %q", exitCode(err), b)
	}
	if _, err := os.Stat(f.out); err != nil {
		t.Errorf("the first token was not written although its endpoint answered: %v", err)
	}
}

// syncBuffer is the child's stderr, written by exec's copying goroutine
// while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func waitFile(t *testing.T, path string, within time.Duration, log *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v; log:\n%s", path, within, log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBinaryTerminationMessage: run stopped without a token (the kubelet
// kills a native sidecar whose postStart hook failed) exits 1 and leaves
// the reason in the termination message file, which kubectl describe pod
// shows as the container's last state; once does the same when it fails.
// Outside a Pod (no such file) nothing is created.
func TestBinaryTerminationMessage(t *testing.T) {
	f := newFixture(t)
	f.iss.Set(issuertest.Refuse)
	termLog := filepath.Join(t.TempDir(), "termination-log")
	if err := os.WriteFile(termLog, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	f.env = append(f.env, contract.EnvTerminationLog+"="+termLog)
	c := f.cmd("run")
	log := &syncBuffer{}
	c.Stderr = log
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Process.Kill() }()
	waitFile(t, contract.StatusPath(f.out), 5*time.Second, log)
	_ = c.Process.Signal(syscall.SIGTERM)
	err := c.Wait()
	msg, _ := os.ReadFile(termLog)
	if exitCode(err) != 1 || !strings.Contains(string(msg), "stopped without a valid token: no token at "+f.out) ||
		!strings.Contains(string(msg), "the issuer refused the exchange") || !strings.Contains(string(msg), "namespace test-vault is not allowed") {
		t.Fatalf("run stopped without a token: exit %d, termination message %q", exitCode(err), msg)
	}

	// With a token, a stop is a clean exit that leaves the message alone.
	f.iss.Set(issuertest.OK)
	_ = os.WriteFile(termLog, nil, 0o666)
	c = f.cmd("run")
	c.Stderr = log
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFile(t, f.out, 5*time.Second, log)
	_ = c.Process.Signal(syscall.SIGTERM)
	if err := c.Wait(); exitCode(err) != 0 {
		t.Fatalf("run stopped with its token: exit %d", exitCode(err))
	}
	if msg, _ := os.ReadFile(termLog); len(msg) != 0 {
		t.Fatalf("termination message after a clean stop: %q", msg)
	}

	f.iss.Set(issuertest.Refuse)
	_ = os.Remove(f.out)
	if b, err := f.cmd("once").CombinedOutput(); exitCode(err) != 1 {
		t.Fatalf("once refused: exit %d, %s", exitCode(err), b)
	}
	if msg, _ := os.ReadFile(termLog); !strings.Contains(string(msg), "namespace test-vault is not allowed") {
		t.Fatalf("once's termination message: %q", msg)
	}

	missing := filepath.Join(t.TempDir(), "none")
	f.env = append(f.env, contract.EnvTerminationLog+"="+missing)
	_, _ = f.cmd("once").CombinedOutput()
	if _, err := os.Stat(missing); err == nil {
		t.Fatal("once created a termination message file that was not there")
	}
}
