// Package othercluster proves that another cluster's API server trusts
// kube-sts through its own structured authentication, with nothing of ours
// in it: cluster A runs sts-issuer; cluster B, a second real kube-apiserver
// with its own etcd, is configured with an AuthenticationConfiguration whose
// JWT authenticator names kube-sts's issuer URL, CA and audience, maps the
// username from sub (prefixed) and groups from cluster and namespace, and
// requires cluster to be ours. A Pod of cluster A then reads in B what B's
// RBAC grants and nothing else, without a kubeconfig.
package othercluster

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/kube"
	"github.com/kube-sts/kube-sts/e2e/internal/stsissuer"
	"github.com/kube-sts/kube-sts/e2e/internal/testca"
)

// Cluster A's control plane; B is started by the test.
var cp = controlplane.New()

func TestMain(m *testing.M) { os.Exit(cp.Main(m)) }

const (
	cluster   = "prod-east"
	audienceB = "https://cluster-b.kube-sts.test"
)

// issuerConfig: the endpoint B trusts, rotating its keys every 20 s, and
// another endpoint (another audience) whose tokens B must refuse.
func issuerConfig(base string) string {
	return fmt.Sprintf(`
cluster: %[2]s
jwksMaxAge: 1s
endpoints:
- name: cluster-b
  issuer: %[1]s/cluster-b
  audience: %[3]s
  ttl: 1m
  keys:
    managed: {secret: cluster-b-keys, rotateEvery: 20s, publishAhead: 5s, resync: 500ms, leeway: 6s}
  allow: [{namespace: "*"}]
- name: vault
  issuer: %[1]s/vault
  audience: https://vault.kube-sts.test
  ttl: 1m
  keys:
    managed: {secret: vault-keys}
  allow: [{namespace: "*"}]
`, base, cluster, audienceB)
}

