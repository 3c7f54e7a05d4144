// Package manifests checks everything under manifests/ against the real API
// server: the Helm chart rendered with each of its values files and every
// kustomize overlay, by the pinned helm and kustomize, pass a server-side
// dry-run with strict field validation; the Pods they make meet the
// restricted Pod Security Standard; the configuration files they carry are
// accepted by our binaries' own parsers; RBAC stays least-privilege; and
// actionlint passes on every workflow.
package manifests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	admissionregv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/procs"
)

var cp = controlplane.New()

func TestMain(m *testing.M) { os.Exit(cp.Main(m)) }

const releaseNS = "kube-sts"

// Objects is one rendering: a chart values file or an overlay.
type Objects struct {
	Name string
	// Local is the single-node values file: host network, one replica.
	Local bool
	Objs  []*unstructured.Unstructured
}

func tool(t *testing.T, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	p, err := controlplane.Binary(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func chartDir() string { return filepath.Join(procs.RepoRoot(), "manifests", "charts", "kube-sts") }

// renderings renders the chart with its default values and each ci/ values
// file, and every kustomize overlay (and the base).
func renderings(t *testing.T) []Objects {
	t.Helper()
	helm, kustomize := tool(t, "helm"), tool(t, "kustomize")
	var out []Objects
	valueFiles := ciValueFiles(t)
	// The kind job's values too (e2e/kind), as GitHub Actions installs them.
	valueFiles = append(valueFiles, filepath.Join(procs.RepoRoot(), "e2e", "kind", "values.yaml"))
	for _, vf := range append([]string{""}, valueFiles...) {
		args := []string{"template", "kube-sts", chartDir(), "--namespace", releaseNS}
		name := "chart/default"
		if vf != "" {
			args = append(args, "--values", vf)
			name = "chart/" + strings.TrimSuffix(strings.TrimSuffix(filepath.Base(vf), ".yaml"), "-values")
			if strings.Contains(vf, "/e2e/kind/") {
				name = "chart/kind"
			}
		}
		out = append(out, Objects{Name: name, Local: strings.HasSuffix(name, "/local"), Objs: decode(t, name, run(t, helm, args...))})
	}
	for _, dir := range []string{"base", "overlays/cert-manager", "overlays/self-managed"} {
		out = append(out, Objects{Name: "kustomize/" + dir, Objs: decode(t, dir, run(t, kustomize, "build", filepath.Join(procs.RepoRoot(), "manifests", dir)))})
	}
	// The review-watch component, as a user's overlay adds it.
	out = append(out, Objects{Name: "kustomize/review-watch", Objs: decode(t, "review-watch", run(t, kustomize, "build", filepath.Join("testdata", "review-watch")))})
	// The serviceaccount-opt-in component, as a user's overlay adds it.
	out = append(out, Objects{Name: "kustomize/serviceaccount-opt-in", Objs: decode(t, "serviceaccount-opt-in", run(t, kustomize, "build", filepath.Join("testdata", "serviceaccount-opt-in")))})
	return out
}

func run(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

func decode(t *testing.T, name string, data []byte) []*unstructured.Unstructured {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("%s: decode: %v", name, err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	if len(objs) == 0 {
		t.Fatalf("%s rendered nothing", name)
	}
	return objs
}

// TestManifestsDryRun: every object of every rendering is accepted by the
// real API server (server-side apply, dry run, strict field validation), and
// every Deployment's Pod is admitted in a namespace that enforces the
// restricted Pod Security Standard.
func TestManifestsDryRun(t *testing.T) {
	env := cp.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	a := &applier{dyn: dyn, mapper: mapper}

	// cert-manager's kinds, for the cert-manager overlay and chart mode.
	crds, err := os.ReadFile(filepath.Join("testdata", "cert-manager-crds.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range decode(t, "crds", crds) {
		if err := a.apply(ctx, o, false); err != nil {
			t.Fatal(err)
		}
	}
	// The Prometheus Operator's and the Gateway API's, as their modules ship
	// them, for the chart's monitoring objects (ci/monitoring-values.yaml)
	// and the issuer's HTTPRoute and BackendTLSPolicy (ci/conventions-values.yaml).
	for dir, files := range map[string][]string{
		tool(t, "prometheus-operator-crds"): {"monitoring.coreos.com_servicemonitors.yaml", "monitoring.coreos.com_prometheusrules.yaml"},
		tool(t, "gateway-api-crds"):         {"gateway.networking.k8s.io_httproutes.yaml", "gateway.networking.k8s.io_backendtlspolicies.yaml"},
	} {
		for _, f := range files {
			data, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range decode(t, f, data) {
				if err := a.apply(ctx, o, false); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	waitFor(t, 30*time.Second, func() error {
		mapper.Reset()
		for _, gk := range []schema.GroupKind{{Group: "cert-manager.io", Kind: "Certificate"}, {Group: "monitoring.coreos.com", Kind: "ServiceMonitor"}, {Group: "monitoring.coreos.com", Kind: "PrometheusRule"},
			{Group: "gateway.networking.k8s.io", Kind: "HTTPRoute"}, {Group: "gateway.networking.k8s.io", Kind: "BackendTLSPolicy"}} {
			if _, err := mapper.RESTMapping(gk, "v1"); err != nil {
				return err
			}
		}
		return nil
	})
	// The namespace exists for real, labeled as the kustomize base labels it.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: releaseNS, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}}
	if _, err := env.Clientset.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}

	for _, r := range renderings(t) {
		t.Run(r.Name, func(t *testing.T) {
			kinds := map[string]int{}
			for _, o := range r.Objs {
				kinds[o.GetKind()]++
				if err := a.apply(ctx, o, true); err != nil {
					t.Errorf("%s %s: %v", o.GetKind(), o.GetName(), err)
				}
			}
			for _, k := range []string{"Deployment", "Service", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration", "ConfigMap", "PodDisruptionBudget"} {
				if kinds[k] == 0 {
					t.Errorf("no %s rendered", k)
				}
			}
			t.Logf("%d objects: %v", len(r.Objs), kinds)
			for _, d := range typed[appsv1.Deployment](t, r.Objs, "Deployment") {
				if d.Spec.Template.Spec.HostNetwork {
					if !r.Local {
						t.Errorf("%s runs on the host network outside the local values", d.Name)
					}
					continue // the restricted standard forbids it; only the local node uses it
				}
				pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: d.Name + "-", Namespace: releaseNS, Labels: d.Spec.Template.Labels},
					Spec: *d.Spec.Template.Spec.DeepCopy()}
				if _, err := env.Clientset.CoreV1().Pods(releaseNS).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
					t.Errorf("%s's Pod is refused in a restricted namespace: %v", d.Name, err)
				}
			}
		})
	}
}

type applier struct {
	dyn    dynamic.Interface
	mapper meta.RESTMapper
}

// apply server-side applies o, as a dry run when dry; strict field
// validation makes unknown or duplicate fields errors.
func (a *applier) apply(ctx context.Context, o *unstructured.Unstructured, dry bool) error {
	gvk := o.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("no API for %s: %w", gvk, err)
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := o.GetNamespace()
		if ns == "" {
			ns = releaseNS
		}
		ri = a.dyn.Resource(m.Resource).Namespace(ns)
	}
	data, err := o.MarshalJSON()
	if err != nil {
		return err
	}
	opts := metav1.PatchOptions{FieldManager: "kube-sts-manifests-test", Force: ptrTo(true), FieldValidation: "Strict"}
	if dry {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = ri.Patch(ctx, o.GetName(), types.ApplyPatchType, data, opts)
	return err
}

func ptrTo[T any](v T) *T { return &v }

func waitFor(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// typed converts the objects of one kind.
func typed[T any](t *testing.T, objs []*unstructured.Unstructured, kind string) []*T {
	t.Helper()
	var out []*T
	for _, o := range objs {
		if o.GetKind() != kind {
			continue
		}
		v := new(T)
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, v); err != nil {
			t.Fatalf("%s %s: %v", kind, o.GetName(), err)
		}
		out = append(out, v)
	}
	return out
}

// TestHardened: probes, resources, securityContexts, replicas, spread,
// rolling updates and disruption budgets everywhere; the local values are the one place with a
// single replica on the host network.
func TestHardened(t *testing.T) {
	for _, r := range renderings(t) {
		t.Run(r.Name, func(t *testing.T) {
			deps := typed[appsv1.Deployment](t, r.Objs, "Deployment")
			pdbs := typed[policyv1.PodDisruptionBudget](t, r.Objs, "PodDisruptionBudget")
			if len(deps) != 2 {
				t.Fatalf("%d Deployments, want the issuer and the webhook", len(deps))
			}
			for _, d := range deps {
				ps := d.Spec.Template.Spec
				if sc := ps.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("%s: pod securityContext %+v", d.Name, sc)
				}
				for _, c := range ps.Containers {
					sc := c.SecurityContext
					if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
						sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
						t.Errorf("%s/%s: securityContext %+v", d.Name, c.Name, sc)
					}
					if c.ReadinessProbe == nil || c.LivenessProbe == nil {
						t.Errorf("%s/%s: readiness and liveness probes are required", d.Name, c.Name)
					}
					if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
						t.Errorf("%s/%s: resources %+v", d.Name, c.Name, c.Resources)
					}
				}
				checkStrategy(t, d)
				if r.Local {
					continue
				}
				if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
					t.Errorf("%s: %v replicas, want at least 2", d.Name, d.Spec.Replicas)
				}
				if len(ps.TopologySpreadConstraints) == 0 {
					t.Errorf("%s: no topology spread", d.Name)
				}
				covered := false
				for _, p := range pdbs {
					sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
					if err == nil && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
						covered = true
					}
				}
				if !covered {
					t.Errorf("%s: no PodDisruptionBudget selects its Pods", d.Name)
				}
			}
		})
	}
}

