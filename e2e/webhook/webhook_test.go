// Package webhook tests sts-webhook as a black box on the real API server,
// registered with the shipped manifest: labeled Pods are stored mutated and
// valid, others untouched, bad annotations refused with the message, and a
// second webhook's containers (Vault's injector, simulated) end up mounting
// /tokens behind our sidecar.
package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/scrape"
	"github.com/kube-sts/kube-sts/e2e/internal/stswebhook"
	"github.com/kube-sts/kube-sts/e2e/internal/testca"
	"github.com/kube-sts/kube-sts/shared/contract"
)

var cp = controlplane.New()

func TestMain(m *testing.M) { os.Exit(cp.Main(m)) }

const webhookConfig = `
injectors:
- name: vault-sts
  exchangeURL: https://127.0.0.1:8443/vault/token
  image: local/sts-creds-sidecar:test
  tokenPathEnv: VAULT_TOKEN_FILE
  valueEnv: VAULT_TOKEN_ENABLED
- name: aws-role
  exchangeURL: https://127.0.0.1:8443/aws/token
  image: local/sts-creds-sidecar:test
  tokenPathEnv: AWS_WEB_IDENTITY_TOKEN_FILE
  valueEnv: AWS_ROLE_ARN
`

func labeledPod(ns, name string, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"tremolo.io/vault-sts": "true"}, Annotations: annotations},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "test", Image: "local/app:test"}},
		},
	}
}

func ensureNamespace(ctx context.Context, t *testing.T, env *controlplane.Env, ns string) {
	t.Helper()
	_, err := env.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	// Pods need their ServiceAccount; no controller-manager makes "default" here.
	_, err = env.Clientset.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
}