// authenticationConfiguration is what the chart's NOTES print and docs/relying-parties.md's
// "Other clusters" section shows, for cluster B's
// kube-apiserver --authentication-config.
func authenticationConfiguration(issuerURL string, caPEM []byte) string {
	indented := "      " + strings.ReplaceAll(strings.TrimSpace(string(caPEM)), "\n", "\n      ")
	return fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
jwt:
- issuer:
    url: %s
    audiences: [%s]
    certificateAuthority: |
%s
  claimValidationRules:
  - claim: cluster
    requiredValue: %s
  claimMappings:
    username: {claim: sub, prefix: "kube-sts:"}
    groups: {expression: '["kube-sts:cluster:" + claims.cluster, "kube-sts:namespace:" + claims.cluster + ":" + claims.namespace]'}
  userValidationRules:
  - expression: "!user.username.startsWith('system:')"
    message: "kube-sts identities never use the system: prefix"
`, issuerURL, audienceB, indented, cluster)
}

func TestClusterBTrustsKubeSTS(t *testing.T) {
	envA := cp.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	ca, err := testca.New("othercluster")
	if err != nil {
		t.Fatal(err)
	}
	iss := stsissuer.Start(t, envA, ca, issuerConfig)
	issuerURL := iss.Base + "/cluster-b"

	dir := t.TempDir()
	authnFile := filepath.Join(dir, "authentication-config.yaml")
	if err := os.WriteFile(authnFile, []byte(authenticationConfiguration(issuerURL, ca.CertPEM)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Log("starting cluster B: its own kube-apiserver and etcd, trusting kube-sts through --authentication-config")
	envB, err := controlplane.Start(ctx, map[string][]string{"authentication-config": {authnFile}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = envB.Stop()
		envB.TidyLogs(t.Failed())
	})
	grantInB(ctx, t, envB.Clientset)

	// A Pod of cluster A, payments/api, exchanges its bound token.
	pod := kube.Workload(ctx, t, envA.Clientset, "payments", "api", "api-0")
	mint := func(endpoint string) string {
		t.Helper()
		r, err := iss.Exchange(ctx, iss.Base+"/"+endpoint, kube.PodToken(ctx, t, envA.Clientset, pod, iss.Base+"/"+endpoint))
		if err != nil || r.Status != http.StatusOK {
			t.Fatalf("exchange at %s: %v %+v", endpoint, err, r.Error)
		}
		return r.Response.AccessToken
	}
	token := mint("cluster-b")
	b := clientFor(t, envB.Config, token)

	t.Run("B sees the Pod as kube-sts:<cluster>:<namespace>:<serviceaccount> with cluster and namespace groups", func(t *testing.T) {
		review := waitReview(ctx, t, b)
		if want := "kube-sts:prod-east:payments:api"; review.Status.UserInfo.Username != want {
			t.Errorf("username %q, want %q", review.Status.UserInfo.Username, want)
		}
		for _, g := range []string{"kube-sts:cluster:prod-east", "kube-sts:namespace:prod-east:payments", "system:authenticated"} {
			if !slices.Contains(review.Status.UserInfo.Groups, g) {
				t.Errorf("groups %v lack %q", review.Status.UserInfo.Groups, g)
			}
		}
	})

	t.Run("B's RBAC grants what it grants and nothing more", func(t *testing.T) {
		if _, err := b.CoreV1().ConfigMaps("payments").List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("list configmaps in payments (granted): %v", err)
		}
		if _, err := b.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("list configmaps in default (not granted): %v, want Forbidden", err)
		}
		if _, err := b.CoreV1().Secrets("payments").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("list secrets in payments (not granted): %v, want Forbidden", err)
		}
	})

	t.Run("a token of another endpoint (another audience) is refused by B", func(t *testing.T) {
		other := clientFor(t, envB.Config, mint("vault"))
		if _, err := other.CoreV1().ConfigMaps("payments").List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
			t.Errorf("vault's token in B: %v, want Unauthorized", err)
		}
	})

	t.Run("a managed key rotation goes unnoticed by B (it fetches the JWKS again)", func(t *testing.T) {
		first := kid(t, token)
		fetchedBefore := jwksFetches(ctx, t, envB)["success"]
		deadline := time.Now().Add(90 * time.Second)
		var fresh string
		for {
			fresh = mint("cluster-b")
			if kid(t, fresh) != first {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the signing key did not change within 90 s (rotateEvery 20s)")
			}
			time.Sleep(2 * time.Second)
		}
		if _, err := clientFor(t, envB.Config, fresh).CoreV1().ConfigMaps("payments").List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("a token of the new key %s: %v", kid(t, fresh), err)
		}
		if _, err := b.CoreV1().ConfigMaps("payments").List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("the token of the previous key %s, still unexpired: %v", first, err)
		}
		fetches := jwksFetches(ctx, t, envB)
		if fetches["success"] <= fetchedBefore {
			t.Errorf("B's metrics show no successful JWKS fetch after the rotation: last success %v, before the rotation %v", fetches["success"], fetchedBefore)
		}
		t.Logf("B's JWKS fetches by result (last timestamp): %v", fetches)
	})

	t.Run("after the Pod is deleted its last token works in B until exp, then never", func(t *testing.T) {
		last := mint("cluster-b")
		kube.DeletePod(ctx, t, envA.Clientset, pod)
		exp := expiry(t, last)
		c := clientFor(t, envB.Config, last)
		if _, err := c.CoreV1().ConfigMaps("payments").List(ctx, metav1.ListOptions{}); err != nil && time.Now().Before(exp.Add(-2*time.Second)) {
			t.Errorf("the last token before its exp: %v (B trusts a signed token until exp; kube-sts stops minting)", err)
		}
		time.Sleep(time.Until(exp.Add(2 * time.Second)))
		if _, err := c.CoreV1().ConfigMaps("payments").List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
			t.Errorf("the last token after its exp (%s): %v, want Unauthorized", exp.Format(time.RFC3339), err)
		}
	})
}

// grantInB gives kube-sts identities of namespace payments in cluster
// prod-east read access to ConfigMaps in B's payments namespace.
func grantInB(ctx context.Context, t *testing.T, c kubernetes.Interface) {
	t.Helper()
	for _, n := range []string{"payments", "default"} {
		if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "configmap-reader", Namespace: "payments"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch"}}}}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "prod-east-payments", Namespace: "payments"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "kube-sts:namespace:prod-east:payments"}}}
	if _, err := c.RbacV1().Roles("payments").Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RbacV1().RoleBindings("payments").Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// clientFor reaches B as the bearer of token, trusting B's serving CA only.
func clientFor(t *testing.T, admin *rest.Config, token string) kubernetes.Interface {
	t.Helper()
	cfg := rest.AnonymousClientConfig(admin)
	cfg.BearerToken = token
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitReview asks B who the bearer is; B's authenticator fetches kube-sts's
// discovery document and JWKS in the background after it starts.
func waitReview(ctx context.Context, t *testing.T, c kubernetes.Interface) *authnv1.SelfSubjectReview {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		r, err := c.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err == nil {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("B never accepted kube-sts's token: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func claims(t *testing.T, jwt string) (header, payload map[string]any) {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatal("not a JWT")
	}
	for i, into := range []*map[string]any{&header, &payload} {
		raw, err := decodeSegment(parts[i])
		if err == nil {
			err = json.Unmarshal(raw, into)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return header, payload
}

func decodeSegment(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }

func kid(t *testing.T, jwt string) string {
	h, _ := claims(t, jwt)
	k, _ := h["kid"].(string)
	return k
}

func expiry(t *testing.T, jwt string) time.Time {
	_, p := claims(t, jwt)
	exp, ok := p["exp"].(float64)
	if !ok {
		t.Fatal(errors.New("no exp"))
	}
	return time.Unix(int64(exp), 0)
}

// jwksFetches reads B's structured-authentication metrics: the last JWKS
// fetch time by result.
func jwksFetches(ctx context.Context, t *testing.T, env *controlplane.Env) map[string]float64 {
	t.Helper()
	raw, err := env.Clientset.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "apiserver_authentication_jwt_authenticator_jwks_fetch_last_timestamp_seconds{") {
			continue
		}
		for _, result := range []string{"success", "failure"} {
			if strings.Contains(line, `result="`+result+`"`) {
				var v float64
				fmt.Sscanf(line[strings.LastIndex(line, " ")+1:], "%g", &v)
				out[result] = v
			}
		}
	}
	return out
}
