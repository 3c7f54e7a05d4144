package scenario

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kube-sts/kube-sts/e2e/internal/flow"
	"github.com/kube-sts/kube-sts/e2e/internal/node"
	"github.com/kube-sts/kube-sts/e2e/internal/scenario"
	"github.com/kube-sts/kube-sts/shared/contract"
)

// stsRecorder answers AssumeRoleWithWebIdentity on loopback and records
// what it was sent. It is the test's recorder, not AWS: it proves what the
// AWS SDK sends, read from what the webhook put into the Pod, and nothing
// about AWS itself.
type stsRecorder struct {
	*httptest.Server
	mu    sync.Mutex
	calls []stsCall
}

type stsCall struct {
	RoleARN, Token string
}

func newSTSRecorder() *stsRecorder {
	r := &stsRecorder{}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	return r
}

func (r *stsRecorder) serve(w http.ResponseWriter, req *http.Request) {
	if err := req.ParseForm(); err != nil || req.Form.Get("Action") != "AssumeRoleWithWebIdentity" {
		http.Error(w, "<ErrorResponse><Error><Code>InvalidAction</Code></Error></ErrorResponse>", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	n := len(r.calls)
	r.calls = append(r.calls, stsCall{RoleARN: req.Form.Get("RoleArn"), Token: req.Form.Get("WebIdentityToken")})
	r.mu.Unlock()
	// Short-lived credentials, so that the SDK assumes the role again (and
	// reads the token file again) every few seconds.
	w.Header().Set("Content-Type", "text/xml")
	fmt.Fprintf(w, `<AssumeRoleWithWebIdentityResponse>
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <AccessKeyId>ASIARECORDER%04d</AccessKeyId>
      <SecretAccessKey>recorder-secret</SecretAccessKey>
      <SessionToken>recorder-session</SessionToken>
      <Expiration>%s</Expiration>
    </Credentials>
    <AssumedRoleUser><Arn>%s/recorded</Arn><AssumedRoleId>AROARECORDER:recorded</AssumedRoleId></AssumedRoleUser>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>recorder-%d</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>`, n, time.Now().Add(10*time.Second).UTC().Format(time.RFC3339), req.Form.Get("RoleArn"), n)
}

func (r *stsRecorder) snapshot() []stsCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]stsCall(nil), r.calls...)
}

// testAWSSDK: a Pod labeled for the aws-role injector runs an application
// that uses the AWS SDK for Go v2's default credential chain. The webhook
// sets AWS_WEB_IDENTITY_TOKEN_FILE (/tokens/token.jwt) and AWS_ROLE_ARN (the
// Pod's tremolo.io/aws-role annotation); the test adds only where STS is
// (AWS_ENDPOINT_URL_STS, its recorder) and AWS_REGION. The SDK must send our
// token, as the file holds it, and read the file again after the sidecar
// refreshed it.
func testAWSSDK(ctx context.Context, t *testing.T, s *scenario.Stack) {
	rec := newSTSRecorder()
	defer rec.Close()
	const role = "arn:aws:iam::111122223333:role/payments"
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: scenario.Namespace, Name: "aws-sdk",
			Labels: map[string]string{contract.Prefix + scenario.AWSInjector: "true"},
			// The application reads the token itself (no Vault agent in
			// between): the token file's group is the application's.
			Annotations: map[string]string{contract.Prefix + scenario.AWSInjector: role, contract.Prefix + "group": "65532"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: scenario.ServiceAccount, NodeName: node.Name, HostNetwork: true,
			Containers: []corev1.Container{{Name: "app", Image: node.AppImage, ImagePullPolicy: corev1.PullNever, Args: []string{"aws", "1s"},
				SecurityContext: &corev1.SecurityContext{RunAsUser: ptr.To[int64](65532), RunAsGroup: ptr.To[int64](65532)},
				Env:             []corev1.EnvVar{{Name: "AWS_ENDPOINT_URL_STS", Value: rec.URL}, {Name: "AWS_REGION", Value: "us-east-1"}}}},
		},
	}
	p, err := s.Env.Clientset.CoreV1().Pods(scenario.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	injected := map[string]string{}
	for _, e := range p.Spec.Containers[0].Env {
		injected[e.Name] = e.Value
	}
	if injected["AWS_WEB_IDENTITY_TOKEN_FILE"] != contract.TokenPath || injected["AWS_ROLE_ARN"] != role {
		t.Fatalf("the webhook injected %v; want AWS_WEB_IDENTITY_TOKEN_FILE=%s and AWS_ROLE_ARN=%s", injected, contract.TokenPath, role)
	}

	seen := awaitSDKCalls(s, ctx, t, rec, role, p, "app", 2)
	log, _ := s.Node.ContainerLog(p, "app")
	if !strings.Contains(log, "aws credentials: key ASIARECORDER") || !strings.Contains(log, "source WebIdentityCredentials") {
		t.Errorf("the app did not report credentials from the web identity provider:\n%s", flow.Tail(log, 2000))
	}
	t.Logf("the SDK assumed %s %d times with %d of our tokens (jti %v)", role, len(rec.snapshot()), len(seen), seen)
	if err := s.Env.Clientset.CoreV1().Pods(scenario.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Error(err)
	}
}

