package manifests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/kube"
	"github.com/kube-sts/kube-sts/e2e/internal/scrape"
	"github.com/kube-sts/kube-sts/e2e/internal/stsissuer"
	"github.com/kube-sts/kube-sts/e2e/internal/stswebhook"
	"github.com/kube-sts/kube-sts/e2e/internal/testca"
)

// TestMonitoring: the chart's alerting rules load with the pinned
// Prometheus's own rule loader (e2e/hack/promcheck: the checks of promtool
// check rules); the dashboard's queries parse with its PromQL parser; and every metric
// the rules and the dashboard select is one that sts-issuer or sts-webhook,
// running against the real API server, really exports.
func TestMonitoring(t *testing.T) {
	env := cp.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	helm, promcheck := tool(t, "helm"), tool(t, "promcheck")
	objs := decode(t, "monitoring", run(t, helm, "template", "kube-sts", chartDir(), "--namespace", releaseNS,
		"--values", filepath.Join(chartDir(), "ci", "monitoring-values.yaml")))

	var rules, dashboards []*unstructured.Unstructured
	monitors := 0
	for _, o := range objs {
		switch {
		case o.GetKind() == "PrometheusRule":
			rules = append(rules, o)
		case o.GetKind() == "ServiceMonitor":
			monitors++
		case o.GetKind() == "ConfigMap" && o.GetLabels()["grafana_dashboard"] == "1":
			dashboards = append(dashboards, o)
		}
	}
	if len(rules) != 1 || len(dashboards) != 1 || monitors != 2 {
		t.Fatalf("rendered %d PrometheusRules, %d dashboards, %d ServiceMonitors; want 1, 1, 2", len(rules), len(dashboards), monitors)
	}

	// The rules, as a rules file: a PrometheusRule's spec is one.
	spec, err := yaml.Marshal(rules[0].Object["spec"])
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(file, spec, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promcheck, "rules", file).CombinedOutput()
	if err != nil {
		t.Fatalf("the rules do not load: %v\n%s", err, out)
	}
	var parsed struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(spec, &parsed); err != nil {
		t.Fatal(err)
	}
	var exprs []string
	alerts := 0
	runbooks, err := os.ReadFile(filepath.Join(chartDir(), "..", "..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range parsed.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
			alerts++
			// Every alert's runbook is a section of docs/operations.md.
			anchor := strings.ToLower(r.Alert)
			if !strings.HasSuffix(r.Annotations["runbook_url"], "#"+anchor) || !bytes.Contains(runbooks, []byte("### "+r.Alert+"\n")) {
				t.Errorf("alert %s: runbook_url %q, and docs/operations.md needs a section '### %s'", r.Alert, r.Annotations["runbook_url"], r.Alert)
			}
		}
	}
	t.Logf("promcheck: %s", strings.TrimSpace(string(out)))

	// The dashboard's queries, with Grafana's variables given values.
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	data, _, _ := unstructured.NestedString(dashboards[0].Object, "data", "kube-sts.json")
	if err := json.Unmarshal([]byte(data), &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	grafana := strings.NewReplacer("$__rate_interval", "5m", "$namespace", releaseNS)
	panels := 0
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			exprs = append(exprs, grafana.Replace(q.Expr))
		}
		panels++
	}
	labelValues := regexp.MustCompile(`^label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*)`)
	for _, v := range dash.Templating.List {
		if m := labelValues.FindStringSubmatch(v.Definition); m != nil {
			exprs = append(exprs, m[1])
		}
	}
	in, _ := json.Marshal(exprs)
	cmd := exec.Command(promcheck, "names")
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	namesOut, err := cmd.Output()
	if err != nil {
		t.Fatalf("a rule or dashboard query does not parse: %v\n%s", err, stderr.String())
	}
	selected := strings.Fields(string(namesOut))

	exported := exportedMetrics(ctx, t, env)
	// Which build runs, for dashboards and upgrades: one series each.
	for _, n := range []string{"sts_issuer_build_info", "sts_webhook_build_info"} {
		if !exported[n] {
			t.Errorf("%s is not exported", n)
		}
	}
	for _, name := range selected {
		if name == "up" {
			continue // Prometheus's own, per scrape target
		}
		if !exported[name] {
			t.Errorf("a rule or dashboard query selects %s, which neither sts-issuer nor sts-webhook exports", name)
		}
	}
	t.Logf("%d alerts, %d dashboard panels, %d metrics selected, all exported: %v", alerts, panels, len(selected), selected)
}

