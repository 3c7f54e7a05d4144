// Package scenario is the reference scenario on a real node: our webhook and
// issuer as host processes, our sidecar in the Pod from its image, a real
// Vault dev server configured as docs/relying-parties.md says, and Vault's agent injector
// registered as a second mutating webhook. The test suite and `make demo`
// share it.
package scenario

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/flow"
	"github.com/kube-sts/kube-sts/e2e/internal/kube"
	"github.com/kube-sts/kube-sts/e2e/internal/node"
	"github.com/kube-sts/kube-sts/e2e/internal/procs"
	"github.com/kube-sts/kube-sts/e2e/internal/stsissuer"
	"github.com/kube-sts/kube-sts/e2e/internal/stswebhook"
	"github.com/kube-sts/kube-sts/e2e/internal/testca"
	"github.com/kube-sts/kube-sts/e2e/internal/vaultdev"
)

// Names of the scenario, after the reference write-up (see package flow).
const (
	Cluster        = flow.Cluster
	Namespace      = flow.Namespace
	ServiceAccount = flow.ServiceAccount
	Audience       = flow.Audience
	Role           = flow.Role
	Password       = flow.Password
	VaultK8sImage  = "local/vault-k8s:e2e"
	// AWSInjector selects Pods for the aws endpoint, whose tokens carry
	// AWSAudience (what AWS IAM OIDC providers are usually told to expect).
	AWSInjector = "aws-role"
	AWSAudience = "sts.amazonaws.com"
	// RefusedNamespace is denied by the vault endpoint.
	RefusedNamespace = "refused-team"
)

// Stack is everything running.
type Stack struct {
	Env       *controlplane.Env
	Node      *node.Node
	CA        *testca.CA
	Issuer    *stsissuer.Issuer
	IssuerURL string
	Webhook   *stswebhook.Webhook
	Vault     *procs.Proc
	VaultAddr string
	VaultBin  string
	Accessor  string
	Work      string
	// Say narrates progress (the demo prints it, tests log it).
	Say func(format string, args ...any)
}

// Up starts the whole stack; everything stops at t's cleanup, or on Ctrl-C
// through h.
func Up(t testing.TB, h *controlplane.Harness, env *controlplane.Env, say func(string, ...any)) *Stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s := Base(t, h, env, say, "sts-creds-sidecar")

	say("starting sts-issuer")
	s.Issuer = stsissuer.Start(t, env, s.CA, func(base string) string {
		return fmt.Sprintf(`
cluster: %s
jwksMaxAge: 5s
endpoints:
- name: vault
  issuer: %s/vault
  audience: %s
  ttl: 1m
  keys:
    # Rotates several times during the run: Vault must not notice.
    managed: {secret: vault-sts-keys, rotateEvery: 40s, publishAhead: 15s, resync: 2s}
  allow:
  - {namespace: "*"}
  # A namespace the issuer refuses: its Pods show why in kubectl describe.
  deny:
  - {namespace: %s}
# A cloud's relying party: the AWS SDK's web identity provider (aws_test.go).
- name: aws
  issuer: %s/aws
  audience: %s
  ttl: 1m
  keys:
    managed: {secret: aws-sts-keys}
  allow:
  - {namespace: "*"}
`, Cluster, base, Audience, RefusedNamespace, base, AWSAudience)
	})
	s.IssuerURL = s.Issuer.Base + "/vault"

	say("configuring Vault's JWT auth to trust %s", s.IssuerURL)
	s.configureVault(t)

	say("starting sts-webhook and registering it")
	caPEM := strings.ReplaceAll(strings.TrimSpace(string(s.CA.CertPEM)), "\n", "\n    ")
	s.Webhook = stswebhook.Start(t, env, stswebhook.Options{CA: s.CA, Host: "127.0.0.1", Config: fmt.Sprintf(`
injectors:
- name: vault-sts
  exchangeURL: %s/token
  image: %s
  imagePullPolicy: Never
  tokenPathEnv: VAULT_TOKEN_FILE
  valueEnv: VAULT_TOKEN_ENABLED
  # Off by default; on here so that e2e/scenario proves what it does
  # (kubectl describe pod says why a running Pod lost its token).
  readinessProbe: true
  caPEM: |
    %s
- name: %s
  exchangeURL: %s/aws/token
  image: %s
  imagePullPolicy: Never
  tokenPathEnv: AWS_WEB_IDENTITY_TOKEN_FILE
  valueEnv: AWS_ROLE_ARN
  # Only the containers that call AWS: Vault's agent never sees this token.
  containers: [app, aws]
  caPEM: |
    %s
`, s.IssuerURL, node.SidecarImage, caPEM, AWSInjector, s.Issuer.Base, node.SidecarImage, caPEM)})
	stswebhook.Register(ctx, t, env, "kube-sts", s.Webhook.URL, s.CA.CertPEM, "vault-sts", AWSInjector)

	say("starting Vault's agent injector in the cluster and registering it")
	s.StartVaultInjector(ctx, t)

	for _, ns := range []string{Namespace, "other-team", RefusedNamespace} {
		if err := node.PrepareNamespace(ctx, env, ns); err != nil {
			t.Fatal(err)
		}
		if _, err := env.Clientset.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: ServiceAccount}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// Base starts what every node scenario shares: containerd and the kubelet,
