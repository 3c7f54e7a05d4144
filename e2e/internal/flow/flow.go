// Package flow is the reference scenario as a user lives it, written once
// and run against any cluster: configure Vault as docs/relying-parties.md says, deploy
// docs/pods.md's example Pod, see the secret reach the application container,
// delete the Pod and see the next exchange refused. The local node suites
// (e2e/scenario, e2e/install) and the kind job in GitHub Actions (e2e/kind)
// differ only in how they read logs and reach the issuer (Cluster).
package flow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/go-jose/go-jose/v4"
)

// Names of the scenario, after the reference write-up.
const (
	Cluster        = "openunison-cp"
	Namespace      = "test-vault"
	ServiceAccount = "for-vault"
	Audience       = "https://vault.kube-sts.test/"
	Role           = "extsecret"
	Password       = "s3cr3t-from-vault"
	// Label is the injector's name: Pods labeled tremolo.io/vault-sts: "true".
	Label = "vault-sts"
	// AppContainer is the application container of the example Pod.
	AppContainer = "test"
)

// Target is a cluster with kube-sts installed, as the scenario sees it.
type Target interface {
	Client() kubernetes.Interface
	// Logs of one container of a Pod.
	Logs(ctx context.Context, pod *corev1.Pod, container string) (string, error)
	// Exchange posts an RFC 8693 exchange of subjectToken to the STS's token
	// endpoint and returns the HTTP status and body.
	Exchange(ctx context.Context, subjectToken string) (int, []byte, error)
}

// VaultCLI runs the vault CLI (with an administrator's token) and returns its
// combined output.
type VaultCLI func(stdin string, args ...string) (string, error)

// VaultConfig is what ConfigureVault sets up.
type VaultConfig struct {
	// IssuerURL is the endpoint's issuer (iss), where Vault fetches discovery.
	IssuerURL string
	// CAPEM is the CA of the issuer's serving certificate.
	CAPEM []byte
	// TokenTTL and TokenMaxTTL of Vault's tokens; short values make the
	// agent log in again during a run.
	TokenTTL, TokenMaxTTL string
}

// ConfigureVault runs docs/relying-parties.md's "Configuring Vault" commands: JWT auth
// trusting the issuer, the extsecret role, the one templated policy, and the
// scenario's secret. It returns the JWT mount's accessor.
func ConfigureVault(vault VaultCLI, c VaultConfig) (string, error) {
	if c.TokenTTL == "" {
		c.TokenTTL, c.TokenMaxTTL = "1h", "2h"
	}
	steps := []struct {
		stdin string
		args  []string
	}{
		{"", []string{"auth", "enable", "jwt"}},
		// The CA goes inline (not @file) so this also works through kubectl exec.
		{"", []string{"write", "auth/jwt/config", "oidc_discovery_url=" + c.IssuerURL, "oidc_discovery_ca_pem=" + string(c.CAPEM), "bound_issuer=" + c.IssuerURL}},
	}
	for _, s := range steps {
		if out, err := vault(s.stdin, s.args...); err != nil {
			return "", fmt.Errorf("vault %s: %w\n%s", strings.Join(s.args[:2], " "), err, out)
		}
	}
	role, _ := json.Marshal(map[string]any{
		"role_type":       "jwt",
		"bound_audiences": []string{Audience},
		"user_claim":      "sub",
		"claim_mappings":  map[string]string{"cluster": "cluster", "namespace": "namespace"},
		"bound_issuer":    c.IssuerURL,
		"policies":        []string{Role},
		"token_ttl":       c.TokenTTL,
		"token_max_ttl":   c.TokenMaxTTL,
		// Vault adds 150s of leeway to exp by default (plus 60s of clock
		// skew): a dead Pod's token would outlive its exp by minutes.
		"expiration_leeway": -1,
		"clock_skew_leeway": 5,
	})
	if out, err := vault(string(role), "write", "auth/jwt/role/"+Role, "-"); err != nil {
		return "", fmt.Errorf("vault write role: %w\n%s", err, out)
	}
	out, err := vault("", "auth", "list", "-format=json")
	if err != nil {
		return "", fmt.Errorf("vault auth list: %w\n%s", err, out)
	}
	var mounts map[string]struct {
		Accessor string `json:"accessor"`
	}
	if err := json.Unmarshal([]byte(out), &mounts); err != nil {
		return "", fmt.Errorf("vault auth list: %w\n%s", err, out)
	}
	accessor := mounts["jwt/"].Accessor
	if accessor == "" {
		return "", fmt.Errorf("no accessor for jwt/ in %s", out)
	}
	policy := fmt.Sprintf(`path "secret/data/{{identity.entity.aliases.%[1]s.metadata.cluster}}/{{identity.entity.aliases.%[1]s.metadata.namespace}}/*" {
  capabilities = ["read"]
}
`, accessor)
	if out, err := vault(policy, "policy", "write", Role, "-"); err != nil {
		return "", fmt.Errorf("vault policy write: %w\n%s", err, out)
	}
	if out, err := vault("", "kv", "put", fmt.Sprintf("secret/%s/%s/config", Cluster, Namespace), "some-password="+Password); err != nil {
		return "", fmt.Errorf("vault kv put: %w\n%s", err, out)
	}
	return accessor, nil
}

