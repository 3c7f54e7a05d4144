// Package controlplane runs a real kube-apiserver and etcd for tests, the
// pinned versions that e2e/hack/toolchain.sh builds, through controller-runtime's
// envtest. A test package starts one control plane in TestMain and every test
// in it shares that:
//
//	var cp = controlplane.New()
//
//	func TestMain(m *testing.M) { os.Exit(cp.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		env := cp.Require(t) // skips, or fails when CI is set, if it could not start
//		...
//	}
package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Env is a running control plane.
type Env struct {
	// Config reaches the API server as an administrator.
	Config *rest.Config
	// Client is a controller-runtime client for Config.
	Client client.Client
	// Clientset is a client-go clientset for Config.
	Clientset kubernetes.Interface
	// LogDir holds the API server's and etcd's output.
	LogDir string

	env       *envtest.Environment
	restarted []*exec.Cmd // API servers started again by RestartAPIServer
}

// Harness starts a control plane once per test package and stops it when the
// package's tests are done, however they ended.
type Harness struct {
	// ExtraAPIServerArgs are set on the API server in addition to envtest's
	// own; a nil value removes one of envtest's flags.
	ExtraAPIServerArgs map[string][]string

	mu          sync.Mutex
	env         *Env
	startErr    error
	stopped     bool
	onInterrupt []func()
}

// OnInterrupt registers f to run when the test binary gets SIGINT/SIGTERM,
// before the control plane stops: test cleanups do not run then, and things
// outside this process (a node's containers) must still go.
func (h *Harness) OnInterrupt(f func()) {
	h.mu.Lock()
	h.onInterrupt = append(h.onInterrupt, f)
	h.mu.Unlock()
}

// New returns a harness with envtest's defaults.
func New() *Harness { return &Harness{} }

// InCI reports whether a missing control plane is a failure rather than a
// reason to skip: when CI is set, or KUBE_STS_REQUIRE_CONTROLPLANE (which
// `make test` sets, so the README's test command never skips silently).
func InCI() bool {
	for _, k := range []string{"CI", "KUBE_STS_REQUIRE_CONTROLPLANE"} {
		if v := os.Getenv(k); v != "" && v != "0" && v != "false" {
			return true
		}
	}
	return false
}

// Main starts the control plane, runs the tests and stops it. It returns the
// exit code for os.Exit. When the control plane cannot start, tests that call
// Require skip, or fail when CI is set.
func (h *Harness) Main(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	env, err := Start(ctx, h.ExtraAPIServerArgs)
	cancel()
	h.mu.Lock()
	h.env, h.startErr = env, err
	h.mu.Unlock()
	if err != nil {
		fmt.Fprintf(os.Stderr, "controlplane: could not start kube-apiserver and etcd: %v\n", err)
	}

	// Ctrl-C or a kill of the test binary must not leave the API server and
	// etcd running: they run in their own process groups and would not get the
	// signal.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s, ok := <-sigs
		if !ok {
			return
		}
		fmt.Fprintf(os.Stderr, "controlplane: %v received, stopping everything\n", s)
		h.mu.Lock()
		fs := h.onInterrupt
		h.mu.Unlock()
		for i := len(fs) - 1; i >= 0; i-- {
			fs[i]()
		}
		h.stop()
		os.Exit(130)
	}()

	code := m.Run()
	signal.Stop(sigs)
	close(sigs)
	if err := h.stop(); err != nil {
		fmt.Fprintf(os.Stderr, "controlplane: stop: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	if env != nil {
		env.TidyLogs(code != 0)
	}
	if err != nil && InCI() && code == 0 {
		// No test asked for the control plane, but CI expected one.
		code = 1
	}
	return code
}

// Require returns the running control plane. When it could not be started the
// test is skipped, or failed when CI is set, with the reason.
func (h *Harness) Require(t testing.TB) *Env {
	t.Helper()
	h.mu.Lock()
	env, err := h.env, h.startErr
	h.mu.Unlock()
	switch {
	case env != nil:
		return env
	case err == nil:
		err = errors.New("Harness.Main was not called from TestMain")
	}
	if InCI() {
		t.Fatalf("control plane unavailable (CI is set, so this fails instead of skipping): %v", err)
	}
	t.Skipf("control plane unavailable: %v (run `make toolchain` or `make test`; with CI set this fails)", err)
	return nil
}

