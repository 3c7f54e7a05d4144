package manifests

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/kube-sts/kube-sts/e2e/internal/quickstart"
)

// TestQuickStartMatchesChart keeps the README's quick start and the chart
// one story, as written (the blocks are read from the Markdown, not copied
// here): its values file passes the chart's schema and installs (dry run on
// the real API server); the Vault commands it shows are, line for line, what
// the chart's NOTES print for that install; and its Pod carries exactly the
// label and Vault annotations the NOTES name, with its secret under the path
// the policy allows.
func TestQuickStartMatchesChart(t *testing.T) {
	env := cp.Require(t)
	helm := tool(t, "helm")
	blocks, err := quickstart.FromREADME()
	if err != nil {
		t.Fatal(err)
	}
	block := func(name, heredoc string) string {
		t.Helper()
		b, err := quickstart.Text(blocks, name, heredoc)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	values := strings.ReplaceAll(block("values", "VALUES"), "REGISTRY", "reg.example")
	vaultBlock := block("vault", "")
	pod := block("pod", "POD")

	valuesFile := filepath.Join(t.TempDir(), "kube-sts-values.yaml")
	if err := os.WriteFile(valuesFile, []byte(values), 0o600); err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := env.KubeconfigFile(t.TempDir(), "helm-admin", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	// A release name of its own: other tests of this package leave the
	// cluster-scoped objects of a "kube-sts" release behind, which helm would
	// refuse to adopt. Nothing the README shows depends on the name.
	out := run(t, helm, "install", "quickstart", chartDir(), "--namespace", releaseNS,
		"--dry-run=server", "--kubeconfig", kubeconfig, "--values", valuesFile)
	i := bytes.Index(out, []byte("NOTES:"))
	if i < 0 {
		t.Fatalf("no NOTES in:\n%s", out)
	}
	notes := string(out[i:])

	// The Vault commands: the README's block is a run of the NOTES' lines.
	if !strings.Contains(notes, vaultBlock) {
		t.Errorf("the README's Vault commands are not what the NOTES print for its values.\nREADME:\n%s\nNOTES:\n%s", vaultBlock, notes)
	}

	// The Pod: its tremolo.io label and vault.hashicorp.com auth annotations
	// are lines of the NOTES (comments aside).
	noteLines := map[string]bool{}
	for _, l := range strings.Split(notes, "\n") {
		noteLines[strings.TrimSpace(l)] = true
	}
	comment := regexp.MustCompile(`\s+#.*$`)
	checked := 0
	for _, l := range strings.Split(pod, "\n") {
		l = strings.TrimSpace(comment.ReplaceAllString(l, ""))
		if strings.HasPrefix(l, "tremolo.io/") || regexp.MustCompile(`^vault\.hashicorp\.com/(agent-inject|auth-type|auth-path|role|auth-config-path):`).MatchString(l) {
			checked++
			if !noteLines[l] {
				t.Errorf("the README's Pod says %q; the NOTES do not", l)
			}
		}
	}
	if checked != 6 {
		t.Errorf("checked %d of the Pod's label and Vault auth annotations; want 6 (the README's Pod changed shape?)", checked)
	}

	// Its secret lives where the policy lets its namespace read.
	var p struct {
		Metadata struct {
			Namespace   string            `json:"namespace"`
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal([]byte(pod), &p); err != nil {
		t.Fatalf("the README's Pod: %v", err)
	}
	var v struct {
		Cluster string `json:"cluster"`
	}
	if err := yaml.Unmarshal([]byte(values), &v); err != nil {
		t.Fatal(err)
	}
	prefix := "secret/data/" + v.Cluster + "/" + p.Metadata.Namespace + "/"
	if s := p.Metadata.Annotations["vault.hashicorp.com/agent-inject-secret-config"]; !strings.HasPrefix(s, prefix) || !strings.Contains(block("secret", ""), "vault kv put "+strings.Replace(s, "secret/data/", "secret/", 1)+" ") {
		t.Errorf("the Pod reads %q; the policy allows %s*, and the README must put the secret there (vault kv put)", s, prefix)
	}
}