// PodOptions place the example Pod on a cluster.
type PodOptions struct {
	Namespace, Name string
	// Image and Command of the application container; it must print the
	// rendered /etc/secrets/myenv to its log.
	Image      string
	PullPolicy corev1.PullPolicy
	Command    []string
	Args       []string
	// Local node only: host network and a fixed node.
	HostNetwork bool
	NodeName    string
	// VaultService sets vault.hashicorp.com/service when the agent must not
	// use the injector's default Vault address.
	VaultService string
	// WithJSONPatch keeps the write-up's agent-*-json-patch annotations
	// (kube-sts makes them unnecessary, and must not mind them either).
	WithJSONPatch bool
}

const jsonPatch = `[{"op": "add", "path": "/volumeMounts/-", "value": {"name": "sts-tokens", "mountPath": "/tokens", "readOnly": true}}]`

// ExamplePod is docs/pods.md's example Pod: the STS label and annotation, and
// Vault's injector annotations for JWT auth from /tokens/token.jwt.
func ExamplePod(o PodOptions) *corev1.Pod {
	secretPath := fmt.Sprintf("secret/data/%s/%s/config", Cluster, Namespace)
	ann := map[string]string{
		"vault.hashicorp.com/agent-inject":              "true",
		"vault.hashicorp.com/log-level":                 "debug",
		"vault.hashicorp.com/role":                      Role,
		"vault.hashicorp.com/agent-inject-secret-myenv": secretPath,
		"vault.hashicorp.com/secret-volume-path-myenv":  "/etc/secrets",
		"vault.hashicorp.com/agent-inject-template-myenv": `{{- with secret "` + secretPath + `" -}}
MY_SECRET_PASSWORD="{{ index .Data.data "some-password" }}"
{{- end }}`,
		"tremolo.io/" + Label:                  "auth_jwt_a8470dce",
		"tremolo.io/user":                      "100",
		"tremolo.io/group":                     "1000",
		"vault.hashicorp.com/auth-type":        "jwt",
		"vault.hashicorp.com/auth-path":        "auth/jwt",
		"vault.hashicorp.com/auth-config-path": "/tokens/token.jwt",
	}
	if o.VaultService != "" {
		ann["vault.hashicorp.com/service"] = o.VaultService
	}
	if o.WithJSONPatch {
		ann["vault.hashicorp.com/agent-init-json-patch"] = jsonPatch
		ann["vault.hashicorp.com/agent-json-patch"] = jsonPatch
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: o.Name, Namespace: o.Namespace, Annotations: ann,
			Labels: map[string]string{"run": "watch-vault-volume", "tremolo.io/" + Label: "true"},
		},
		Spec: corev1.PodSpec{
			NodeName:           o.NodeName,
			HostNetwork:        o.HostNetwork,
			RestartPolicy:      corev1.RestartPolicyNever,
			ServiceAccountName: ServiceAccount,
			Containers: []corev1.Container{{
				Name: AppContainer, Image: o.Image, ImagePullPolicy: o.PullPolicy,
				Command: o.Command, Args: o.Args,
			}},
		},
	}
}

// PrepareNamespace creates the namespace (if missing) and the scenario's
// ServiceAccount in it.
func PrepareNamespace(ctx context.Context, c kubernetes.Interface, ns string) error {
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if _, err := c.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: ServiceAccount}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// SecretLine is what the application container prints once Vault's agent
// has rendered the secret.
const SecretLine = `MY_SECRET_PASSWORD="` + Password + `"`