// the images (pause, the test app, Vault's agent and injector, and our
// release images named in release: local/<name>:e2e), and a Vault dev server.
func Base(t testing.TB, h *controlplane.Harness, env *controlplane.Env, say func(string, ...any), release ...string) *Stack {
	t.Helper()
	return BaseWith(t, h, env, say, BaseOptions{Release: release})
}

// BaseOptions change what BaseWith starts.
type BaseOptions struct {
	// Release are our images to build and import (local/<name>:e2e).
	Release []string
	// Images are more images to build and import.
	Images []node.Image
	// VaultEnv is added to the Vault server's environment (e.g. the proxy
	// through which it reaches an issuer's public name).
	VaultEnv []string
}

// BaseWith is Base with options.
func BaseWith(t testing.TB, h *controlplane.Harness, env *controlplane.Env, say func(string, ...any), o BaseOptions) *Stack {
	t.Helper()
	release := o.Release
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	s := &Stack{Env: env, Work: t.TempDir(), Say: say}
	var err error
	if s.CA, err = testca.New("kube-sts demo CA"); err != nil {
		t.Fatal(err)
	}

	say("building kubelet, Vault and Vault's injector (cached after the first run)")
	kubelet := must(t)(controlplane.Binary(ctx, "kubelet"))
	s.VaultBin = must(t)(controlplane.Binary(ctx, "vault"))
	vaultK8s := must(t)(controlplane.Binary(ctx, "vault-k8s"))

	say("starting containerd and the kubelet")
	if s.Node, err = node.Start(ctx, env, node.Options{Kubelet: kubelet}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Node.Stop)
	h.OnInterrupt(s.Node.Stop)

	say("building and importing images: pause, the test app, Vault's agent, Vault's injector, %s", strings.Join(release, ", "))
	s.importImages(ctx, t, vaultK8s, release, o.Images)

	say("starting a Vault dev server")
	s.startVault(t, o.VaultEnv)
	return s
}

