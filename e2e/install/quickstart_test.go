package install

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/flow"
	"github.com/kube-sts/kube-sts/e2e/internal/node"
	"github.com/kube-sts/kube-sts/e2e/internal/procs"
	"github.com/kube-sts/kube-sts/e2e/internal/quickstart"
	"github.com/kube-sts/kube-sts/e2e/internal/scenario"
	"github.com/kube-sts/kube-sts/e2e/internal/vaultdev"
)

// The README's quick start names these; the test gives them meaning on the
// node (publicName: the issuer's public name; the Pod's app image).
const publicHost = "sts.example.com"

// What the quick start needs that this node is not: a real cluster. Every
// block runs as the README shows it (bash -euo pipefail, one block at a
// time, in the README's order), and these are the only differences, each
// what a real cluster gives by itself:
//
//   - the registry: "<your registry>" is a registry the test serves on
//     loopback over HTTPS with its own CA, which the node's containerd
//     (hosts.toml), `make push` and helm (SSL_CERT_FILE) trust; `make push`
//     builds this machine's platform only (RELEASE_ARCHES);
//   - host networking: the node has no Pod network, Service VIPs or cluster
//     DNS, so `helm install` also takes the node's values after the
//     README's (a helm wrapper in PATH adds them: host network, loopback
//     ports, one replica each) and the README's Pod gets hostNetwork;
//   - the public name: "point sts.example.com at its EXTERNAL-IP" is a
//     loopback CONNECT proxy that answers sts.example.com:443 with the
//     issuer's port, which Vault and curl use (HTTPS_PROXY);
//   - the app's image: the README's busybox, built from Debian's
//     busybox-static (no registry outside);
//   - `kubectl logs` and `kubectl exec … cat` need the kubelet's API, which
//     this node does not serve (it listens on loopback, the Node's address
//     is not): a kubectl wrapper answers those two from the node's disk
//     (the container's log file; the emptyDir's file) and runs the real
//     kubectl for everything else.
type quickStart struct {
	s         *scenario.Stack
	work, bin string
	env       []string
	registry  *loopbackRegistry
	public    *publicName
	// Timing of each block, for the log.
	took []string
}

// kubectlShimEnv, set in a process's environment, makes this test binary
// act as the quick start's kubectl (see TestMain): its value is the real
// kubectl.
const kubectlShimEnv = "KUBE_STS_QUICKSTART_KUBECTL"

