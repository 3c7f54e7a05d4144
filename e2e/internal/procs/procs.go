// Package procs builds kube-sts's binaries and runs them as black boxes in
// tests: on loopback, with output captured to a file (which tests read to
// check that no token is ever logged), stopped by SIGTERM at cleanup.
package procs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildMu sync.Mutex
	built   = map[string]string{}
	binDir  string
)

// RepoRoot is the repository's top folder.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// CacheDir is where expensive builds are kept between runs:
// $KUBE_STS_CACHE, by default ~/.cache/kube-sts (as the Makefile sets it).
func CacheDir() string {
	if base := os.Getenv("KUBE_STS_CACHE"); base != "" {
		return base
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "kube-sts")
}

// Build compiles a binary of the workspace once per test process, e.g.
// Build(t, "issuer", "./cmd/sts-issuer").
func Build(t testing.TB, module, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	key := module + "/" + pkg
	if p, ok := built[key]; ok {
		return p
	}
	if binDir == "" {
		// One fixed place, overwritten by each run, so nothing piles up.
		binDir = filepath.Join(CacheDir(), "e2e-bin")
		if err := os.MkdirAll(binDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(binDir, filepath.Base(pkg))
	// Built beside and renamed into place: concurrent test binaries never
	// run a half-written file.
	tmp := fmt.Sprintf("%s.%d.tmp", out, os.Getpid())
	// The release's flags (release/images goBuild, `make build-standalone`):
	// the module on its own, static, trimmed. The same flags mean the same
	// compiled packages in the Go build cache, so a cold `make test` compiles
	// the binaries' dependencies once for all three, not three times.
	cmd := exec.Command("go", "build", "-trimpath", "-o", tmp, pkg)
	cmd.Dir = filepath.Join(RepoRoot(), module)
	cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", key, err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		t.Fatal(err)
	}
	built[key] = out
	return out
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := LoopbackPort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// PortsEnv names the range LoopbackPort picks from, "LOW-HIGH" (HIGH
// excluded). `make test-integration` gives each of its two lanes of suites
// a range of its own: a port handed out in one test binary stays unbound
// for a while (until the process it was meant for listens), and a suite
// running at the same time in another binary must not pick it meanwhile.
const PortsEnv = "KUBE_STS_E2E_PORTS"

// LoopbackPort is FreePort for code without a testing.TB. It never hands
// out a port twice in one process (two calls in a row could otherwise get
// the same one, the kernel's choice for port 0 being free again at once) and
// picks below the kernel's ephemeral range, where outgoing connections take
// their source ports and could take ours between the check and the bind.
func LoopbackPort() (int, error) {
	low, high, err := portRange(os.Getenv(PortsEnv), ephemeralLow())
	if err != nil {
		return 0, err
	}
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := low + rand.IntN(high-low)
		if handedOut[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		_ = l.Close()
		handedOut[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("no free loopback port in [%d, %d) after 1000 tries", low, high)
}

// portRange is the range of ports to pick from: spec ("LOW-HIGH") when set,
// else from 20000 (above the well-known ports of the kubelet (10250),
// schedulers, Vault) to the kernel's ephemeral range.
func portRange(spec string, ephemeral int) (low, high int, err error) {
	if spec == "" {
		return 20000, max(ephemeral, 20001), nil
	}
	l, h, ok := strings.Cut(spec, "-")
	low, err1 := strconv.Atoi(strings.TrimSpace(l))
	high, err2 := strconv.Atoi(strings.TrimSpace(h))
	if !ok || err1 != nil || err2 != nil || low < 1024 || high > 65536 || high-low < 100 {
		return 0, 0, fmt.Errorf("%s=%q: want LOW-HIGH, 1024 <= LOW, LOW+100 <= HIGH <= 65536", PortsEnv, spec)
	}
	return low, high, nil
}

var (
	portsMu   sync.Mutex
	handedOut = map[int]bool{}
)

// ephemeralLow is the first port of the kernel's ephemeral range (32768 when
// it cannot be read).
func ephemeralLow() int {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if f := strings.Fields(string(data)); err == nil && len(f) == 2 {
		if low, err := strconv.Atoi(f[0]); err == nil && low > 21000 {
			return low
		}
	}
	return 32768
}

// Proc is a running binary.
type Proc struct {
	Name    string
	LogFile string
	cmd     *exec.Cmd
	done    chan error
}

// Start runs bin with args; its output goes to a log file in dir. The process
// is stopped at test cleanup.
func Start(t testing.TB, name, dir, bin string, args ...string) *Proc {
	t.Helper()
	return StartEnv(t, nil, name, dir, bin, args...)
}

// StartEnv is Start with env added to the test's environment.
func StartEnv(t testing.TB, env []string, name, dir, bin string, args ...string) *Proc {
	t.Helper()
	logFile := filepath.Join(dir, name+".log")
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Proc{Name: name, LogFile: logFile, cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); f.Close() }()
	t.Cleanup(func() { p.Stop() })
	return p
}

// Stop sends SIGTERM and waits (SIGKILL after 10s). It returns how long the
// process took to exit.
func (p *Proc) Stop() time.Duration {
	start := time.Now()
	select {
	case <-p.done:
		p.done <- nil
		return 0
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.done <- nil
	return time.Since(start)
}

// Exited says whether the process has exited, and with what.
func (p *Proc) Exited() (bool, error) {
	select {
	case err := <-p.done:
		p.done <- err
		return true, err
	default:
		return false, nil
	}
}

// Pid is the process's ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Log returns the output so far.
func (p *Proc) Log() []byte {
	b, _ := os.ReadFile(p.LogFile)
	return b
}

// WaitHTTP polls url until it answers 200, the process dies, or timeout.
func (p *Proc) WaitHTTP(ctx context.Context, client *http.Client, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if exited, err := p.Exited(); exited {
			return fmt.Errorf("%s exited (%v):\n%s", p.Name, err, tail(p.Log()))
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s: %s not ready after %v (last: %s):\n%s", p.Name, url, timeout, last, tail(p.Log()))
}

// tail keeps the start (configuration, first errors) and the end of a log.
func tail(b []byte) []byte {
	if len(b) > 8000 {
		b = append(append(b[:3000:3000], []byte("\n[...]\n")...), b[len(b)-5000:]...)
	}
	return bytes.TrimSpace(b)
}

// TLSClient trusts only roots.
func TLSClient(roots *x509.CertPool) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
}
