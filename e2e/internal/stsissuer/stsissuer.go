// Package stsissuer runs sts-issuer as a black box against the test control
// plane: built from source, authenticated as its own user with only the RBAC
// the issuer needs, serving HTTPS on loopback with a throwaway CA.
package stsissuer

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-sts/kube-sts/e2e/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/procs"
	"github.com/kube-sts/kube-sts/e2e/internal/testca"
	"github.com/kube-sts/kube-sts/shared/exchange"
)

// User is the identity the issuer runs as; Namespace holds its managed keys.
const (
	User      = "kube-sts:sts-issuer"
	Namespace = "kube-sts"
)

// Issuer is a running sts-issuer.
type Issuer struct {
	*procs.Proc
	// Base is https://127.0.0.1:<port>; endpoint issuers are Base + path.
	Base       string
	MetricsURL string
	CA         *testca.CA
	Client     *http.Client
	Dir        string
}

// Setup grants the issuer's user what it needs: create tokenreviews, get
// pods, read the service-account issuer discovery, and its key Secrets in
// its own namespace. It is idempotent.
func Setup(ctx context.Context, env *controlplane.Env) error {
	c := env.Clientset
	create := func(err error) error {
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	}
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}, metav1.CreateOptions{}); create(err) != nil {
		return err
	}
	if _, err := c.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-sts-issuer"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
			{NonResourceURLs: []string{"/.well-known/openid-configuration", "/openid/v1/jwks"}, Verbs: []string{"get"}},
		},
	}, metav1.CreateOptions{}); create(err) != nil {
		return err
	}
	if _, err := c.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-sts-issuer"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "kube-sts-issuer"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: User}},
	}, metav1.CreateOptions{}); create(err) != nil {
		return err
	}
	if _, err := c.RbacV1().Roles(Namespace).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-sts-issuer-keys"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "create", "update"}}},
	}, metav1.CreateOptions{}); create(err) != nil {
		return err
	}
	if _, err := c.RbacV1().RoleBindings(Namespace).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-sts-issuer-keys"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "kube-sts-issuer-keys"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: User}},
	}, metav1.CreateOptions{}); create(err) != nil {
		return err
	}
	return nil
}

// Start runs an issuer whose configuration config(base) renders, where base
// is the issuer's https://127.0.0.1:<port>. It returns once /readyz is 200.
func Start(t testing.TB, env *controlplane.Env, ca *testca.CA, config func(base string) string, extraArgs ...string) *Issuer {
	t.Helper()
	ctx := context.Background()
	if err := Setup(ctx, env); err != nil {
		t.Fatalf("issuer RBAC: %v", err)
	}
	dir := t.TempDir()
	certFile, keyFile, err := ca.Serving(dir)
	if err != nil {
		t.Fatal(err)
	}
	kcFile, err := env.KubeconfigFile(dir, User)
	if err != nil {
		t.Fatal(err)
	}
	port, mport := procs.FreePort(t), procs.FreePort(t)
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	cfgFile := filepath.Join(dir, "issuer.yaml")
	if err := os.WriteFile(cfgFile, []byte(config(base)), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := procs.Build(t, "issuer", "./cmd/sts-issuer")
	args := append([]string{
		"--config", cfgFile,
		"--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--metrics-listen", fmt.Sprintf("127.0.0.1:%d", mport),
		"--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--kubeconfig", kcFile,
		"--log-level", "debug",
	}, extraArgs...)
	p := procs.Start(t, fmt.Sprintf("sts-issuer-%d", port), dir, bin, args...)
	iss := &Issuer{Proc: p, Base: base, MetricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", mport), CA: ca, Client: procs.TLSClient(ca.Pool()), Dir: dir}
	if err := p.WaitHTTP(ctx, iss.Client, base+"/readyz", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	return iss
}

// Result is the answer to one exchange.
type Result struct {
	Status   int
	Response exchange.Response
	Error    *exchange.Error
}

// Post sends an RFC 8693 exchange of subjectToken to tokenURL and returns
// the HTTP status and the (bounded) body.
func Post(ctx context.Context, client *http.Client, tokenURL, subjectToken string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(exchange.NewRequest(subjectToken).Encode()))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", exchange.ContentTypeForm)
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, exchange.MaxResponseBytes))
	return resp.StatusCode, body, err
}

// Exchange posts subjectToken to <issuer>/token.
func (i *Issuer) Exchange(ctx context.Context, issuer, subjectToken string) (Result, error) {
	status, body, err := Post(ctx, i.Client, issuer+"/token", subjectToken)
	if err != nil {
		return Result{}, err
	}
	r := Result{Status: status}
	if status == http.StatusOK {
		err = json.Unmarshal(body, &r.Response)
		return r, err
	}
	r.Error, err = exchange.ParseError(body)
	return r, err
}

// JWKS fetches <issuer>/jwks.
func (i *Issuer) JWKS(ctx context.Context, issuer string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, issuer+"/jwks", nil)
	if err != nil {
		return nil, err
	}
	resp, err := i.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/jwks: %s", issuer, resp.Status)
	}
	return io.ReadAll(resp.Body)
}