func (h *Harness) stop() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || h.env == nil {
		h.stopped = true
		return nil
	}
	h.stopped = true
	return h.env.Stop()
}

// Start builds (when not cached) and starts kube-apiserver and etcd, and waits
// until the API server is ready.
func Start(ctx context.Context, extraArgs map[string][]string) (*Env, error) {
	assets, err := Assets(ctx)
	if err != nil {
		return nil, err
	}
	reapStale()

	logDir, err := os.MkdirTemp("", "kube-sts-controlplane-")
	if err != nil {
		return nil, fmt.Errorf("log dir: %w", err)
	}
	apiLog, err := os.Create(filepath.Join(logDir, "kube-apiserver.log"))
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	etcdLog, err := os.Create(filepath.Join(logDir, "etcd.log"))
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}

	te := &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	api := te.ControlPlane.GetAPIServer()
	api.Out, api.Err = apiLog, apiLog
	args := api.Configure()
	for k, v := range extraArgs {
		if v == nil {
			args.Disable(k) // e.g. envtest's --disable-admission-plugins
			continue
		}
		args.Set(k, v...)
	}
	te.ControlPlane.Etcd = &envtest.Etcd{Out: etcdLog, Err: etcdLog, DataDir: memoryDataDir()}

	cfg, err := te.Start()
	if err != nil {
		_ = te.Stop()
		return nil, fmt.Errorf("start envtest (logs in %s): %w", logDir, err)
	}
	recordChildren()

	// Loopback only, and generous limits: tests create objects quickly.
	cfg.QPS, cfg.Burst = 200, 400
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		_ = te.Stop()
		return nil, fmt.Errorf("clientset: %w", err)
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		_ = te.Stop()
		return nil, fmt.Errorf("client: %w", err)
	}
	return &Env{Config: cfg, Client: c, Clientset: cs, LogDir: logDir, env: te}, nil
}

// AddUser provisions a client certificate user (authenticated as name, in
// groups; no permissions until RBAC grants them) and returns its kubeconfig.
// Tests run our binaries as such users, so their RBAC is tested too.
func (e *Env) AddUser(name string, groups ...string) ([]byte, error) {
	u, err := e.env.ControlPlane.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		return nil, err
	}
	return u.KubeConfig()
}

// KubeconfigFile provisions a user like AddUser and writes its kubeconfig
// into dir, returning the file's path.
func (e *Env) KubeconfigFile(dir, name string, groups ...string) (string, error) {
	kc, err := e.AddUser(name, groups...)
	if err != nil {
		return "", err
	}
	file := filepath.Join(dir, "kubeconfig-"+strings.ReplaceAll(name, ":", "_"))
	return file, os.WriteFile(file, kc, 0o600)
}

// StopAPIServer stops only the API server (etcd keeps running), to test what
// clients do when it is gone. The package's later tests cannot use it.
func (e *Env) StopAPIServer() error {
	return e.env.ControlPlane.APIServer.Stop()
}

// Stop stops the API server and etcd and removes their data.
func (e *Env) Stop() error {
	e.stopRestarted()
	err := e.env.Stop()
	forgetChildren()
	if dir := e.env.ControlPlane.Etcd.DataDir; dir != "" {
		_ = os.RemoveAll(dir)
	}
	return err
}

// TidyLogs removes LogDir after a pass; after a failure it keeps it, as the
// logs are what the failure is read from, and says where it is. Call it after
// Stop.
func (e *Env) TidyLogs(failed bool) {
	if failed {
		fmt.Fprintf(os.Stderr, "controlplane: logs kept in %s\n", e.LogDir)
		return
	}
	_ = os.RemoveAll(e.LogDir)
}

// shmDir holds etcd's data when it exists: in memory, a test's etcd never
// waits on the disk. Its fsyncs would otherwise stall for seconds whenever
// something else writes much (a build, images imported on the node, another
// suite's etcd), and every API call with them: the suites run beside each
// other and beside the unit tests in `make test`, and time what they do.
// A test control plane's data is thrown away at its end anyway.
const shmDir = "/dev/shm"