// checkStrategy: upgrades never take more than one Pod away at a time.
// Without the host network a new Pod is Ready before an old one goes; on it
// (one port per node) one Pod at a time with no surge, and a single Pod is
// replaced in place (Recreate, so that helm --wait waits for the new one).
func checkStrategy(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	st, host := d.Spec.Strategy, d.Spec.Template.Spec.HostNetwork
	if host && d.Spec.Replicas != nil && *d.Spec.Replicas == 1 {
		if st.Type != appsv1.RecreateDeploymentStrategyType {
			t.Errorf("%s: one Pod on the host network rolls with %+v, want Recreate", d.Name, st)
		}
		return
	}
	ru := st.RollingUpdate
	switch {
	case st.Type != appsv1.RollingUpdateDeploymentStrategyType || ru == nil || ru.MaxUnavailable == nil || ru.MaxSurge == nil:
		t.Errorf("%s: strategy %+v, want a rolling update", d.Name, st)
	case host && (ru.MaxUnavailable.IntValue() != 1 || ru.MaxSurge.IntValue() != 0):
		t.Errorf("%s: on the host network maxUnavailable %v and maxSurge %v, want 1 and 0", d.Name, ru.MaxUnavailable, ru.MaxSurge)
	case !host && (ru.MaxUnavailable.IntValue() != 0 || ru.MaxSurge.IntValue() < 1):
		t.Errorf("%s: maxUnavailable %v and maxSurge %v, want 0 and at least 1", d.Name, ru.MaxUnavailable, ru.MaxSurge)
	}
}