// quickStartImages are the images the README's Pod names, built from the
// node's busybox (the README's app is a busybox shell loop).
func quickStartImages(t *testing.T, blocks []quickstart.Block) []node.Image {
	t.Helper()
	pod := readmePod(t, blocks)
	// Before the node starts (which installs the packages it needs), so
	// here too: busybox-static is one of them.
	if err := node.EnsurePackages(); err != nil {
		t.Fatal(err)
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	var images []node.Image
	for _, c := range pod.Spec.Containers {
		images = append(images, node.Image{Tag: c.Image, Add: []string{busybox + ":/bin/busybox"},
			Symlinks: []string{"/bin/sh:busybox", "/bin/cat:busybox", "/bin/sleep:busybox", "/bin/echo:busybox"}, Entrypoint: "/bin/sh"})
	}
	return images
}

type podSpec struct {
	Spec struct {
		Containers []struct {
			Image string `json:"image"`
		} `json:"containers"`
	} `json:"spec"`
}

func readmePod(t *testing.T, blocks []quickstart.Block) podSpec {
	t.Helper()
	b, err := quickstart.Text(blocks, "pod", "POD")
	if err != nil {
		t.Fatal(err)
	}
	var p podSpec
	if err := yaml.Unmarshal([]byte(b), &p); err != nil || len(p.Spec.Containers) == 0 {
		t.Fatalf("the README's Pod: %v %+v", err, p)
	}
	return p
}

// runQuickStart runs the README's quick start on the node, block by block,
// and checks what the README says each shows; then it uninstalls, so the
// next install starts from an empty namespace.
func runQuickStart(ctx context.Context, t *testing.T, s *scenario.Stack, public *publicName, blocks []quickstart.Block) {
	// Not t.TempDir: the subtest's name has a comma, which helm's --values
	// would split the path at.
	work, err := os.MkdirTemp("", "kube-sts-quickstart-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	q := &quickStart{s: s, work: work, public: public}
	q.bin = filepath.Join(q.work, "bin")
	q.registry = startRegistry(t, s)
	if err := s.Node.TrustRegistry(q.registry.Host, s.CA.CertPEM); err != nil {
		t.Fatal(err)
	}
	q.tools(ctx, t)
	t.Cleanup(func() { q.uninstall(t) })

	start := time.Now()
	for _, b := range blocks {
		q.run(ctx, t, b)
	}
	t.Logf("the quick start took %v on the node: %s", time.Since(start).Round(time.Second), strings.Join(q.took, ", "))

	// The images and the chart came from the registry make push wrote to.
	for _, want := range []string{"kube-sts/sts-issuer", "kube-sts/sts-webhook", "kube-sts/sts-creds-sidecar", "kube-sts/charts/kube-sts"} {
		if !q.registry.Pulled(want) {
			t.Errorf("nothing pulled %s from the registry (pulled: %v)", want, q.registry.PulledNames())
		}
	}
}

// tools writes the PATH the blocks run with: helm and kubectl wrappers
// (see quickStart), vault; and their environment.
func (q *quickStart) tools(ctx context.Context, t *testing.T) {
	t.Helper()
	helm, err := controlplane.Binary(ctx, "helm")
	if err != nil {
		t.Fatal(err)
	}
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatalf("the quick start runs kubectl, which is not on PATH: %v", err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(q.bin, 0o755); err != nil {
		t.Fatal(err)
	}
	nodeValues := filepath.Join(q.work, "node-values.yaml")
	apiHost, apiPort := scenario.HostPort(t, q.s.Env.Config.Host)
	q.public.issuerPort.Store(int64(procs.FreePort(t)))
	issuerPort := q.public.issuerPort.Load()
	webhookPort := procs.FreePort(t)
	values := fmt.Sprintf(`# The test node's plumbing (see e2e/install/quickstart_test.go), after the README's values.
issuer: {replicas: 1, hostNetwork: true, bindAddress: 127.0.0.1, port: %[1]d, metricsPort: %[2]d, url: "https://localhost:%[1]d", topologySpread: false}
webhook: {replicas: 1, hostNetwork: true, bindAddress: 127.0.0.1, port: %[3]d, probePort: %[4]d, metricsPort: %[5]d, url: "https://localhost:%[3]d/mutate", topologySpread: false}
kubernetesAPI: {host: %[6]q, port: %[7]q}
tls: {extraDNSNames: [%[8]s, localhost]}
`, issuerPort, procs.FreePort(t), webhookPort, procs.FreePort(t), procs.FreePort(t), apiHost, apiPort, publicHost)
	if err := os.WriteFile(nodeValues, []byte(values), 0o644); err != nil {
		t.Fatal(err)
	}
	scripts := map[string]string{
		"helm": fmt.Sprintf("#!/bin/sh\n# helm for the quick start on the test node: `helm install` also takes the node's values.\nif [ \"$1\" = install ]; then exec %q \"$@\" --values %q; fi\nexec %q \"$@\"\n", helm, nodeValues, helm),
		// This test binary, in kubectl mode (TestMain).
		"kubectl": fmt.Sprintf("#!/bin/sh\nexec env %s=%q %q \"$@\"\n", kubectlShimEnv, kubectl, self),
	}
	for name, script := range scripts {
		if err := os.WriteFile(filepath.Join(q.bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(q.s.VaultBin, filepath.Join(q.bin, "vault")); err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := q.s.Env.KubeconfigFile(q.work, "quickstart-admin", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	// The machine's CAs and the registry's, for make push (which may fetch
	// modules too) and helm.
	system, _ := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	bundle := filepath.Join(q.work, "ca-bundle.pem")
	if err := os.WriteFile(bundle, append(append(system, '\n'), q.s.CA.CertPEM...), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		// A newcomer's shell has no make of its own around it, no go test
		// flags, and none of the lanes' settings.
		case "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "GOFLAGS", "PATH", "KUBECONFIG", "VAULT_ADDR", "VAULT_TOKEN",
			"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "SSL_CERT_FILE", "REGISTRY", "RELEASE_ARCHES":
			continue
		}
		q.env = append(q.env, kv)
	}
	q.env = append(q.env,
		"PATH="+q.bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"KUBECONFIG="+kubeconfig,
		"VAULT_ADDR="+q.s.VaultAddr, "VAULT_TOKEN="+vaultdev.RootToken,
		"SSL_CERT_FILE="+bundle,
		"RELEASE_ARCHES="+runtime.GOARCH,
		// What the push block exports, for the blocks after it (the README's
		// blocks share one shell; here each runs in its own).
		"REGISTRY="+q.registry.Host,
		"HELM_CONFIG_HOME="+filepath.Join(q.work, "helm", "config"),
		"HELM_CACHE_HOME="+filepath.Join(q.work, "helm", "cache"),
		"HELM_DATA_HOME="+filepath.Join(q.work, "helm", "data"),
		// For the kubectl wrapper.
		"KUBE_STS_NODE_POD_LOGS="+q.s.Node.PodLogsDir, "KUBE_STS_NODE_KUBELET_DIR="+q.s.Node.KubeletDir,
	)
}

// run runs one block and checks what the README says it shows.
func (q *quickStart) run(ctx context.Context, t *testing.T, b quickstart.Block) {
	t.Helper()
	script, dir, env := b.Script, q.work, q.env
	switch b.Name {
	case "push":
		// "From a clone".
		dir = procs.RepoRoot()
		script = replaceOnce(t, script, "<your registry>", q.registry.Host)
	case "expose":
		env = append(env, "HTTPS_PROXY="+q.public.URL, "https_proxy="+q.public.URL)
	case "pod":
		script = replaceOnce(t, script, "\nspec:\n", "\nspec:\n  hostNetwork: true # the test node has no Pod network\n")
	}
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir, cmd.Env = dir, env
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	q.took = append(q.took, fmt.Sprintf("%s %v", b.Name, took.Round(100*time.Millisecond)))
	t.Logf("quick start %q (%v):\n%s", b.Name, took.Round(100*time.Millisecond), flow.Tail(string(out), 3000))
	if err != nil {
		t.Fatalf("the quick start's %q block failed: %v\n%s\n%s", b.Name, err, script, scenario.PodReport(ctx, q.s, scenario.ReleaseNS))
	}
	switch b.Name {
	case "expose":
		// curl shows the discovery document of the public issuer.
		if want := `"issuer":"https://` + publicHost + `/`; !strings.Contains(string(out), want) {
			t.Errorf("the discovery document curl shows has no %s", want)
		}
		if q.public.Tunnels.Load() == 0 {
			t.Error("curl did not go through the public name")
		}
	case "check":
		q.checkOutput(t, b.Script, string(out))
	}
}

// checkOutput compares what the check block printed with what its comments
// say it prints: the app's log line, and the token's claims.
func (q *quickStart) checkOutput(t *testing.T, script, out string) {
	t.Helper()
	logLine := regexp.MustCompile(`(?m)^kubectl .* logs .*#\s*(\S.*)$`).FindStringSubmatch(script)
	claimsLine := regexp.MustCompile(`(?m)^#\s+(\{.*\})\s*$`).FindStringSubmatch(script)
	if logLine == nil || claimsLine == nil {
		t.Fatalf("the check block no longer says what it prints (a `logs … # <line>` and a `#   {claims}` comment):\n%s", script)
	}
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(strings.TrimSpace(logLine[1])) + `$`).MatchString(out) {
		t.Errorf("the app did not print %q:\n%s", logLine[1], out)
	}
	// The README's claims: "key": "value" pairs (its "..." stands for the rest).
	want := map[string]string{}
	for _, m := range regexp.MustCompile(`"([a-z_]+)":\s*"([^"]*)"`).FindAllStringSubmatch(claimsLine[1], -1) {
		want[m[1]] = m[2]
	}
	start, end := strings.Index(out, "{"), strings.LastIndex(out, "}")
	var got map[string]any
	if start < 0 || end < start || json.Unmarshal([]byte(out[start:end+1]), &got) != nil {
		t.Fatalf("no claims in the check's output:\n%s", out)
	}
	if len(want) < 4 {
		t.Fatalf("the README shows %d claims; want at least aud, cluster, namespace and sub", len(want))
	}
	for k, v := range want {
		if fmt.Sprint(got[k]) != v {
			t.Errorf("claim %s: the README says %q, the token has %v", k, v, got[k])
		}
	}
}

// uninstall removes the quick start's release and namespace, as the next
// install in this test wants an empty one.
func (q *quickStart) uninstall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", "helm uninstall kube-sts --namespace kube-sts --wait --ignore-not-found && kubectl delete namespace kube-sts demo --wait --timeout=2m --ignore-not-found")
	cmd.Dir, cmd.Env = q.work, q.env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("removing the quick start: %v\n%s", err, out)
	}
	c := q.s.Env.Clientset.CoreV1().Namespaces()
	for _, ns := range []string{scenario.ReleaseNS, "demo"} {
		if _, err := c.Get(ctx, ns, metav1.GetOptions{}); err == nil {
			t.Errorf("namespace %s is still there after the quick start's removal", ns)
		}
	}
}

func replaceOnce(t *testing.T, s, old, new string) string {
	t.Helper()
	if strings.Count(s, old) != 1 {
		t.Fatalf("the quick start block changed: want one %q in:\n%s", old, s)
	}
	return strings.Replace(s, old, new, 1)
}

// loopbackRegistry is an OCI registry on loopback over HTTPS (the test's CA),
// which records the manifests it served.
type loopbackRegistry struct {
	Host   string
	mu     sync.Mutex
	pulled map[string]bool
}

var manifestGet = regexp.MustCompile(`^/v2/(.+)/manifests/[^/]+$`)

func startRegistry(t *testing.T, s *scenario.Stack) *loopbackRegistry {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "registry-tls")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := s.CA.Serving(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	r := &loopbackRegistry{pulled: map[string]bool{}}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if m := manifestGet.FindStringSubmatch(req.URL.Path); m != nil && req.Method == http.MethodGet {
			r.mu.Lock()
			r.pulled[m[1]] = true
			r.mu.Unlock()
		}
		reg.ServeHTTP(w, req)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	r.Host = strings.TrimPrefix(srv.URL, "https://")
	return r
}

// Pulled says whether a manifest of repository name was fetched.
func (r *loopbackRegistry) Pulled(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pulled[name]
}

func (r *loopbackRegistry) PulledNames() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for n := range r.pulled {
		out = append(out, n)
	}
	return out
}

// publicName is what a load balancer and a DNS record give the issuer: its
// public name. Here a CONNECT proxy on loopback that tunnels only
// sts.example.com:443, to the issuer's port on the node.
type publicName struct {
	URL        string
	issuerPort atomic.Int64
	// Tunnels counts the connections it opened.
	Tunnels atomic.Int64
}

func startPublicName(t *testing.T) *publicName {
	t.Helper()
	p := &publicName{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		port := p.issuerPort.Load()
		if r.Method != http.MethodConnect || r.Host != publicHost+":443" || port == 0 {
			http.Error(w, "this proxy only reaches "+publicHost+":443", http.StatusForbidden)
			return
		}
		backend, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		client, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			backend.Close()
			return
		}
		p.Tunnels.Add(1)
		_, _ = rw.WriteString("HTTP/1.1 200 Connection established\r\n\r\n")
		_ = rw.Flush()
		go func() { _, _ = io.Copy(backend, rw); backend.Close() }()
		_, _ = io.Copy(client, backend)
		client.Close()
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// VaultEnv makes Vault reach the public name through the proxy.
func (p *publicName) VaultEnv() []string {
	return []string{"HTTPS_PROXY=" + p.URL, "NO_PROXY=127.0.0.1,localhost"}
}