// awaitSDKCalls waits until the recorder has seen want distinct tokens from
// the AWS SDK in p's container, each verified against the aws endpoint's
// JWKS, and returns their ids.
func awaitSDKCalls(s *scenario.Stack, ctx context.Context, t *testing.T, rec *stsRecorder, role string, p *corev1.Pod, container string, want int) []string {
	t.Helper()
	jwksRaw, err := s.Issuer.JWKS(ctx, s.Issuer.Base+"/aws")
	if err != nil {
		t.Fatal(err)
	}
	var jwks jose.JSONWebKeySet
	if err := json.Unmarshal(jwksRaw, &jwks); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	var seen []string
	for {
		seen = seen[:0]
		distinct := map[string]bool{}
		for _, c := range rec.snapshot() {
			if c.RoleARN != role {
				t.Fatalf("the SDK assumed %q, not the Pod's annotation %q", c.RoleARN, role)
			}
			claims := verifyAWSToken(t, c.Token, jwks, s.Issuer.Base+"/aws")
			if !distinct[claims.ID] {
				distinct[claims.ID] = true
				seen = append(seen, claims.ID)
			}
		}
		if len(seen) >= want {
			return seen
		}
		if time.Now().After(deadline) {
			log, _ := s.Node.ContainerLog(p, container)
			sidecar, _ := s.Node.ContainerLog(p, contract.ContainerName)
			cur, _ := s.Env.Clientset.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
			t.Fatalf("the recorder saw %d calls with %d distinct tokens in 3m; want %d; %s log:\n%s\nsidecar log:\n%s\nPod status: %+v",
				len(rec.snapshot()), len(seen), want, container, flow.Tail(log, 3000), flow.Tail(sidecar, 3000), cur.Status)
		}
		time.Sleep(2 * time.Second)
	}
}

