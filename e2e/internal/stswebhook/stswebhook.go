// Package stswebhook runs sts-webhook as a black box against the test control
// plane and registers it with the manifest kube-sts ships
// (manifests/base/webhook/mutatingwebhookconfiguration.yaml), pointed at the
// loopback process.
package stswebhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/kube"
	"github.com/kube-sts/kube-sts/e2e/internal/procs"
	"github.com/kube-sts/kube-sts/e2e/internal/testca"
	"github.com/kube-sts/kube-sts/shared/contract"
)

// User is the webhook's identity; Namespace its own namespace.
const (
	User      = "kube-sts:sts-webhook"
	Namespace = "kube-sts"
)

// SelfSecret is the webhook's default --self-secret.
const SelfSecret = "sts-webhook-tls"

// SelfCertDir is the folder (in Webhook.Dir) where self mode writes its pair.
const SelfCertDir = "self-certs"

// Webhook is a running sts-webhook.
type Webhook struct {
	*procs.Proc
	URL        string // https://<host>:<port>/mutate
	ProbeURL   string
	MetricsURL string
	Dir        string
}

// Options of Start.
type Options struct {
	// Config is the webhook's configuration file content.
	Config string
	// CA signs the serving certificate in certdir mode; nil selects self mode.
	CA *testca.CA
	// Host the API server calls: 127.0.0.1 in certdir mode, localhost in self
	// mode (the self-managed certificate has DNS names only).
	Host string
	// ConfigName of the MutatingWebhookConfiguration (self mode patches it).
	ConfigName string
	// SelfSecret keeps the self-managed pair (default sts-webhook-tls).
	SelfSecret string
	// NoWait returns once the process runs; call WaitReady.
	NoWait bool
	// LogLevel is --log-level: debug when empty (the suites read the
	// webhook's decisions in its log); benchmarks pass the shipped "info".
	LogLevel string
	// ServiceAccountOptIn runs it with --serviceaccount-opt-in, granted
	// what the serviceaccount-opt-in component grants (rbac.yaml there).
	ServiceAccountOptIn bool
}

// Manifest loads the shipped MutatingWebhookConfiguration.
func Manifest(t testing.TB) *admissionregv1.MutatingWebhookConfiguration {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(procs.RepoRoot(), "manifests", "base", "webhook", "mutatingwebhookconfiguration.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg admissionregv1.MutatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		t.Fatalf("the shipped webhook manifest does not parse: %v", err)
	}
	return &cfg
}

// Register creates the shipped configuration under name, with every entry
// calling url and trusting caBundle (nil: left for self mode to fill). With
// injectors, the shipped entry is repeated for each, named and selecting
// as the chart does (<injector>.kube-sts.io, tremolo.io/<injector>: "true").
func Register(ctx context.Context, t testing.TB, env *controlplane.Env, name, url string, caBundle []byte, injectors ...string) {
	t.Helper()
	cfg := Manifest(t)
	cfg.Name = name
	if len(injectors) > 0 {
		shipped := cfg.Webhooks[0]
		cfg.Webhooks = nil
		for _, in := range injectors {
			w := *shipped.DeepCopy()
			w.Name = in + ".kube-sts.io"
			w.ObjectSelector = &metav1.LabelSelector{MatchLabels: map[string]string{contract.Prefix + in: "true"}}
			cfg.Webhooks = append(cfg.Webhooks, w)
		}
	}
	for i := range cfg.Webhooks {
		cfg.Webhooks[i].ClientConfig = admissionregv1.WebhookClientConfig{URL: ptr.To(url), CABundle: caBundle}
	}
	Create(ctx, t, env, cfg)
}

// ServiceAccountOptInDir is the kustomize component that enables
// ServiceAccount opt-in.
func ServiceAccountOptInDir() string {
	return filepath.Join(procs.RepoRoot(), "manifests", "components", "serviceaccount-opt-in")
}

// ServiceAccountOptInManifest is the shipped configuration with the
// serviceaccount-opt-in component's changes (webhook-entry.yaml): the label
// entry leaves the enabled namespaces out, the ServiceAccount entry (last)
// takes them.
func ServiceAccountOptInManifest(t testing.TB) *admissionregv1.MutatingWebhookConfiguration {
	t.Helper()
	cfg := Manifest(t)
	data, err := os.ReadFile(filepath.Join(ServiceAccountOptInDir(), "webhook-entry.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ops []struct {
		Op    string          `json:"op"`
		Path  string          `json:"path"`
		Value json.RawMessage `json:"value"`
	}
	if err := yaml.UnmarshalStrict(data, &ops); err != nil {
		t.Fatalf("the component's webhook-entry.yaml: %v", err)
	}
	for _, op := range ops {
		switch {
		case op.Op == "add" && op.Path == "/webhooks/0/namespaceSelector/matchExpressions/-":
			var e metav1.LabelSelectorRequirement
			if err := json.Unmarshal(op.Value, &e); err != nil {
				t.Fatal(err)
			}
			cfg.Webhooks[0].NamespaceSelector.MatchExpressions = append(cfg.Webhooks[0].NamespaceSelector.MatchExpressions, e)
		case op.Op == "add" && op.Path == "/webhooks/-":
			var w admissionregv1.MutatingWebhook
			if err := json.Unmarshal(op.Value, &w); err != nil {
				t.Fatal(err)
			}
			cfg.Webhooks = append(cfg.Webhooks, w)
		default:
			t.Fatalf("webhook-entry.yaml: an operation this harness does not apply: %s %s", op.Op, op.Path)
		}
	}
	return cfg
}

// RegisterServiceAccountOptIn registers ServiceAccountOptInManifest under
// name, the label entry calling url, the ServiceAccount entry url +
// "-serviceaccount" (/mutate-serviceaccount).
func RegisterServiceAccountOptIn(ctx context.Context, t testing.TB, env *controlplane.Env, name, url string, caBundle []byte) {
	t.Helper()
	cfg := ServiceAccountOptInManifest(t)
	cfg.Name = name
	for i := range cfg.Webhooks {
		u := url
		if cfg.Webhooks[i].ClientConfig.Service != nil && *cfg.Webhooks[i].ClientConfig.Service.Path == "/mutate-serviceaccount" {
			u = url + "-serviceaccount"
		}
		cfg.Webhooks[i].ClientConfig = admissionregv1.WebhookClientConfig{URL: ptr.To(u), CABundle: caBundle}
	}
	Create(ctx, t, env, cfg)
}

// Create registers cfg with the API server and deletes it when the test ends.
func Create(ctx context.Context, t testing.TB, env *controlplane.Env, cfg *admissionregv1.MutatingWebhookConfiguration) {
	t.Helper()
	if _, err := env.Clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, cfg, metav1.CreateOptions{}); err != nil {
		t.Fatalf("register webhook %s: %v", cfg.Name, err)
	}
	t.Cleanup(func() {
		_ = env.Clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), cfg.Name, metav1.DeleteOptions{})
	})
}