func must(t testing.TB) func(string, error) string {
	return func(s string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

func (s *Stack) importImages(ctx context.Context, t testing.TB, vaultK8s string, release []string, more []node.Image) {
	t.Helper()
	pause := procs.Build(t, "e2e", "./cmd/pause")
	app := procs.Build(t, "e2e", "./cmd/testapp")
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	images := []node.Image{
		{Tag: node.PauseImage, Add: []string{pause + ":/pause"}, Entrypoint: "/pause"},
		{Tag: node.AppImage, Add: []string{app + ":/testapp"}, Entrypoint: "/testapp", User: "65532"},
		// Vault's injector runs the agent with /bin/sh, base64 and vault from PATH.
		{Tag: node.VaultImage, Add: []string{s.VaultBin + ":/bin/vault", busybox + ":/bin/busybox"},
			Symlinks: []string{"/bin/sh:busybox", "/bin/base64:busybox", "/bin/sleep:busybox", "/bin/cat:busybox"}, Entrypoint: "/bin/vault", User: "100"},
		{Tag: VaultK8sImage, Add: []string{vaultK8s + ":/vault-k8s"}, Entrypoint: "/vault-k8s"},
	}
	images = append(images, more...)
	var tars []string
	for _, img := range images {
		tar, err := node.BuildImage(ctx, s.Work, img)
		if err != nil {
			t.Fatal(err)
		}
		tars = append(tars, tar)
	}
	// Ours exactly as released (the Dockerfiles' layout), for this machine's
	// architecture: local/<name>:e2e.
	if len(release) > 0 {
		archives, err := node.ReleaseImages(ctx, filepath.Join(s.Work, "release"), release...)
		if err != nil {
			t.Fatal(err)
		}
		tars = append(tars, archives...)
	}
	for _, tar := range tars {
		if err := s.Node.ImportImage(ctx, tar); err != nil {
			t.Fatal(err)
		}
		_ = os.Remove(tar)
	}
}

func (s *Stack) startVault(t testing.TB, env []string) {
	t.Helper()
	s.Vault, s.VaultAddr = vaultdev.Start(t, s.Work, s.VaultBin, env...)
}

// VaultRunner runs the vault CLI against the dev server as root, as the
// docs tell users to.
func (s *Stack) VaultRunner() flow.VaultCLI {
	return func(stdin string, args ...string) (string, error) {
		cmd := exec.Command(s.VaultBin, args...)
		cmd.Env = append(os.Environ(), "VAULT_ADDR="+s.VaultAddr, "VAULT_TOKEN=root", "HOME="+s.Work)
		if stdin != "" {
			cmd.Stdin = strings.NewReader(stdin)
		}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
}

// VaultCLI runs the vault CLI against the dev server, as docs/relying-parties.md tells users to.
func (s *Stack) VaultCLI(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	out, err := s.VaultRunner()(stdin, args...)
	if err != nil {
		t.Fatalf("vault %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (s *Stack) configureVault(t testing.TB) {
	t.Helper()
	var err error
	s.Accessor, err = flow.ConfigureVault(s.VaultRunner(), flow.VaultConfig{
		IssuerURL: s.IssuerURL, CAPEM: s.CA.CertPEM,
		// Short, so the agent logs in again with fresh STS tokens during the run.
		TokenTTL: "10s", TokenMaxTTL: "20s",
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Vault's injector as a user would apply it: the Pod and its RBAC, then
// (once it answers) its webhook registration.
var (
	//go:embed vault-injector.yaml
	vaultInjectorYAML string
	//go:embed vault-injector-webhook.yaml
	vaultInjectorWebhookYAML string

	vaultInjector        = template.Must(template.New("vault-injector").Parse(vaultInjectorYAML))
	vaultInjectorWebhook = template.Must(template.New("vault-injector-webhook").Parse(vaultInjectorWebhookYAML))
)

// StartVaultInjector runs Vault's agent injector as a host-network Pod with
// a certificate from s.CA and registers it as a second mutating webhook:
// vault-injector.yaml, applied as a user would.
func (s *Stack) StartVaultInjector(ctx context.Context, t testing.TB) {
	t.Helper()
	const ns = "vault"
	if err := node.PrepareNamespace(ctx, s.Env, ns); err != nil {
		t.Fatal(err)
	}
	tlsDir := filepath.Join(s.Work, "injector-tls")
	if err := os.MkdirAll(tlsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CA.Serving(tlsDir); err != nil {
		t.Fatal(err)
	}
	port := procs.FreePort(t)
	apiHost, apiPort := HostPort(t, s.Env.Config.Host)
	fields := map[string]any{
		"Node": node.Name, "Image": VaultK8sImage, "AgentImage": node.VaultImage, "Port": port, "VaultAddr": s.VaultAddr,
		"APIHost": apiHost, "APIPort": apiPort, "TLSDir": tlsDir, "CABundle": base64.StdEncoding.EncodeToString(s.CA.CertPEM),
	}
	apply := func(tmpl *template.Template) {
		t.Helper()
		var manifest bytes.Buffer
		if err := tmpl.Execute(&manifest, fields); err != nil {
			t.Fatal(err)
		}
		if err := kube.Apply(ctx, s.Env.Config, manifest.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	apply(vaultInjector)
	client := procs.TLSClient(s.CA.Pool())
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%d/health/ready", port))
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			p, _ := s.Env.Clientset.CoreV1().Pods(ns).Get(ctx, "vault-agent-injector", metav1.GetOptions{})
			log, _ := s.Node.ContainerLog(p, "injector")
			t.Fatalf("Vault's injector did not come up: %v\nstatus: %+v\nlog: %s", err, p.Status, log)
		}
		time.Sleep(300 * time.Millisecond)
	}
	apply(vaultInjectorWebhook)
}

// HostPort splits the API server's URL (Env.Config.Host) into the host and
// port that Pods on the node reach it at (no Service VIP routes here).
func HostPort(t testing.TB, hostURL string) (string, string) {
	t.Helper()
	h := strings.TrimPrefix(strings.TrimPrefix(hostURL, "https://"), "http://")
	host, port, ok := strings.Cut(h, ":")
	if !ok {
		t.Fatalf("API server address %q has no port", hostURL)
	}
	return host, strings.TrimSuffix(port, "/")
}

// VaultLogin logs in to Vault's JWT auth with an STS token, as the agent does.
func (s *Stack) VaultLogin(jwt string) (string, error) {
	cmd := exec.Command(s.VaultBin, "write", "-format=json", "auth/jwt/login", "role="+Role, "jwt="+jwt)
	cmd.Env = append(os.Environ(), "VAULT_ADDR="+s.VaultAddr, "HOME="+s.Work)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Claims decodes a JWT's payload (no verification: for display and checks).
func Claims(jwt string) (map[string]any, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("not a JWT: %d segments", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, err
	}
	var c map[string]any
	err = json.Unmarshal(raw, &c)
	return c, err
}
