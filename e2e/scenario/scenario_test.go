package scenario

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/flow"
	"github.com/kube-sts/kube-sts/e2e/internal/scenario"
	"github.com/kube-sts/kube-sts/shared/contract"
)

// A real node needs what envtest turns off: the scenario.ServiceAccount admission
// plugin mounts API credentials into Pods (Vault's injector relies on it).
var cp = &controlplane.Harness{ExtraAPIServerArgs: map[string][]string{"disable-admission-plugins": nil}}

func TestMain(m *testing.M) { os.Exit(cp.Main(m)) }

func TestReferenceScenario(t *testing.T) {
	env := cp.Require(t)
	s := scenario.Up(t, cp, env, t.Logf)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pods := env.Clientset.CoreV1()

	for _, tc := range []struct {
		name          string
		withJSONPatch bool
	}{
		{"reference-as-written", true},
		{"without-json-patch", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() && !tc.withJSONPatch {
				t.Skip("-short: the reference Pod as written covers the flow; this variant only drops its json-patch annotations")
			}
			in := s.ReferencePod(scenario.Namespace, tc.name, tc.withJSONPatch)
			pod, err := pods.Pods(scenario.Namespace).Create(ctx, in, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			if got := pod.Spec.InitContainers[0].Name; got != contract.ContainerName {
				t.Fatalf("initContainers[0] = %s, want %s", got, contract.ContainerName)
			}
			waitForSecret(s, ctx, t, pod)
			// Vault's init container started only after the token existed.
			p, err := pods.Pods(scenario.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			sidecarLog, _ := s.Node.ContainerLog(p, contract.ContainerName)
			first := firstRefresh(t, sidecarLog)
			var vaultInit *corev1.ContainerStatus
			for i := range p.Status.InitContainerStatuses {
				if p.Status.InitContainerStatuses[i].Name == "vault-agent-init" {
					vaultInit = &p.Status.InitContainerStatuses[i]
				}
			}
			if vaultInit == nil || vaultInit.State.Terminated == nil {
				t.Fatalf("vault-agent-init status %+v", vaultInit)
			}
			if started := vaultInit.State.Terminated.StartedAt.Time; started.Before(first.Truncate(time.Second)) {
				t.Fatalf("vault-agent-init started at %v, before the first token (%v)", started, first)
			}
			t.Logf("%s: first STS token at %v, vault-agent-init started %v", tc.name, first.Format(time.RFC3339Nano), vaultInit.State.Terminated.StartedAt.Time.Format(time.RFC3339))
		})
	}

	// Vault's agent re-authenticates with fresh STS tokens: its Vault token
	// lives 20s at most, the STS token 1m, refreshed every 30s. Vault's
	// default remove_jwt_after_reading deletes the file each time; the
	// sidecar puts it back.
	t.Run("agent logs in again across STS refreshes", func(t *testing.T) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: scenario.Namespace, Name: "reference-as-written"}}
		p, err := pods.Pods(scenario.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(3 * time.Minute)
		for {
			agent, _ := s.Node.ContainerLog(p, "vault-agent")
			sidecar, _ := s.Node.ContainerLog(p, contract.ContainerName)
			logins := strings.Count(agent, "authentication successful")
			refreshes := strings.Count(sidecar, `"token refreshed"`)
			if logins >= 3 && refreshes >= 3 {
				t.Logf("%d agent logins across %d STS tokens", logins, refreshes)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d agent logins across %d STS tokens after 3m; agent log:\n%s", logins, refreshes, flow.Tail(agent, 3000))
			}
			time.Sleep(2 * time.Second)
		}
		if log, _ := s.Node.ContainerLog(p, "test"); !strings.Contains(log, `MY_SECRET_PASSWORD="`+scenario.Password+`"`) {
			t.Fatal("the app lost its secret")
		}
	})

	t.Run("another namespace gets a token but not test-vault's secret", func(t *testing.T) {
		p, err := pods.Pods("other-team").Create(ctx, s.ReferencePod("other-team", "intruder", false), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Minute)
		for {
			sidecar, _ := s.Node.ContainerLog(p, contract.ContainerName)
			agentInit, _ := s.Node.ContainerLog(p, "vault-agent-init")
			if strings.Contains(sidecar, `"token refreshed"`) && strings.Contains(agentInit, "permission denied") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("want a token and a refusal from Vault; sidecar:\n%s\nagent-init:\n%s", flow.Tail(sidecar, 3000), flow.Tail(agentInit, 3000))
			}
			time.Sleep(time.Second)
		}
		if log, _ := s.Node.ContainerLog(p, "test"); strings.Contains(log, scenario.Password) {
			t.Fatal("another namespace read test-vault's secret")
		}
	})

	var leaked []string
	t.Run("a deleted pod's credentials die with it", func(t *testing.T) {
		p, err := pods.Pods(scenario.Namespace).Get(ctx, "without-json-patch", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// What an attacker copies out of the Pod: its projected scenario.ServiceAccount token and its STS token.
		saToken := s.Node.PodFile(t, p, "kubernetes.io~projected", contract.SubjectVolumeName, contract.SubjectTokenFileName)
		stsToken := waitPodFile(s, t, p, "kubernetes.io~empty-dir", contract.VolumeName, contract.TokenFileName)
		leaked = append(leaked, saToken, stsToken)
		if res, err := s.Issuer.Exchange(ctx, s.IssuerURL, saToken); err != nil || res.Status != 200 {
			t.Fatalf("exchange before delete: %v %+v", err, res)
		}
		if err := pods.Pods(scenario.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		deleted := time.Now()
		for {
			res, err := s.Issuer.Exchange(ctx, s.IssuerURL, saToken)
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != 200 {
				body, _ := json.Marshal(res.Error)
				if res.Status != 400 || !flow.PodGoneOrTerminating(string(body)) {
					t.Fatalf("the copied scenario.ServiceAccount token was refused, but not by the live Pod check: %d %s", res.Status, body)
				}
				t.Logf("the copied scenario.ServiceAccount token is refused %v after the delete: %s", time.Since(deleted).Round(time.Millisecond), res.Error.Description)
				break
			}
			if time.Since(deleted) > flow.DeletedPodBound {
				t.Fatalf("the deleted pod's scenario.ServiceAccount token is still exchanged %v after the delete", time.Since(deleted))
			}
			time.Sleep(250 * time.Millisecond) // under the per-token limit of 5 a second
		}
		// The STS token taken before works in Vault until it expires, then never again.
		claims := mustClaims(t, stsToken)
		exp := time.Unix(int64(claims["exp"].(float64)), 0)
		if time.Now().Before(exp) {
			if out, err := s.VaultLogin(stsToken); err != nil {
				t.Fatalf("the STS token should still work before it expires: %v\n%s", err, out)
			}
		}
		// The role allows 5s of clock skew and no other leeway.
		time.Sleep(time.Until(exp) + 7*time.Second)
		if out, err := s.VaultLogin(stsToken); err == nil {
			t.Fatalf("Vault accepted an expired STS token of a deleted pod:\n%s", out)
		}
	})

	t.Run("keys rotated during the run; Vault keeps accepting new tokens", func(t *testing.T) {
		// Keys rotate every 40s (stack.go); wait for the second change rather
		// than depend on how long the cases above happened to take.
		deadline := time.Now().Add(2 * time.Minute)
		for strings.Count(string(s.Issuer.Log()), `"signing key changed"`) < 2 {
			if time.Now().After(deadline) {
				t.Fatalf("the signing key changed %d times; want at least 2 within 2 minutes", strings.Count(string(s.Issuer.Log()), `"signing key changed"`))
			}
			time.Sleep(time.Second)
		}
		p, err := pods.Pods(scenario.Namespace).Get(ctx, "reference-as-written", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		saToken := s.Node.PodFile(t, p, "kubernetes.io~projected", contract.SubjectVolumeName, contract.SubjectTokenFileName)
		res, err := s.Issuer.Exchange(ctx, s.IssuerURL, saToken)
		if err != nil || res.Status != 200 {
			t.Fatalf("exchange: %v %+v", err, res)
		}
		leaked = append(leaked, saToken, res.Response.AccessToken)
		if out, err := s.VaultLogin(res.Response.AccessToken); err != nil {
			t.Fatalf("Vault refused a token signed with the rotated key: %v\n%s", err, out)
		}
		if log, _ := s.Node.ContainerLog(p, "test"); !strings.Contains(log, `MY_SECRET_PASSWORD="`+scenario.Password+`"`) {
			t.Fatal("the app lost its secret")
		}
	})

	t.Run("the AWS SDK's web identity provider reads what the webhook hands it", func(t *testing.T) {
		testAWSSDK(ctx, t, s)
	})

	t.Run("one Pod, two relying parties: Vault's agent and the AWS SDK", func(t *testing.T) {
		testTwoRelyingParties(ctx, t, s)
	})

	t.Run("kubectl describe pod says why a token is missing", func(t *testing.T) {
		testDescribeSaysWhy(ctx, t, s)
	})

	t.Run("no token in any log of ours", func(t *testing.T) {
		logs := map[string]string{"sts-issuer": string(s.Issuer.Log()), "sts-webhook": string(s.Webhook.Log())}
		for _, name := range []string{"reference-as-written", "intruder", "two-parties"} {
			ns := scenario.Namespace
			if name == "intruder" {
				ns = "other-team"
			}
			if p, err := pods.Pods(ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
				logs[name+"/sidecar"], _ = s.Node.ContainerLog(p, contract.ContainerName)
			}
		}
		for who, log := range logs {
			if log == "" {
				t.Errorf("no log from %s", who)
			}
			for _, tok := range leaked {
				for _, part := range strings.Split(tok, ".") {
					if len(part) > 20 && strings.Contains(log, part) {
						t.Fatalf("a token appears in the log of %s", who)
					}
				}
			}
		}
	})
}

func waitForSecret(s *scenario.Stack, ctx context.Context, t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if err := flow.WaitForSecret(ctx, s.Target(), pod, 3*time.Minute); err != nil {
		t.Fatalf("%v\nvault log:\n%s", err, flow.Tail(string(s.Vault.Log()), 3000))
	}
}

func waitPodFile(s *scenario.Stack, t *testing.T, p *corev1.Pod, plugin, volume, file string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if v, err := s.Node.ReadPodFile(p, plugin, volume, file); err == nil && v != "" {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s in volume %s", file, volume)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func mustClaims(t *testing.T, jwt string) map[string]any {
	t.Helper()
	c, err := scenario.Claims(jwt)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// firstRefresh is the time of the sidecar's first "token refreshed" line.
func firstRefresh(t *testing.T, log string) time.Time {
	t.Helper()
	return firstRefreshOf(t, log, "")
}

// firstRefreshOf is the time of the first "token refreshed" line about
// file (a sidecar keeping several tokens says which in token_file; "": any).
func firstRefreshOf(t *testing.T, log, file string) time.Time {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `"token refreshed"`) || (file != "" && !strings.Contains(line, `"token_file":"`+file+`"`)) {
			continue
		}
		i := strings.Index(line, `"ts":"`)
		if i < 0 {
			continue
		}
		ts := line[i+6:]
		ts = ts[:strings.IndexByte(ts, '"')]
		tm, err := time.Parse("2006-01-02T15:04:05.000Z0700", ts)
		if err != nil {
			t.Fatalf("parse %q: %v", ts, err)
		}
		return tm
	}
	t.Fatalf("no token refreshed line (file %q) in the sidecar log:\n%s", file, log)
	return time.Time{}
}