func TestWebhook(t *testing.T) {
	env := cp.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ca, err := testca.New("webhook")
	if err != nil {
		t.Fatal(err)
	}
	wh := stswebhook.Start(t, env, stswebhook.Options{Config: webhookConfig, CA: ca, Host: "127.0.0.1"})
	stswebhook.Register(ctx, t, env, "kube-sts", wh.URL, ca.CertPEM)
	for _, ns := range []string{"test-vault", "kube-system"} {
		ensureNamespace(ctx, t, env, ns)
	}
	pods := env.Clientset.CoreV1()

	t.Run("labeled pod stored mutated, native sidecar first", func(t *testing.T) {
		p, err := pods.Pods("test-vault").Create(ctx, labeledPod("test-vault", "labeled", map[string]string{"tremolo.io/vault-sts": "auth_jwt_a8470dce"}), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		if len(p.Spec.InitContainers) == 0 || p.Spec.InitContainers[0].Name != contract.ContainerName {
			t.Fatalf("initContainers = %v, want %s first", names(p.Spec.InitContainers), contract.ContainerName)
		}
		// v1.37 supports native sidecars, so auto mode picked them.
		if rp := p.Spec.InitContainers[0].RestartPolicy; rp == nil || *rp != corev1.ContainerRestartPolicyAlways {
			t.Fatal("the sidecar is not a native sidecar on a 1.37 API server")
		}
		if p.Annotations[contract.InjectedAnnotation] != "vault-sts" {
			t.Errorf("annotations %v", p.Annotations)
		}
		if !mounts(p.Spec.Containers[0]) || env0(p.Spec.Containers[0], "VAULT_TOKEN_ENABLED") != "auth_jwt_a8470dce" {
			t.Errorf("app container: mounts %v env %v", p.Spec.Containers[0].VolumeMounts, p.Spec.Containers[0].Env)
		}
	})

	t.Run("unlabeled pod untouched", func(t *testing.T) {
		in := labeledPod("test-vault", "unlabeled", nil)
		in.Labels = nil
		p, err := pods.Pods("test-vault").Create(ctx, in, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Spec.InitContainers) != 0 || len(p.Spec.Volumes) != 0 && p.Spec.Volumes[0].Name == contract.VolumeName {
			t.Fatalf("unlabeled pod was mutated: %v", names(p.Spec.InitContainers))
		}
	})

	t.Run("labeled pod in kube-system untouched", func(t *testing.T) {
		p, err := pods.Pods("kube-system").Create(ctx, labeledPod("kube-system", "system", nil), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Spec.InitContainers) != 0 {
			t.Fatalf("kube-system pod was mutated: %v", names(p.Spec.InitContainers))
		}
	})

	t.Run("bad annotations refused with the message", func(t *testing.T) {
		for value, want := range map[string]string{"vault": `annotation tremolo.io/user="vault" is not a number`, "-1": "is negative"} {
			_, err := pods.Pods("test-vault").Create(ctx, labeledPod("test-vault", "bad-"+strings.Trim(value, "-"), map[string]string{"tremolo.io/user": value}), metav1.CreateOptions{})
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("create with tremolo.io/user=%q: %v, want a refusal containing %q", value, err, want)
			}
		}
	})

	t.Run("kube-sts.io/ttl reaches the sidecar; a malformed one is refused", func(t *testing.T) {
		p, err := pods.Pods("test-vault").Create(ctx, labeledPod("test-vault", "short-lived", map[string]string{contract.AnnotationTTL: "10m"}), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		if got := env0(p.Spec.InitContainers[0], contract.EnvLifetime); got != "10m0s" {
			t.Errorf("sidecar %s = %q, want 10m0s", contract.EnvLifetime, got)
		}
		_, err = pods.Pods("test-vault").Create(ctx, labeledPod("test-vault", "bad-ttl", map[string]string{contract.AnnotationTTL: "ten minutes"}), metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), `annotation kube-sts.io/ttl="ten minutes" is not a duration such as 10m`) {
			t.Fatalf("create with kube-sts.io/ttl=\"ten minutes\": %v, want the webhook's refusal", err)
		}
	})

	t.Run("the reference's other annotations: its own token volume, non-root, skipped containers", func(t *testing.T) {
		in := labeledPod("test-vault", "own-volume", map[string]string{
			contract.AnnotationCreateVolume: "false", contract.AnnotationNonRoot: "true", contract.SkipContainersAnnotation: "shipper"})
		in.Spec.Containers = append(in.Spec.Containers, corev1.Container{Name: "shipper", Image: "local/shipper:test"})
		in.Spec.Volumes = []corev1.Volume{{Name: contract.VolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		p, err := pods.Pods("test-vault").Create(ctx, in, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		var own []corev1.Volume
		for _, v := range p.Spec.Volumes {
			if v.Name == contract.VolumeName {
				own = append(own, v)
			}
		}
		if len(own) != 1 || own[0].EmptyDir == nil || own[0].EmptyDir.Medium != "" {
			t.Errorf("token volumes %+v: want the Pod's own disk-backed emptyDir", own)
		}
		if !mounts(p.Spec.Containers[0]) || mounts(p.Spec.Containers[1]) {
			t.Errorf("mounts: test %v, shipper %v; want only test", mounts(p.Spec.Containers[0]), mounts(p.Spec.Containers[1]))
		}
		in = labeledPod("test-vault", "configmap-volume", map[string]string{contract.AnnotationCreateVolume: "false"})
		in.Spec.Volumes = []corev1.Volume{{Name: contract.VolumeName, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "x"}}}}}
		if _, err := pods.Pods("test-vault").Create(ctx, in, metav1.CreateOptions{}); err == nil || !strings.Contains(err.Error(), "must be writable by the sidecar") {
			t.Errorf("own configMap token volume: %v, want a refusal", err)
		}
	})

	// Registered as the chart does it, one webhook per injector: a Pod
	// labeled for both goes through both, and the second call finds the
	// first's work done.
	t.Run("two injectors: one sidecar keeping both tokens", func(t *testing.T) {
		stswebhook.Register(ctx, t, env, "kube-sts-aws", wh.URL, ca.CertPEM, "aws-role")
		const role = "arn:aws:iam::111122223333:role/payments"
		// Wait until the new registration is live: a Pod labeled only
		// aws-role is then mutated (the shipped registration does not match it).
		deadline := time.Now().Add(30 * time.Second)
		for i := 0; ; i++ {
			in := labeledPod("test-vault", fmt.Sprintf("aws-only-%d", i), map[string]string{"tremolo.io/aws-role": role})
			in.Labels = map[string]string{"tremolo.io/aws-role": "true"}
			p, err := pods.Pods("test-vault").Create(ctx, in, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Spec.InitContainers) > 0 {
				// Alone, aws-role is the Pod's first injector: /tokens/token.jwt.
				if env0(p.Spec.Containers[0], "AWS_WEB_IDENTITY_TOKEN_FILE") != contract.TokenPath || env0(p.Spec.Containers[0], "VAULT_TOKEN_FILE") != "" ||
					env0(p.Spec.InitContainers[0], contract.EnvTokens) != "" {
					t.Errorf("aws-role alone: app env %v", p.Spec.Containers[0].Env)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the aws-role registration did not take effect in 30s")
			}
			time.Sleep(200 * time.Millisecond)
		}
		calls := func() float64 {
			return metricValue(t, wh.MetricsURL, `sts_webhook_admissions_total{injector="vault-sts,aws-role",result="injected"}`)
		}
		before := calls()
		in := labeledPod("test-vault", "two-injectors", map[string]string{"tremolo.io/vault-sts": "auth_jwt_a8470dce", "tremolo.io/aws-role": role})
		in.Labels["tremolo.io/aws-role"] = "true"
		p, err := pods.Pods("test-vault").Create(ctx, in, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		if n := calls() - before; n < 2 {
			t.Errorf("the webhook was called %v times for the Pod; want once per registration entry (2)", n)
		}
		sidecars := 0
		for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
			if strings.HasPrefix(c.Name, contract.ContainerName) {
				sidecars++
			}
		}
		if sidecars != 1 || p.Spec.InitContainers[0].Name != contract.ContainerName {
			t.Fatalf("containers %v %v: want one native sidecar first", names(p.Spec.InitContainers), names(p.Spec.Containers))
		}
		if got := p.Annotations[contract.InjectedAnnotation]; got != "vault-sts,aws-role" {
			t.Errorf("%s = %q", contract.InjectedAnnotation, got)
		}
		app := p.Spec.Containers[0]
		want := map[string]string{"VAULT_TOKEN_FILE": contract.TokenPath, "VAULT_TOKEN_ENABLED": "auth_jwt_a8470dce",
			"AWS_WEB_IDENTITY_TOKEN_FILE": contract.FurtherTokenPath("aws-role"), "AWS_ROLE_ARN": role}
		for k, v := range want {
			if got := env0(app, k); got != v {
				t.Errorf("app env %s=%q, want %q", k, got, v)
			}
		}
		var further []contract.Token
		if err := json.Unmarshal([]byte(env0(p.Spec.InitContainers[0], contract.EnvTokens)), &further); err != nil || len(further) != 1 ||
			further[0].OutputFile != contract.FurtherTokenPath("aws-role") || further[0].ExchangeURL != "https://127.0.0.1:8443/aws/token" {
			t.Errorf("sidecar %s: %+v (%v)", contract.EnvTokens, further, err)
		}
		audiences := map[string]string{}
		for _, v := range p.Spec.Volumes {
			if v.Name == contract.SubjectVolumeName {
				for _, src := range v.Projected.Sources {
					audiences[src.ServiceAccountToken.Path] = src.ServiceAccountToken.Audience
				}
			}
		}
		if audiences["token"] != "https://127.0.0.1:8443/vault" || audiences["aws-role.token"] != "https://127.0.0.1:8443/aws" {
			t.Errorf("projected ServiceAccount tokens by path and audience: %v", audiences)
		}

	})

	t.Run("vault-style webhook: its containers mount /tokens, our sidecar first", func(t *testing.T) {
		vault := startFakeVaultInjector(t, ca)
		cfg := &admissionregv1.MutatingWebhookConfiguration{
			// Sorted after "kube-sts", like vault-agent-injector-cfg: it runs after us,
			// and the API server re-invokes us because of it.
			ObjectMeta: metav1.ObjectMeta{Name: "vault-agent-injector-cfg"},
			Webhooks: []admissionregv1.MutatingWebhook{{
				Name:                    "vault.hashicorp.com",
				AdmissionReviewVersions: []string{"v1"},
				ClientConfig:            admissionregv1.WebhookClientConfig{URL: ptr.To(vault), CABundle: ca.CertPEM},
				Rules: []admissionregv1.RuleWithOperations{{Operations: []admissionregv1.OperationType{admissionregv1.Create},
					Rule: admissionregv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
				ObjectSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"fake-vault": "true"}},
				SideEffects:    ptr.To(admissionregv1.SideEffectClassNone),
				FailurePolicy:  ptr.To(admissionregv1.Fail),
			}},
		}
		if _, err := env.Clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, cfg, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer env.Clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), cfg.Name, metav1.DeleteOptions{})
		in := labeledPod("test-vault", "with-vault", nil)
		in.Labels["fake-vault"] = "true"
		var p *corev1.Pod
		// The new configuration takes a moment to reach the admission chain.
		deadline := time.Now().Add(20 * time.Second)
		for {
			p, err = pods.Pods("test-vault").Create(ctx, in, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(names(p.Spec.InitContainers)) > 1 || time.Now().After(deadline) {
				break
			}
			_ = pods.Pods("test-vault").Delete(ctx, in.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
			time.Sleep(200 * time.Millisecond)
		}
		if got := names(p.Spec.InitContainers); len(got) != 2 || got[0] != contract.ContainerName || got[1] != "vault-agent-init" {
			t.Fatalf("initContainers = %v, want [%s vault-agent-init]", got, contract.ContainerName)
		}
		for _, c := range append(p.Spec.InitContainers[1:], p.Spec.Containers...) {
			if !mounts(c) {
				t.Errorf("container %s does not mount /tokens: %v", c.Name, c.VolumeMounts)
			}
		}
		if got := names(p.Spec.Containers); len(got) != 2 || got[1] != "vault-agent" {
			t.Fatalf("containers = %v", got)
		}
	})

	t.Run("metrics count admissions", func(t *testing.T) {
		resp, err := http.Get(wh.MetricsURL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, want := range []string{`sts_webhook_admissions_total{injector="vault-sts",result="injected"}`, `sts_webhook_admissions_total{injector="vault-sts",result="denied"}`} {
			if !strings.Contains(string(body), want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
}

// TestSelfManagedTLS: the webhook makes its own CA and certificate, keeps
// them in a Secret and writes the caBundle into its configuration; the API
// server then trusts it.
func TestSelfManagedTLS(t *testing.T) {
	env := cp.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ensureNamespace(ctx, t, env, "test-self")
	name := "kube-sts-self"
	// Registered first with no caBundle (and the port not known yet): the
	// webhook fills in the caBundle; the test points the URL at the process.
	stswebhook.Register(ctx, t, env, name, "https://localhost:1/mutate", nil)
	wh := stswebhook.Start(t, env, stswebhook.Options{Config: webhookConfig, Host: "localhost", ConfigName: name})
	if err := retryUpdate(ctx, env, name, func(cfg *admissionregv1.MutatingWebhookConfiguration) {
		for i := range cfg.Webhooks {
			cfg.Webhooks[i].ClientConfig.URL = ptr.To(wh.URL)
		}
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		cfg, err := env.Clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(cfg.Webhooks[0].ClientConfig.CABundle) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("caBundle not injected:\n%s", wh.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}
	sec, err := env.Clientset.CoreV1().Secrets(stswebhook.Namespace).Get(ctx, "sts-webhook-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the self-managed Secret: %v", err)
	}
	// Its CA lands next to the pair, for injectors whose caFile points there.
	caFile := filepath.Join(wh.Dir, stswebhook.SelfCertDir, "ca.crt")
	deadline = time.Now().Add(30 * time.Second)
	for {
		got, err := os.ReadFile(caFile)
		if err == nil && len(sec.Data["ca.crt"]) > 0 && bytes.Equal(got, sec.Data["ca.crt"]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not hold the Secret's ca.crt: %v", caFile, err)
		}
		time.Sleep(200 * time.Millisecond)
		if sec, err = env.Clientset.CoreV1().Secrets(stswebhook.Namespace).Get(ctx, "sts-webhook-tls", metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		p, err := env.Clientset.CoreV1().Pods("test-self").Create(ctx, labeledPod("test-self", "self", nil), metav1.CreateOptions{})
		if err == nil && len(p.Spec.InitContainers) > 0 && p.Spec.InitContainers[0].Name == contract.ContainerName {
			return
		}
		if err == nil {
			_ = env.Clientset.CoreV1().Pods("test-self").Delete(ctx, "self", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
		}
		if time.Now().After(deadline) {
			t.Fatalf("a labeled Pod was not mutated through the self-managed certificate: %v\n%s", err, wh.Log())
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// TestSelfManagedTLSTwoReplicas: the chart's default (tls.mode self, two
// replicas) starts two webhooks on one empty Secret at the same time. They
// must settle on one CA: the Secret's, in the caBundle, and the one each
// replica's serving certificate chains to; and each replica admits Pods.
func TestSelfManagedTLSTwoReplicas(t *testing.T) {
	env := cp.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Fresh names per run: the race is only there on an empty Secret.
	run := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	ns, name, secret := "test-self-two", "kube-sts-self-two-"+run, "sts-webhook-tls-two-"+run
	ensureNamespace(ctx, t, env, ns)
	t.Cleanup(func() {
		_ = env.Clientset.CoreV1().Secrets(stswebhook.Namespace).Delete(context.Background(), secret, metav1.DeleteOptions{})
	})
	stswebhook.Register(ctx, t, env, name, "https://localhost:1/mutate", nil)
	opts := stswebhook.Options{Config: webhookConfig, Host: "localhost", ConfigName: name, SelfSecret: secret, NoWait: true}
	replicas := []*stswebhook.Webhook{stswebhook.Start(t, env, opts), stswebhook.Start(t, env, opts)}
	for _, wh := range replicas {
		wh.WaitReady(t)
	}

	var pool *x509.CertPool
	deadline := time.Now().Add(60 * time.Second)
	for {
		sec, err := env.Clientset.CoreV1().Secrets(stswebhook.Namespace).Get(ctx, secret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := env.Clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ca := sec.Data["ca.crt"]
		settled := len(ca) > 0 && bytes.Equal(cfg.Webhooks[0].ClientConfig.CABundle, ca)
		for _, wh := range replicas {
			got, _ := os.ReadFile(filepath.Join(wh.Dir, stswebhook.SelfCertDir, "ca.crt"))
			settled = settled && bytes.Equal(got, ca)
		}
		if settled {
			pool = x509.NewCertPool()
			pool.AppendCertsFromPEM(ca)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replicas did not settle on one CA in 60s\n--- a:\n%s\n--- b:\n%s", replicas[0].Log(), replicas[1].Log())
		}
		time.Sleep(300 * time.Millisecond)
	}
	for i, wh := range replicas {
		addr := strings.TrimSuffix(strings.TrimPrefix(wh.URL, "https://"), "/mutate")
		// The served certificate may lag the Secret by a sync period.
		deadline := time.Now().Add(30 * time.Second)
		for {
			conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12})
			if err == nil {
				conn.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %d does not serve a certificate of the shared CA: %v", i, err)
			}
			time.Sleep(300 * time.Millisecond)
		}
		if err := retryUpdate(ctx, env, name, func(cfg *admissionregv1.MutatingWebhookConfiguration) {
			for j := range cfg.Webhooks {
				cfg.Webhooks[j].ClientConfig.URL = ptr.To(wh.URL)
			}
		}); err != nil {
			t.Fatal(err)
		}
		pod := fmt.Sprintf("through-replica-%d-%s", i, run)
		deadline = time.Now().Add(30 * time.Second)
		for {
			p, err := env.Clientset.CoreV1().Pods(ns).Create(ctx, labeledPod(ns, pod, nil), metav1.CreateOptions{})
			if err == nil && p.Annotations[contract.InjectedAnnotation] != "" {
				break
			}
			if err == nil {
				_ = env.Clientset.CoreV1().Pods(ns).Delete(ctx, pod, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %d did not mutate a labeled Pod: %v\n%s", i, err, wh.Log())
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
}

// retryUpdate updates a webhook configuration, retrying on conflicts with
// the webhook, which patches the same object.
func retryUpdate(ctx context.Context, env *controlplane.Env, name string, change func(*admissionregv1.MutatingWebhookConfiguration)) error {
	api := env.Clientset.AdmissionregistrationV1().MutatingWebhookConfigurations()
	var err error
	for range 20 {
		var cfg *admissionregv1.MutatingWebhookConfiguration
		if cfg, err = api.Get(ctx, name, metav1.GetOptions{}); err != nil {
			return err
		}
		change(cfg)
		if _, err = api.Update(ctx, cfg, metav1.UpdateOptions{}); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func names(cs []corev1.Container) []string {
	var n []string
	for _, c := range cs {
		n = append(n, c.Name)
	}
	return n
}

func mounts(c corev1.Container) bool {
	for _, m := range c.VolumeMounts {
		if m.Name == contract.VolumeName && m.MountPath == contract.MountPath && m.ReadOnly {
			return true
		}
	}
	return false
}

func env0(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// startFakeVaultInjector serves a webhook that does what Vault's injector
// does to a Pod's shape: prepend vault-agent-init, append vault-agent.
func startFakeVaultInjector(t *testing.T, ca *testca.CA) string {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile, err := ca.Serving(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		var pod corev1.Pod
		_ = json.Unmarshal(review.Request.Object.Raw, &pod)
		var patch []map[string]any
		if !strings.Contains(strings.Join(names(pod.Spec.InitContainers), ","), "vault-agent-init") {
			initC := map[string]any{"name": "vault-agent-init", "image": "local/vault:test"}
			if len(pod.Spec.InitContainers) == 0 {
				patch = append(patch, map[string]any{"op": "add", "path": "/spec/initContainers", "value": []any{initC}})
			} else {
				patch = append(patch, map[string]any{"op": "add", "path": "/spec/initContainers/0", "value": initC})
			}
			patch = append(patch, map[string]any{"op": "add", "path": "/spec/containers/-", "value": map[string]any{"name": "vault-agent", "image": "local/vault:test"}})
		}
		pt := admissionv1.PatchTypeJSONPatch
		raw, _ := json.Marshal(patch)
		resp := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true, Patch: raw, PatchType: &pt}}
		_ = json.NewEncoder(w).Encode(resp)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "https://" + l.Addr().String() + "/mutate"
}

// metricValue reads one sample (name with its labels, as exposed) from a
// metrics endpoint; 0 when it is not there yet.
func metricValue(t *testing.T, url, sample string) float64 {
	t.Helper()
	samples, err := scrape.Samples(url)
	if err != nil {
		t.Fatal(err)
	}
	return samples[sample]
}
