package scenario

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kube-sts/kube-sts/e2e/flow"
	"github.com/kube-sts/kube-sts/e2e/node"
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
func testAWSSDK(ctx context.Context, t *testing.T, s *Stack) {
	rec := newSTSRecorder()
	defer rec.Close()
	const role = "arn:aws:iam::111122223333:role/payments"
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: "aws-sdk",
			Labels: map[string]string{contract.Prefix + AWSInjector: "true"},
			// The application reads the token itself (no Vault agent in
			// between): the token file's group is the application's.
			Annotations: map[string]string{contract.Prefix + AWSInjector: role, contract.Prefix + "group": "65532"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: ServiceAccount, NodeName: node.Name, HostNetwork: true,
			Containers: []corev1.Container{{Name: "app", Image: node.AppImage, ImagePullPolicy: corev1.PullNever, Args: []string{"aws", "1s"},
				SecurityContext: &corev1.SecurityContext{RunAsUser: ptr.To[int64](65532), RunAsGroup: ptr.To[int64](65532)},
				Env:             []corev1.EnvVar{{Name: "AWS_ENDPOINT_URL_STS", Value: rec.URL}, {Name: "AWS_REGION", Value: "us-east-1"}}}},
		},
	}
	p, err := s.Env.Clientset.CoreV1().Pods(Namespace).Create(ctx, pod, metav1.CreateOptions{})
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
		if len(seen) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			log, _ := s.Node.ContainerLog(p, "app")
			sidecar, _ := s.Node.ContainerLog(p, contract.ContainerName)
			cur, _ := s.Env.Clientset.CoreV1().Pods(Namespace).Get(ctx, p.Name, metav1.GetOptions{})
			t.Fatalf("the recorder saw %d calls with %d distinct tokens in 3m; want the SDK to send the refreshed token too; app log:\n%s\nsidecar log:\n%s\nPod status: %+v",
				len(rec.snapshot()), len(seen), flow.Tail(log, 3000), flow.Tail(sidecar, 3000), cur.Status)
		}
		time.Sleep(2 * time.Second)
	}
	log, _ := s.Node.ContainerLog(p, "app")
	if !strings.Contains(log, "aws credentials: key ASIARECORDER") || !strings.Contains(log, "source WebIdentityCredentials") {
		t.Errorf("the app did not report credentials from the web identity provider:\n%s", flow.Tail(log, 2000))
	}
	t.Logf("the SDK assumed %s %d times with %d of our tokens (jti %v)", role, len(rec.snapshot()), len(seen), seen)
	if err := s.Env.Clientset.CoreV1().Pods(Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Error(err)
	}
}

// verifyAWSToken checks a token the SDK sent: signed by the aws endpoint's
// key, for its issuer and AWS's audience, for the scenario's ServiceAccount.
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
	want := jwt.Expected{Issuer: issuer, AnyAudience: jwt.Audience{AWSAudience}, Subject: Cluster + ":" + Namespace + ":" + ServiceAccount}
	if err := c.ValidateWithLeeway(want, time.Minute); err != nil {
		t.Fatalf("token claims: %v", err)
	}
	return c
}