// exportedMetrics runs sts-issuer (managed keys, a publish target, review
// mode watch) and
// sts-webhook on the real API server, makes them count something in every
// labeled family (an issued and a refused exchange, an injected and a denied
// admission, a publish), and returns the metric names both expose.
func exportedMetrics(ctx context.Context, t *testing.T, env *controlplane.Env) map[string]bool {
	t.Helper()
	ca, err := testca.New("monitoring")
	if err != nil {
		t.Fatal(err)
	}
	published := t.TempDir()
	iss := stsissuer.Start(t, env, ca, func(base string) string {
		return fmt.Sprintf(`
cluster: monitoring
endpoints:
- name: vault
  issuer: %s/vault
  audience: https://vault.kube-sts.test
  ttl: 1m
  keys: {managed: {secret: monitoring-keys, rotateEvery: 2h}}
  allow: [{namespace: monitored}]
  publish: [{directory: {path: %s}}]
`, base, published)
	}, "--review=watch") // the mode that exports the most: the watch's metrics too
	issuer := iss.Base + "/vault"
	for _, ns := range []string{"monitored", "unmonitored"} {
		pod := kube.Workload(ctx, t, env.Clientset, ns, "app", "app")
		r, err := iss.Exchange(ctx, issuer, kube.PodToken(ctx, t, env.Clientset, pod, issuer))
		if err != nil {
			t.Fatal(err)
		}
		if issued := r.Status == http.StatusOK; issued != (ns == "monitored") {
			t.Fatalf("exchange for a Pod of %s: %d; only namespace monitored is allowed", ns, r.Status)
		}
	}

	wh := stswebhook.Start(t, env, stswebhook.Options{Config: `
injectors:
- name: vault-sts
  exchangeURL: https://127.0.0.1:8443/vault/token
  image: local/sts-creds-sidecar:test
`, CA: ca, Host: "127.0.0.1"})
	stswebhook.Register(ctx, t, env, "kube-sts-monitoring", wh.URL, ca.CertPEM)
	for _, annotations := range []map[string]string{nil, {"tremolo.io/user": "root"}} {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "labeled-", Labels: map[string]string{"tremolo.io/vault-sts": "true"}, Annotations: annotations},
			Spec:       corev1.PodSpec{ServiceAccountName: "app", Containers: []corev1.Container{{Name: "app", Image: "local/app:test"}}},
		}
		_, _ = env.Clientset.CoreV1().Pods("monitored").Create(ctx, pod, metav1.CreateOptions{})
	}

	names := map[string]bool{}
	deadline := time.Now().Add(time.Minute)
	for _, url := range []string{iss.MetricsURL, wh.MetricsURL} {
		for {
			got := scrapeNames(t, url)
			// The webhook counts its admissions, and the issuer its publish,
			// a moment after the answers the test saw.
			if url == iss.MetricsURL && got["sts_issuer_publish_last_success_timestamp_seconds"] ||
				url == wh.MetricsURL && got["sts_webhook_admissions_total"] || time.Now().After(deadline) {
				for n := range got {
					names[n] = true
				}
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return names
}

// scrapeNames reads the metric names of a Prometheus text exposition.
func scrapeNames(t *testing.T, url string) map[string]bool {
	t.Helper()
	samples, err := scrape.Samples(url)
	if err != nil {
		t.Fatal(err)
	}
	names := scrape.Names(samples)
	for n := range names {
		if strings.HasPrefix(n, "sts_") {
			return names
		}
	}
	t.Fatalf("%s exposes no sts_ metric", url)
	return nil
}