// memoryDataDir makes etcd's data directory under shmDir, named after this
// process so that reapStale can remove one a crashed test left; "" (envtest
// then makes one on disk) when shmDir is not there.
func memoryDataDir() string {
	if fi, err := os.Stat(shmDir); err != nil || !fi.IsDir() {
		return ""
	}
	dir, err := os.MkdirTemp(shmDir, fmt.Sprintf("kube-sts-etcd-%d-", os.Getpid()))
	if err != nil {
		return ""
	}
	return dir
}

// Assets returns the directory with kube-apiserver and etcd: $KUBEBUILDER_ASSETS
// when set, otherwise what e2e/hack/toolchain.sh prints (it builds them once
// and then answers from its cache at once).
func Assets(ctx context.Context) (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		for _, b := range []string{"kube-apiserver", "etcd"} {
			if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
				return "", fmt.Errorf("KUBEBUILDER_ASSETS=%s has no %s: %w", dir, b, err)
			}
		}
		return dir, nil
	}
	script := filepath.Join(moduleRoot(), "hack", "toolchain.sh")
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script, "--print-dir", "all")
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w: %s", script, err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// toolBuildTimeout bounds Binary: the longest pinned build (kube-apiserver)
// takes about 10 minutes on 2 cores.
const toolBuildTimeout = 30 * time.Minute

// Binary returns the path of a pinned third-party binary (kubelet, vault,
// vault-k8s, ...), building it with e2e/hack/toolchain.sh when not cached.
// The build, or the wait for another process building into the same cache
// (make test builds weed beside the suites), is not what the caller's
// deadline times: it has a bound of its own, toolBuildTimeout.
func Binary(ctx context.Context, name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), toolBuildTimeout)
	defer cancel()
	script := filepath.Join(moduleRoot(), "hack", "toolchain.sh")
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script, "--print-bin="+name)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s --print-bin=%s: %w: %s", script, name, err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// moduleRoot is the e2e module's folder, found from this file's path
// (e2e/internal/controlplane) so tests work from any package directory.
func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// The API server and etcd run in their own process groups, so a test binary
// that dies by panic or timeout leaves them behind. Their PIDs are recorded in
// a file named after the test binary's PID; the next Start kills what a dead
// test binary left.

func pidDir() string {
	base := os.Getenv("KUBE_STS_CACHE")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".cache", "kube-sts")
	}
	return filepath.Join(base, "run")
}

func pidFile(owner int) string {
	return filepath.Join(pidDir(), "controlplane-"+strconv.Itoa(owner)+".pids")
}

// recordChildren writes the PIDs of this process's children to its pid file.
func recordChildren() {
	me := os.Getpid()
	var pids []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid(pid) == me {
			pids = append(pids, strconv.Itoa(pid))
		}
	}
	if len(pids) == 0 {
		return
	}
	_ = os.MkdirAll(pidDir(), 0o755)
	_ = os.WriteFile(pidFile(me), []byte(strings.Join(pids, "\n")+"\n"), 0o644)
}

func forgetChildren() { _ = os.Remove(pidFile(os.Getpid())) }

// reapStale kills control planes whose test binary is gone, and removes
// the in-memory etcd data they left.
func reapStale() {
	dirs, _ := filepath.Glob(filepath.Join(shmDir, "kube-sts-etcd-*"))
	for _, d := range dirs {
		pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(d), "kube-sts-etcd-"), "-")
		if owner, err := strconv.Atoi(pid); err == nil && !alive(owner) {
			_ = os.RemoveAll(d)
		}
	}
	files, _ := filepath.Glob(filepath.Join(pidDir(), "controlplane-*.pids"))
	for _, f := range files {
		owner, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "controlplane-"), ".pids"))
		if err != nil || alive(owner) {
			continue
		}
		data, _ := os.ReadFile(f)
		for _, line := range strings.Fields(string(data)) {
			pid, err := strconv.Atoi(line)
			// Only kill what is still ours: an orphan (re-parented) API server or etcd.
			if err == nil && pid > 1 && isControlPlaneBinary(pid) {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		_ = os.Remove(f)
	}
}

func alive(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

func ppid(pid int) int {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	// The command name may contain spaces and parentheses; fields start after the last ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return -1
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

func isControlPlaneBinary(pid int) bool {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		return false
	}
	base := filepath.Base(exe)
	switch base {
	case "kube-apiserver", "etcd", "kube-scheduler", "kube-controller-manager":
		return true
	}
	return false
}