// WaitForSecret waits until the Pod's application container has printed the
// secret. On timeout the error carries the tails of every container's log.
func WaitForSecret(ctx context.Context, t Target, pod *corev1.Pod, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if log, _ := t.Logs(ctx, pod, AppContainer); strings.Contains(log, SecretLine) {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			var b strings.Builder
			p, err := t.Client().CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
			if err == nil {
				fmt.Fprintf(&b, "phase %s, conditions %+v\n", p.Status.Phase, p.Status.Conditions)
				for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
					l, _ := t.Logs(ctx, p, c.Name)
					fmt.Fprintf(&b, "--- %s:\n%s\n", c.Name, Tail(l, 3000))
				}
			}
			return fmt.Errorf("%s/%s: the application never printed the secret within %v\n%s", pod.Namespace, pod.Name, timeout, b.String())
		}
		time.Sleep(time.Second)
	}
}

// BoundToken asks the API server for a ServiceAccount token bound to the Pod
// with the STS's audience: what the Pod's projected volume holds, and what an
// attacker who copied it out would hold.
func BoundToken(ctx context.Context, c kubernetes.Interface, pod *corev1.Pod, audience string) (string, error) {
	tr, err := c.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, pod.Spec.ServiceAccountName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         []string{audience},
			ExpirationSeconds: ptr.To[int64](600),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return tr.Status.Token, nil
}

// DeletedPodRefused shows a Pod's credentials die with it: a token bound to
// the Pod is exchanged while the Pod lives, the Pod is deleted, and the next
// exchange of the same token is refused. It returns how long after the
// delete call the refusal came.
func DeletedPodRefused(ctx context.Context, t Target, pod *corev1.Pod, subjectAudience string) (time.Duration, error) {
	c := t.Client()
	p, err := c.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		return 0, err
	}
	token, err := BoundToken(ctx, c, p, subjectAudience)
	if err != nil {
		return 0, fmt.Errorf("token bound to %s: %w", p.Name, err)
	}
	if status, body, err := t.Exchange(ctx, token); err != nil || status != 200 {
		return 0, fmt.Errorf("exchange for the live Pod: status %d, %v: %s", status, err, body)
	}
	start := time.Now()
	if err := c.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil {
		return 0, err
	}
	// The API server alone keeps accepting the token for ~10 s; the issuer's
	// live Pod check must refuse it at once, and say why.
	deadline := start.Add(DeletedPodBound)
	for {
		status, body, err := t.Exchange(ctx, token)
		if err == nil && status == 400 && PodGoneOrTerminating(string(body)) {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the deleted Pod's token was not refused for the Pod being gone or terminating within %v: status %d, %v: %s", DeletedPodBound, status, err, body)
		}
		time.Sleep(250 * time.Millisecond) // under the per-token limit of 5 a second
	}
}

// DeletedPodBound is how soon after a Pod's deletion the issuer must refuse
// its token, with margin for a loaded machine; docs/performance.md's figure is measured.
const DeletedPodBound = 2 * time.Second

// PodGoneOrTerminating reports whether an issuer's answer refuses a token
// because its Pod is gone or terminating (the live Pod check), as opposed to
// any other refusal.
func PodGoneOrTerminating(body string) bool {
	return strings.Contains(body, "invalid_request") && (strings.Contains(body, "no longer exists") || strings.Contains(body, "is terminating"))
}

// Tail is the end of a log.
func Tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// VerifyJWKS checks token's signature with the key of its kid in the JWKS
// document jwks (claims and expiry are not checked).
func VerifyJWKS(jwks []byte, token string) error {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwks, &set); err != nil {
		return err
	}
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA})
	if err != nil {
		return err
	}
	keys := set.Key(jws.Signatures[0].Header.KeyID)
	if len(keys) == 0 {
		return errors.New("kid not in the JWKS")
	}
	_, err = jws.Verify(keys[0])
	return err
}

// LogTimes are the times of the lines of a zap log (ours: ISO 8601 times)
// whose message is msg.
func LogTimes(log, msg string) []time.Time {
	var out []time.Time
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `"msg":"`+msg+`"`) {
			continue
		}
		i := strings.Index(line, `"ts":"`)
		if i < 0 {
			continue
		}
		ts := line[i+6:]
		if j := strings.IndexByte(ts, '"'); j > 0 {
			if at, err := time.Parse("2006-01-02T15:04:05.000Z0700", ts[:j]); err == nil {
				out = append(out, at)
			}
		}
	}
	return out
}
