// Package node runs a real single node for the end-to-end suite and the demo:
// containerd (Debian's package) and the pinned kubelet, registered with the
// harness's API server, everything on loopback. Pods use hostNetwork; tests
// read container logs and files from the kubelet's directories.
//
// Stop tears everything down (kubelet, containers, containerd, mounts,
// cgroups, state), also after a failed test.
package node

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/procs"
)

// Name is the node's name.
const Name = "kube-sts-node"

// PauseImage is the sandbox image the harness builds and imports.
const PauseImage = "local/pause:e2e"

// Node is a running containerd + kubelet.
type Node struct {
	Dir        string // all state lives below it
	Socket     string // containerd's socket
	PodLogsDir string
	KubeletDir string

	containerd *logged
	kubelet    *logged
	env        *controlplane.Env
}

// Options of Start.
type Options struct {
	// Kubelet is the kubelet binary.
	Kubelet string
	// Dir is the state directory; a new one under /var/tmp when empty.
	Dir string
}

// CNIBinDir is where Debian's containernetworking-plugins puts the plugins.
const CNIBinDir = "/usr/lib/cni"

// cniConfig is the node's one network: loopback only. Every Pod here runs on
// the host's network; the configuration exists so the runtime reports its
// network ready and the kubelet the Node Ready, which the scheduler needs.
const cniConfig = `{"cniVersion": "1.0.0", "name": "kube-sts-loopback", "plugins": [{"type": "loopback"}]}`

// EnsurePackages installs containerd, runc, the CNI plugins and busybox from
// Debian's packages when missing (idempotent; needs root, as the kubelet does).
func EnsurePackages() error {
	missing := []string{}
	for bin, pkg := range map[string]string{"containerd": "containerd", "runc": "runc", "ctr": "containerd", "busybox": "busybox-static"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, pkg)
		}
	}
	if _, err := os.Stat(filepath.Join(CNIBinDir, "loopback")); err != nil {
		missing = append(missing, "containernetworking-plugins")
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Strings(missing)
	if os.Geteuid() != 0 {
		return fmt.Errorf("%v missing and not root: install them with apt-get", missing)
	}
	for _, args := range [][]string{{"update", "-qq"}, append([]string{"install", "-y", "-qq"}, missing...)} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// Start starts containerd and the kubelet and waits until the Node is registered.
func Start(ctx context.Context, env *controlplane.Env, o Options) (n *Node, err error) {
	if err := EnsurePackages(); err != nil {
		return nil, err
	}
	dir := o.Dir
	if dir == "" {
		// Not under /tmp: some of these VMs mount /tmp noexec or small.
		if dir, err = os.MkdirTemp("/var/tmp", "kube-sts-node-"); err != nil {
			return nil, err
		}
	}
	n = &Node{Dir: dir, Socket: filepath.Join(dir, "containerd.sock"), PodLogsDir: filepath.Join(dir, "pod-logs"), KubeletDir: filepath.Join(dir, "kubelet"), env: env}
	defer func() {
		if err != nil {
			n.Stop()
		}
	}()
	for _, d := range []string{n.PodLogsDir, n.KubeletDir, filepath.Join(dir, "cni", "conf")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "cni", "conf", "10-loopback.conflist"), []byte(cniConfig), 0o644); err != nil {
		return nil, err
	}
	if err := n.startContainerd(ctx); err != nil {
		return nil, err
	}
	if err := n.startKubelet(ctx, o.Kubelet); err != nil {
		return nil, err
	}
	return n, nil
}