// Start runs sts-webhook and waits until /readyz is 200.
func Start(t testing.TB, env *controlplane.Env, o Options) *Webhook {
	t.Helper()
	ctx := context.Background()
	if o.SelfSecret == "" {
		o.SelfSecret = SelfSecret
	}
	if o.LogLevel == "" {
		o.LogLevel = "debug"
	}
	if err := setupRBAC(ctx, env, o.ConfigName, o.SelfSecret); err != nil {
		t.Fatalf("webhook RBAC: %v", err)
	}
	if o.ServiceAccountOptIn {
		if err := (kube.ShippedRBAC{File: filepath.Join(ServiceAccountOptInDir(), "rbac.yaml"), User: User, Namespace: Namespace}).Apply(ctx, env.Clientset); err != nil {
			t.Fatalf("webhook RBAC for ServiceAccount opt-in: %v", err)
		}
	}
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "webhook.yaml")
	if err := os.WriteFile(cfgFile, []byte(o.Config), 0o644); err != nil {
		t.Fatal(err)
	}
	kcFile, err := env.KubeconfigFile(dir, User)
	if err != nil {
		t.Fatal(err)
	}
	port, pport, mport := procs.FreePort(t), procs.FreePort(t), procs.FreePort(t)
	args := []string{
		"--config", cfgFile,
		"--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--probe-listen", fmt.Sprintf("127.0.0.1:%d", pport),
		"--metrics-listen", fmt.Sprintf("127.0.0.1:%d", mport),
		"--kubeconfig", kcFile,
		"--namespace", Namespace,
		"--log-level", o.LogLevel,
	}
	if o.ServiceAccountOptIn {
		args = append(args, "--serviceaccount-opt-in")
	}
	if o.CA != nil {
		certDir := filepath.Join(dir, "certs")
		if err := os.Mkdir(certDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if _, _, err := o.CA.Serving(certDir); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--tls-mode", "certdir", "--cert-dir", certDir)
	} else {
		// The webhook writes the pair and ca.crt from its Secret here.
		args = append(args, "--tls-mode", "self", "--dns-name", o.Host, "--webhook-config", o.ConfigName, "--self-secret", o.SelfSecret,
			"--cert-dir", filepath.Join(dir, SelfCertDir))
	}
	bin := procs.Build(t, "webhook", "./cmd/sts-webhook")
	p := procs.Start(t, fmt.Sprintf("sts-webhook-%d", port), dir, bin, args...)
	w := &Webhook{
		Proc:       p,
		URL:        fmt.Sprintf("https://%s:%d/mutate", o.Host, port),
		ProbeURL:   fmt.Sprintf("http://127.0.0.1:%d", pport),
		MetricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", mport),
		Dir:        dir,
	}
	if !o.NoWait {
		w.WaitReady(t)
	}
	return w
}

// WaitReady waits until /readyz is 200.
func (w *Webhook) WaitReady(t testing.TB) {
	t.Helper()
	if err := w.WaitHTTP(context.Background(), &http.Client{Timeout: 5 * time.Second}, w.ProbeURL+"/readyz", 60*time.Second); err != nil {
		t.Fatal(err)
	}
}

// setupRBAC grants self mode exactly what the shipped overlay
// (manifests/overlays/self-managed/webhook-rbac.yaml) grants sts-webhook,
// with its Secret and webhook configuration renamed to this run's; certdir
// mode needs nothing beyond discovery.
func setupRBAC(ctx context.Context, env *controlplane.Env, configName, secret string) error {
	if _, err := env.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if configName == "" {
		return nil
	}
	return kube.ShippedRBAC{
		File: filepath.Join(procs.RepoRoot(), "manifests", "overlays", "self-managed", "webhook-rbac.yaml"),
		User: User, Namespace: Namespace, Suffix: "-" + configName,
		Rename: map[string][]string{"kube-sts-tls": {secret}, "kube-sts": {configName}},
	}.Apply(ctx, env.Clientset)
}
