//go:build demo

// Package demo is `make demo`: the reference scenario narrated for a
// newcomer, on a real node with real Vault. Built only with -tags demo.
package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/scenario"
	"github.com/kube-sts/kube-sts/shared/contract"
)

var cp = &controlplane.Harness{ExtraAPIServerArgs: map[string][]string{"disable-admission-plugins": nil}}

func TestMain(m *testing.M) { os.Exit(cp.Main(m)) }

func step(format string, args ...any) {
	fmt.Printf("\n\033[1m==> "+format+"\033[0m\n", args...)
}

func show(label, body string) {
	fmt.Printf("--- %s\n%s\n", label, strings.TrimRight(body, "\n"))
}

func TestDemo(t *testing.T) {
	env := cp.Require(t)
	step("kube-sts demo: a real kube-apiserver, kubelet and containerd, Vault and Vault's injector, all on 127.0.0.1")
	s := scenario.Up(t, cp, env, func(f string, a ...any) { step(f, a...) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pods := env.Clientset.CoreV1()

	step("Vault is configured as docs/relying-parties.md says: JWT auth trusting %s, role %q, a policy on the cluster and namespace claims, and a secret", s.IssuerURL, scenario.Role)
	show("vault read auth/jwt/role/"+scenario.Role, s.VaultCLI(t, "", "read", "auth/jwt/role/"+scenario.Role))

	in := s.ReferencePod(scenario.Namespace, "test-vault-vault-watch", false)
	step("submitting the reference Pod: label tremolo.io/vault-sts=true plus Vault's usual annotations (no json-patch annotations needed)")
	y, _ := yaml.Marshal(in)
	show("the Pod as submitted", string(y))
	pod, err := pods.Pods(scenario.Namespace).Create(ctx, in, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	step("the Pod as admitted: our webhook and Vault's injector both mutated it")
	var b strings.Builder
	for _, c := range pod.Spec.InitContainers {
		rp := ""
		if c.RestartPolicy != nil {
			rp = " (native sidecar, restartPolicy " + string(*c.RestartPolicy) + ", postStart: " + strings.Join(c.Lifecycle.PostStart.Exec.Command, " ") + ")"
		}
		fmt.Fprintf(&b, "initContainer %-20s %s%s\n", c.Name, c.Image, rp)
	}
	for _, c := range pod.Spec.Containers {
		fmt.Fprintf(&b, "container     %-20s %s  mounts /tokens: %v\n", c.Name, c.Image, mountsTokens(c))
	}
	for _, v := range pod.Spec.Volumes {
		if v.Name == contract.SubjectVolumeName {
			fmt.Fprintf(&b, "volume %s: projected ServiceAccount token, audience %s, %ds\n", v.Name, v.Projected.Sources[0].ServiceAccountToken.Audience, *v.Projected.Sources[0].ServiceAccountToken.ExpirationSeconds)
		}
		if v.Name == contract.VolumeName {
			fmt.Fprintf(&b, "volume %s: emptyDir in memory at %s\n", v.Name, contract.MountPath)
		}
	}
	show("injected", b.String())

	step("the sidecar exchanges the projected token at the issuer")
	sidecar := waitLog(t, s, pod, contract.ContainerName, `"token refreshed"`)
	show("sts-creds-sidecar log", grepLines(sidecar, `"token refreshed"`, 1))
	tok := waitFile(t, s, pod)
	claims, _ := scenario.Claims(tok)
	cj, _ := json.MarshalIndent(claims, "", "  ")
	show("claims of the minted token (/tokens/token.jwt)", string(cj))

	step("Vault's agent logs in with that token")
	agent := waitLog(t, s, pod, "vault-agent-init", "authentication successful")
	show("vault-agent-init log", grepLines(agent, "authentication successful", 1))

	step("the application reads the secret Vault's agent rendered")
	app := waitLog(t, s, pod, "test", "MY_SECRET_PASSWORD")
	show("application log", grepLines(app, "MY_SECRET_PASSWORD", 1))

	saToken := s.Node.PodFile(t, pod, "kubernetes.io~projected", contract.SubjectVolumeName, contract.SubjectTokenFileName)
	step("deleting the Pod; then presenting a copy of its ServiceAccount token, as an attacker who stole it would")
	if err := pods.Pods(scenario.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Issuer.Exchange(ctx, s.IssuerURL, saToken)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status == 200 {
		t.Fatal("the deleted Pod's token was exchanged")
	}
	show("the issuer's answer", fmt.Sprintf("HTTP %d %s: %s", res.Status, res.Error.Code, res.Error.Description))
	step("done; stopping everything. The logs go with it: run `KUBE_STS_KEEP_NODE_LOGS=1 make demo` to keep the node's (containerd, kubelet, every container) in %s", s.Node.Dir)
}

func mountsTokens(c corev1.Container) bool {
	for _, m := range c.VolumeMounts {
		if m.MountPath == contract.MountPath {
			return true
		}
	}
	return false
}

func waitLog(t *testing.T, s *scenario.Stack, pod *corev1.Pod, container, want string) string {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		log, _ := s.Node.ContainerLog(pod, container)
		if strings.Contains(log, want) {
			return log
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never logged %q:\n%s", container, want, log)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func waitFile(t *testing.T, s *scenario.Stack, pod *corev1.Pod) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if v, err := s.Node.ReadPodFile(pod, "kubernetes.io~empty-dir", contract.VolumeName, contract.TokenFileName); err == nil && v != "" {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatal("no token file")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func grepLines(log, want string, n int) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, want) {
			out = append(out, l)
			if len(out) == n {
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