func (n *Node) startContainerd(ctx context.Context) error {
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[4]q
  # These VMs lack CAP_SYS_RESOURCE: without it every sandbox fails to start.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[5]q
    conf_dir = %[6]q
  # Per-registry hosts.toml files (TrustRegistry), read at every pull.
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %[7]q
`, filepath.Join(n.Dir, "containerd", "root"), filepath.Join(n.Dir, "containerd", "state"), n.Socket, PauseImage,
		CNIBinDir, filepath.Join(n.Dir, "cni", "conf"), n.registryDir())
	cfgFile := filepath.Join(n.Dir, "containerd.toml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return err
	}
	cmd, err := startLogged(filepath.Join(n.Dir, "containerd.log"), "containerd", "--config", cfgFile)
	if err != nil {
		return err
	}
	n.containerd = cmd
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if err := exec.CommandContext(ctx, "ctr", "-a", n.Socket, "version").Run(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("containerd did not come up; see %s", filepath.Join(n.Dir, "containerd.log"))
}

func (n *Node) startKubelet(ctx context.Context, bin string) error {
	kcFile, err := n.env.KubeconfigFile(n.Dir, "system:node:"+Name, "system:nodes", "system:masters")
	if err != nil {
		return err
	}
	healthzPort, err := procs.LoopbackPort()
	if err != nil {
		return fmt.Errorf("a free port for the kubelet's healthz: %w", err)
	}
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
healthzBindAddress: 127.0.0.1
healthzPort: 0
port: %[1]d
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
# These VMs mount cgroup v1.
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%[2]s
podLogsDir: %[3]s
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", nodefs.inodesFree: "1%%", imagefs.available: "1%%"}
evictionPressureTransitionPeriod: 1s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
syncFrequency: 5s
fileCheckFrequency: 5s
nodeStatusUpdateFrequency: 5s
resolvConf: ""
`, healthzPort, n.Socket, n.PodLogsDir)
	cfgFile := filepath.Join(n.Dir, "kubelet.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return err
	}
	args := []string{
		"--config", cfgFile,
		"--kubeconfig", kcFile,
		"--root-dir", n.KubeletDir,
		"--cert-dir", filepath.Join(n.Dir, "kubelet-pki"),
		"--hostname-override", Name,
		"--v", "2",
	}
	// The kubelet refuses a loopback node IP, and Pods that read
	// status.hostIP (Vault's agent does) need one. The address is only a
	// label here: the kubelet listens on 127.0.0.1 and nothing connects to it.
	if ip := hostIP(); ip != "" {
		args = append(args, "--node-ip", ip)
	}
	cmd, err := startLogged(filepath.Join(n.Dir, "kubelet.log"), bin, args...)
	if err != nil {
		return err
	}
	n.kubelet = cmd
	// Registered and Ready (runtime and network up), so the scheduler may
	// place Pods here too.
	deadline := time.Now().Add(90 * time.Second)
	status := "not registered"
	for time.Now().Before(deadline) {
		node, err := n.env.Clientset.CoreV1().Nodes().Get(ctx, Name, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		if err == nil {
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady {
					if c.Status == corev1.ConditionTrue {
						return nil
					}
					status = "not Ready: " + c.Message
				}
			}
		}
		if n.kubelet.exited() {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("the node is %s; see %s", status, filepath.Join(n.Dir, "kubelet.log"))
}

// PrepareNamespace creates what the controller-manager would, which this
// harness does not run: the namespace, its default ServiceAccount and the
// kube-root-ca.crt ConfigMap that ServiceAccount token volumes project.
func PrepareNamespace(ctx context.Context, env *controlplane.Env, ns string) error {
	c := env.Clientset.CoreV1()
	if _, err := c.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if _, err := c.ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt"}, Data: map[string]string{"ca.crt": string(env.Config.CAData)}}
	if _, err := c.ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// ImportImage loads a docker-archive tarball into containerd's k8s.io namespace.
func (n *Node) ImportImage(ctx context.Context, tarball string) error {
	out, err := exec.CommandContext(ctx, "ctr", "-a", n.Socket, "-n", "k8s.io", "images", "import", tarball).CombinedOutput()
	if err != nil {
		return fmt.Errorf("import %s: %v: %s", tarball, err, out)
	}
	return nil
}

func (n *Node) registryDir() string { return filepath.Join(n.Dir, "certs.d") }

// TrustRegistry makes the node pull from host ("127.0.0.1:5000") over HTTPS
// trusting caPEM, as a cluster's nodes trust a private registry's CA. (Left
// alone, containerd speaks plain HTTP to a loopback registry.)
func (n *Node) TrustRegistry(host string, caPEM []byte) error {
	dir := filepath.Join(n.registryDir(), host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, caPEM, 0o644); err != nil {
		return err
	}
	hosts := fmt.Sprintf("server = %[1]q\n\n[host.%[1]q]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = %[2]q\n", "https://"+host, ca)
	return os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(hosts), 0o644)
}

// ContainerLog returns what a container of a Pod wrote, read from the
// kubelet's log directory (no connection to the kubelet needed).
func (n *Node) ContainerLog(pod *corev1.Pod, container string) (string, error) {
	dir := filepath.Join(n.PodLogsDir, pod.Namespace+"_"+pod.Name+"_"+string(pod.UID), container)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var all bytes.Buffer
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return "", err
		}
		all.Write(data)
	}
	return all.String(), nil
}