// TestHostNetworkReplicasRoll: replicas on the host network (several
// nodes) roll one at a time; the local values' single Pods are replaced.
func TestHostNetworkReplicasRoll(t *testing.T) {
	helm := tool(t, "helm")
	local := filepath.Join(chartDir(), "ci", "local-values.yaml")
	for _, replicas := range []string{"1", "3"} {
		objs := decode(t, "host network", run(t, helm, "template", "kube-sts", chartDir(), "--namespace", releaseNS,
			"--values", local, "--set", "issuer.replicas="+replicas+",webhook.replicas="+replicas))
		deps := typed[appsv1.Deployment](t, objs, "Deployment")
		if len(deps) != 2 {
			t.Fatalf("%d Deployments", len(deps))
		}
		for _, d := range deps {
			if !d.Spec.Template.Spec.HostNetwork || fmt.Sprint(*d.Spec.Replicas) != replicas {
				t.Fatalf("%s: hostNetwork %v, replicas %d", d.Name, d.Spec.Template.Spec.HostNetwork, *d.Spec.Replicas)
			}
			checkStrategy(t, d)
		}
	}
}

// TestLeastPrivilege: the issuer may create TokenReviews, get Pods, create
// and patch Events (on refused Pods) and read the service-account issuer
// discovery cluster-wide and nothing else there
// (in review mode watch, and only then, a second ClusterRole adds get, list
// and watch on Pods and ServiceAccounts); Secrets are written only by name; no rule anywhere
// uses a wildcard.
func TestLeastPrivilege(t *testing.T) {
	for _, r := range renderings(t) {
		t.Run(r.Name, func(t *testing.T) {
			var rules []rbacv1.PolicyRule
			watchRole := false
			for _, cr := range typed[rbacv1.ClusterRole](t, r.Objs, "ClusterRole") {
				if strings.HasSuffix(cr.Name, "-issuer-review-watch") {
					watchRole = true
					got := fmt.Sprint(cr.Rules)
					want := fmt.Sprint([]rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods", "serviceaccounts"}, Verbs: []string{"get", "list", "watch"}}})
					if got != want {
						t.Errorf("issuer ClusterRole %s:\n got %s\nwant %s", cr.Name, got, want)
					}
				}
				if strings.HasSuffix(cr.Name, "-issuer") {
					got := fmt.Sprint(cr.Rules)
					want := fmt.Sprint([]rbacv1.PolicyRule{
						{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
						{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
						{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
						{Verbs: []string{"get"}, NonResourceURLs: []string{"/.well-known/openid-configuration", "/openid/v1/jwks"}},
					})
					if got != want {
						t.Errorf("issuer ClusterRole %s:\n got %s\nwant %s", cr.Name, got, want)
					}
				}
				rules = append(rules, cr.Rules...)
			}
			if mode := reviewMode(t, r); watchRole != (mode == "watch") {
				t.Errorf("the issuer runs in review mode %s; its review-watch ClusterRole is there: %v", mode, watchRole)
			}
			for _, role := range typed[rbacv1.Role](t, r.Objs, "Role") {
				for _, rule := range role.Rules {
					for _, v := range rule.Verbs {
						if (v == "get" || v == "update" || v == "patch" || v == "delete") && len(rule.ResourceNames) == 0 {
							t.Errorf("Role %s: %s on %v is not limited by name", role.Name, v, rule.Resources)
						}
					}
				}
				rules = append(rules, role.Rules...)
			}
			for _, rule := range rules {
				for _, s := range append(append(append([]string{}, rule.Verbs...), rule.Resources...), rule.APIGroups...) {
					if s == "*" {
						t.Errorf("wildcard in %+v", rule)
					}
				}
			}
		})
	}
}

// TestConfigsParse: the issuer and webhook configuration files each
// rendering carries are accepted by the binaries' own --check-config, which
// warns about nothing (publish-values.yaml's GCS and Azure endpoints have
// issuer URLs where the clouds read them).
func TestConfigsParse(t *testing.T) {
	issuer := procs.Build(t, "issuer", "./cmd/sts-issuer")
	webhook := procs.Build(t, "webhook", "./cmd/sts-webhook")
	for _, r := range renderings(t) {
		t.Run(r.Name, func(t *testing.T) {
			seen := map[string]bool{}
			for _, cm := range typed[corev1.ConfigMap](t, r.Objs, "ConfigMap") {
				for key, data := range cm.Data {
					bin := map[string]string{"issuer.yaml": issuer, "webhook.yaml": webhook}[key]
					if bin == "" {
						continue
					}
					seen[key] = true
					file := filepath.Join(t.TempDir(), key)
					if err := os.WriteFile(file, []byte(data), 0o644); err != nil {
						t.Fatal(err)
					}
					out, err := exec.Command(bin, "--check-config", "--config", file).CombinedOutput()
					switch {
					case err != nil:
						t.Errorf("%s of ConfigMap %s is refused: %v\n%s\n%s", key, cm.Name, err, out, data)
					case strings.Contains(string(out), "warning:"):
						// e.g. an issuer URL that is not where a cloud target publishes
						t.Errorf("%s of ConfigMap %s draws warnings:\n%s", key, cm.Name, out)
					}
				}
			}
			if !seen["issuer.yaml"] || !seen["webhook.yaml"] {
				t.Errorf("configuration files found: %v", seen)
			}
		})
	}
}

// TestChartSchema: values the schema refuses fail the install with a message
// that names the field.
func TestChartSchema(t *testing.T) {
	helm := tool(t, "helm")
	for name, tc := range map[string]struct {
		set    []string
		wantIn string
	}{
		"unknown tls mode":       {[]string{"tls.mode=vault"}, "/tls/mode"},
		"endpoint name":          {[]string{"sts.endpoints[0].name=Vault_1"}, "/sts/endpoints/0/name"},
		"path without slash":     {[]string{"sts.endpoints[0].path=vault"}, "/sts/endpoints/0/path"},
		"algorithm":              {[]string{"sts.endpoints[0].algorithm=HS256"}, "/sts/endpoints/0/algorithm"},
		"secret mode without CA": {[]string{"tls.mode=secret", "tls.secretName=x"}, "caBundle"},
		"typo":                   {[]string{"issuer.replica=3"}, "replica"},
		"file keys without name": {[]string{"sts.endpoints[0].issuer.keypair.managed=false"}, "secret"},
		"colon in cluster":       {[]string{"cluster=a:b"}, "/cluster"},
		"refusal ratio above 1":  {[]string{"monitoring.prometheusRule.refusalRatio=2"}, "/monitoring/prometheusRule/refusalRatio"},
		"monitoring typo":        {[]string{"monitoring.serviceMonitors.enabled=true"}, "serviceMonitors"},
	} {
		t.Run(name, func(t *testing.T) {
			args := []string{"template", "kube-sts", chartDir()}
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			out, err := exec.Command(helm, args...).CombinedOutput()
			if err == nil {
				t.Fatalf("accepted --set %v", tc.set)
			}
			if !strings.Contains(string(out), "schema") || !strings.Contains(string(out), tc.wantIn) || strings.Contains(string(out), "kind: Deployment") {
				t.Fatalf("error does not name %q:\n%s", tc.wantIn, out)
			}
		})
	}
}

// TestChartNotes: after an install (dry run on the real API server) the notes
// print the Vault commands for each endpoint, with its issuer URL and audience.
func TestChartNotes(t *testing.T) {
	env := cp.Require(t)
	helm := tool(t, "helm")
	kubeconfig, err := env.KubeconfigFile(t.TempDir(), "helm-admin", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	out := run(t, helm, "install", "kube-sts", chartDir(), "--namespace", releaseNS, "--dry-run=server", "--kubeconfig", kubeconfig,
		"--values", filepath.Join(chartDir(), "ci", "secret-values.yaml"))
	notes := string(out[bytes.Index(out, []byte("NOTES:")):])
	for _, want := range []string{
		"vault auth enable -path=jwt-vault jwt",
		`oidc_discovery_url="https://kube-sts-issuer.kube-sts.svc/vault"`,
		`"bound_audiences": ["https://vault.example.com/"]`,
		"vault auth enable -path=jwt-aws jwt",
		`bound_issuer="https://aws-sts.example.com/aws"`,
		`"expiration_leeway": -1`,
		"tremolo.io/vault-sts",
		"secret/data/prod-eu-1/<namespace>/",
		// Another cluster's AuthenticationConfiguration, per endpoint.
		"kind: AuthenticationConfiguration",
		"url: https://aws-sts.example.com/aws",
		`audiences: ["https://vault.example.com/"]`,
		"requiredValue: prod-eu-1",
		`username: {claim: sub, prefix: "kube-sts:"}`,
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, notes)
		}
	}
}

// TestWorkflows: the pinned actionlint passes on every GitHub workflow.
func TestWorkflows(t *testing.T) {
	actionlint := tool(t, "actionlint")
	files, _ := filepath.Glob(filepath.Join(procs.RepoRoot(), ".github", "workflows", "*.y*ml"))
	sort.Strings(files)
	if len(files) < 2 {
		t.Fatalf("expected ci.yaml and e2e-kind.yaml, found %v", files)
	}
	cmd := exec.Command(actionlint, append([]string{"-no-color"}, files...)...)
	cmd.Dir = procs.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("actionlint: %v\n%s", err, out)
	}
	t.Logf("actionlint passed on %d workflows", len(files))
	if out, err := exec.Command("bash", filepath.Join(procs.RepoRoot(), "hack", "check-pins.sh")).CombinedOutput(); err != nil {
		t.Fatalf("hack/check-pins.sh: %v\n%s", err, out)
	}
}

// TestVersionsAgree: the chart's appVersion, the kustomize base's image tags
// and the sidecar image in the base's webhook configuration name one release.
func TestVersionsAgree(t *testing.T) {
	root := filepath.Join(procs.RepoRoot(), "manifests")
	chart, err := os.ReadFile(filepath.Join(root, "charts", "kube-sts", "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^appVersion: "?([^"\n]+)"?$`).FindSubmatch(chart)
	if m == nil {
		t.Fatal("no appVersion in Chart.yaml")
	}
	version := string(m[1])
	kust, err := os.ReadFile(filepath.Join(root, "base", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tags := regexp.MustCompile(`newTag: (\S+)`).FindAllSubmatch(kust, -1)
	if len(tags) != 2 {
		t.Fatalf("want the issuer's and the webhook's newTag in the base, found %d", len(tags))
	}
	for _, tag := range tags {
		if string(tag[1]) != version {
			t.Errorf("kustomize base tag %s, chart appVersion %s", tag[1], version)
		}
	}
	cfg, err := os.ReadFile(filepath.Join(root, "base", "config", "webhook.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "image: kube-sts/sts-creds-sidecar:" + version; !strings.Contains(string(cfg), want) {
		t.Errorf("base/config/webhook.yaml lacks %q", want)
	}
}

// TestNamespaceOptIn: with webhook.namespaceOptInLabel set, the registration
// the chart renders reaches only namespaces with that label. Checked on the
// real API server with the rendered configuration pointed at an endpoint
// that never answers (failurePolicy Fail): a labeled Pod in an opted-in
// namespace is refused (the webhook was called), one in another namespace is
// created (it was not).
func TestNamespaceOptIn(t *testing.T) {
	env := cp.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	helm := tool(t, "helm")
	objs := decode(t, "opt-in", run(t, helm, "template", "kube-sts", chartDir(), "--namespace", releaseNS,
		"--set", "webhook.namespaceOptInLabel=kube-sts.io/enabled", "--set", "webhook.url=https://localhost:1/mutate"))
	cfgs := typed[admissionregv1.MutatingWebhookConfiguration](t, objs, "MutatingWebhookConfiguration")
	if len(cfgs) != 1 {
		t.Fatalf("%d MutatingWebhookConfigurations rendered", len(cfgs))
	}
	cfg := cfgs[0]
	cfg.Name = "kube-sts-opt-in"
	if _, err := env.Clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, cfg, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), cfg.Name, metav1.DeleteOptions{})
	})
	for ns, labels := range map[string]map[string]string{"opted-in": {"kube-sts.io/enabled": "true"}, "not-opted-in": nil} {
		if _, err := env.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pod := func(ns string) error {
		_, err := env.Clientset.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "labeled-", Labels: map[string]string{"tremolo.io/vault-sts": "true"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "local/app:test"}}},
		}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err
	}
	// The registration takes effect within a moment of its creation.
	waitFor(t, 30*time.Second, func() error {
		if err := pod("opted-in"); err == nil || !strings.Contains(err.Error(), "failed calling webhook") {
			return fmt.Errorf("labeled Pod in an opted-in namespace: %v, want the webhook's failurePolicy refusal", err)
		}
		return nil
	})
	if err := pod("not-opted-in"); err != nil {
		t.Errorf("labeled Pod in a namespace without the label: %v, want it created without the webhook", err)
	}
}

// TestChartLint: helm lint --strict passes with the default values and with
// every ci/ values file (warnings fail too).
func TestChartLint(t *testing.T) {
	helm := tool(t, "helm")
	for _, vf := range append([]string{""}, ciValueFiles(t)...) {
		args := []string{"lint", "--strict", chartDir()}
		if vf != "" {
			args = append(args, "--values", vf)
		}
		if out := run(t, helm, args...); !bytes.Contains(out, []byte("1 chart(s) linted, 0 chart(s) failed")) {
			t.Errorf("helm %s:\n%s", strings.Join(args, " "), out)
		}
	}
}

// ciValueFiles are the chart's ci/*-values.yaml, each checked by every test
// that renders the chart.
func ciValueFiles(t *testing.T) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(chartDir(), "ci", "*-values.yaml"))
	if len(files) < 3 {
		t.Fatalf("expected the chart's ci/ values files, found %v", files)
	}
	return files
}