// testTwoRelyingParties: the reference Pod, also labeled for the aws-role
// injector, with a second container using the AWS SDK. One sidecar keeps
// both tokens: Vault's agent logs in with /tokens/token.jwt and renders the
// secret; the SDK assumes the role with /tokens/aws-role.jwt, the aws
// endpoint's token. Vault's init container starts only after both tokens
// are on disk. The aws-role injector targets the aws container only, so
// Vault's agent (and the test app) get a token volume of their own that
// holds Vault's token and not the AWS one.
func testTwoRelyingParties(ctx context.Context, t *testing.T, s *scenario.Stack) {
	rec := newSTSRecorder()
	defer rec.Close()
	const role = "arn:aws:iam::111122223333:role/reports"
	pod := s.ReferencePod(scenario.Namespace, "two-parties", true)
	pod.Labels[contract.Prefix+scenario.AWSInjector] = "true"
	pod.Annotations[contract.Prefix+scenario.AWSInjector] = role
	// The token files belong to uid 100 (Vault's agent) and the Pod's
	// tremolo.io/group 1000: the SDK's container reads them through that group.
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "aws", Image: node.AppImage, ImagePullPolicy: corev1.PullNever, Args: []string{"aws", "1s"},
		SecurityContext: &corev1.SecurityContext{RunAsUser: ptr.To[int64](65532), RunAsGroup: ptr.To[int64](1000)},
		Env:             []corev1.EnvVar{{Name: "AWS_ENDPOINT_URL_STS", Value: rec.URL}, {Name: "AWS_REGION", Value: "us-east-1"}}})
	p, err := s.Env.Clientset.CoreV1().Pods(scenario.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var sidecars []string
	for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		if strings.HasPrefix(c.Name, contract.ContainerName) {
			sidecars = append(sidecars, c.Name)
		}
	}
	if len(sidecars) != 1 || p.Annotations[contract.InjectedAnnotation] != "vault-sts,"+scenario.AWSInjector {
		t.Fatalf("sidecars %v, %s=%q; want one sidecar for vault-sts,%s", sidecars, contract.InjectedAnnotation, p.Annotations[contract.InjectedAnnotation], scenario.AWSInjector)
	}
	awsFile := contract.FurtherTokenPath(scenario.AWSInjector)
	for _, c := range p.Spec.Containers {
		if c.Name == "aws" && (envOf(c, "AWS_WEB_IDENTITY_TOKEN_FILE") != awsFile || envOf(c, "VAULT_TOKEN_FILE") != contract.TokenPath) {
			t.Fatalf("aws container env %v; want AWS_WEB_IDENTITY_TOKEN_FILE=%s and VAULT_TOKEN_FILE=%s", c.Env, awsFile, contract.TokenPath)
		}
	}

	waitForSecret(s, ctx, t, p)
	seen := awaitSDKCalls(s, ctx, t, rec, role, p, "aws", 1)

	p, err = s.Env.Clientset.CoreV1().Pods(scenario.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sidecarLog, _ := s.Node.ContainerLog(p, contract.ContainerName)
	vaultFirst, awsFirst := firstRefreshOf(t, sidecarLog, contract.TokenPath), firstRefreshOf(t, sidecarLog, awsFile)
	for _, st := range p.Status.InitContainerStatuses {
		if st.Name != "vault-agent-init" {
			continue
		}
		if st.State.Terminated == nil {
			t.Fatalf("vault-agent-init status %+v", st)
		}
		started := st.State.Terminated.StartedAt.Time
		if started.Before(vaultFirst.Truncate(time.Second)) || started.Before(awsFirst.Truncate(time.Second)) {
			t.Fatalf("vault-agent-init started at %v, before both tokens were on disk (%v, %v)", started, vaultFirst, awsFirst)
		}
	}
	// What each container mounts at /tokens, and what is in those volumes
	// on the node: Vault's containers cannot open the AWS token.
	mounts := map[string]string{}
	for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		for _, m := range c.VolumeMounts {
			if m.MountPath == contract.MountPath {
				mounts[c.Name] = m.Name
			}
		}
	}
	for c, want := range map[string]string{"vault-agent-init": contract.GroupVolumeName(1), "vault-agent": contract.GroupVolumeName(1), flow.AppContainer: contract.GroupVolumeName(1), "aws": contract.VolumeName} {
		if mounts[c] != want {
			t.Fatalf("container %s mounts %q at %s, want %q (all: %v)", c, mounts[c], contract.MountPath, want, mounts)
		}
	}
	const emptyDir = "kubernetes.io~empty-dir"
	if _, err := s.Node.ReadPodFile(p, emptyDir, contract.GroupVolumeName(1), filepath.Base(awsFile)); !os.IsNotExist(err) {
		t.Fatalf("Vault's containers' token volume holds %s (err %v)", filepath.Base(awsFile), err)
	}
	vaultCopy := s.Node.PodFile(t, p, emptyDir, contract.GroupVolumeName(1), contract.TokenFileName)
	if tok := s.Node.PodFile(t, p, emptyDir, contract.VolumeName, contract.TokenFileName); vaultCopy == "" || tok == "" {
		t.Fatal("no Vault token in the volumes")
	}
	if s.Node.PodFile(t, p, emptyDir, contract.VolumeName, filepath.Base(awsFile)) == "" {
		t.Fatal("the aws container's volume holds no AWS token")
	}
	t.Logf("one sidecar, two relying parties: first tokens at %v (vault) and %v (aws); Vault's secret rendered; the SDK assumed %s with %d of the aws endpoint's tokens; vault-agent mounts %s, which holds %s and not %s",
		vaultFirst.Format(time.RFC3339Nano), awsFirst.Format(time.RFC3339Nano), role, len(seen), mounts["vault-agent"], contract.TokenFileName, filepath.Base(awsFile))
	// The Pod stays: the log check that follows reads its sidecar's log.
}

func envOf(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// verifyAWSToken checks a token the SDK sent: signed by the aws endpoint's
// key, for its issuer and AWS's audience, for the scenario's scenario.ServiceAccount.
func verifyAWSToken(t *testing.T, raw string, jwks jose.JSONWebKeySet, issuer string) jwt.Claims {
	t.Helper()
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA})
	if err != nil {
		t.Fatalf("the SDK sent something that is not our JWT: %v", err)
	}
	var c jwt.Claims
	if err := tok.Claims(jwks, &c); err != nil {
		t.Fatalf("the SDK sent a token that the aws endpoint's JWKS does not verify: %v", err)
	}
	want := jwt.Expected{Issuer: issuer, AnyAudience: jwt.Audience{scenario.AWSAudience}, Subject: scenario.Cluster + ":" + scenario.Namespace + ":" + scenario.ServiceAccount}
	if err := c.ValidateWithLeeway(want, time.Minute); err != nil {
		t.Fatalf("token claims: %v", err)
	}
	return c
}