// ReadPodFile reads a file of a Pod's volume from the kubelet's directory,
// e.g. ("kubernetes.io~projected", "sts-subject-token", "token").
func (n *Node) ReadPodFile(pod *corev1.Pod, plugin, volume, file string) (string, error) {
	data, err := os.ReadFile(filepath.Join(n.KubeletDir, "pods", string(pod.UID), "volumes", plugin, volume, file))
	return strings.TrimSpace(string(data)), err
}

// PodFile is ReadPodFile that fails the test on error.
func (n *Node) PodFile(t interface {
	Helper()
	Fatalf(string, ...any)
}, pod *corev1.Pod, plugin, volume, file string) string {
	t.Helper()
	v, err := n.ReadPodFile(pod, plugin, volume, file)
	if err != nil {
		t.Fatalf("read %s/%s of pod %s: %v", volume, file, pod.Name, err)
	}
	return v
}

// Stop tears everything down. It is safe to call more than once.
func (n *Node) Stop() {
	if n == nil {
		return
	}
	stopCmd(n.kubelet)
	n.kubelet = nil
	if n.containerd != nil && !n.containerd.exited() {
		// Kill every task (the Pods' processes), then containerd itself.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, _ := exec.CommandContext(ctx, "ctr", "-a", n.Socket, "-n", "k8s.io", "tasks", "ls", "-q").Output()
		for _, id := range strings.Fields(string(out)) {
			_ = exec.CommandContext(ctx, "ctr", "-a", n.Socket, "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", id).Run()
		}
		time.Sleep(500 * time.Millisecond)
		for _, id := range strings.Fields(string(out)) {
			_ = exec.CommandContext(ctx, "ctr", "-a", n.Socket, "-n", "k8s.io", "tasks", "delete", "-f", id).Run()
		}
		cancel()
		stopCmd(n.containerd)
	}
	n.containerd = nil
	// Shims outlive containerd on purpose; ours go too.
	killMatching(n.Dir)
	unmountBelow(n.Dir)
	removeCgroups()
	if os.Getenv("KUBE_STS_KEEP_NODE_LOGS") != "" {
		// Keep the logs (containerd, kubelet, pods) for a post-mortem.
		fmt.Fprintf(os.Stderr, "node: logs kept in %s\n", n.Dir)
		_ = os.RemoveAll(filepath.Join(n.Dir, "containerd"))
		_ = os.RemoveAll(n.KubeletDir)
		return
	}
	_ = os.RemoveAll(n.Dir)
}

// logged is a process whose output goes to a file; done closes when it has
// exited (its Wait returned: reading cmd.ProcessState before would race).
type logged struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (l *logged) exited() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

func startLogged(logFile, bin string, args ...string) (*logged, error) {
	f, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	l := &logged{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(l.done) }()
	return l, nil
}

func stopCmd(l *logged) {
	if l == nil {
		return
	}
	cmd := l.cmd
	_ = cmd.Process.Signal(syscall.SIGTERM)
	for i := 0; i < 100; i++ {
		if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Process.Kill()
}

// killMatching kills processes whose command line mentions dir (shims).
func killMatching(dir string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.Contains(cmdline, []byte(dir)) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// unmountBelow lazily unmounts everything mounted under dir, deepest first.
func unmountBelow(dir string) {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasPrefix(f[1], dir) {
			points = append(points, f[1])
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
	}
}

// removeCgroups removes the kubelet's cgroups (kubepods and its children) in
// every v1 hierarchy, deepest first; the processes in them are gone by now.
func removeCgroups() {
	hier, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods*")
	for _, root := range hier {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			_ = os.Remove(d)
		}
	}
}

// hostIP is the machine's first global unicast IPv4 address, or "".
func hostIP() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
			return ipn.IP.String()
		}
	}
	return ""
}
