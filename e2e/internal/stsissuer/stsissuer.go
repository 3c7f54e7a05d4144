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
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/kube"
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

// Setup grants the issuer's user exactly what the shipped manifest
// (manifests/base/issuer/rbac.yaml) grants sts-issuer, with its key Secret
// renamed to the managed Secrets of this configuration. It is idempotent.
func Setup(ctx context.Context, env *controlplane.Env, config string) error {
	if _, err := env.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	var file struct {
		Endpoints []struct {
			Keys struct {
				Managed *struct {
					Secret string `json:"secret"`
				} `json:"managed"`
			} `json:"keys"`
		} `json:"endpoints"`
	}
	if err := yaml.Unmarshal([]byte(config), &file); err != nil {
		return fmt.Errorf("read the managed Secrets of the configuration: %w", err)
	}
	var secrets []string
	for _, e := range file.Endpoints {
		if m := e.Keys.Managed; m != nil {
			secrets = append(secrets, m.Secret)
		}
	}
	return kube.ShippedRBAC{
		File: filepath.Join(procs.RepoRoot(), "manifests", "base", "issuer", "rbac.yaml"),
		User: User, Namespace: Namespace,
		Rename: map[string][]string{"vault-sts-keys": secrets},
	}.Apply(ctx, env.Clientset)
}

// Start runs an issuer whose configuration config(base) renders, where base
// is the issuer's https://127.0.0.1:<port>. It returns once /readyz is 200.
func Start(t testing.TB, env *controlplane.Env, ca *testca.CA, config func(base string) string, extraArgs ...string) *Issuer {
	t.Helper()
	ctx := context.Background()
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
	rendered := config(base)
	if err := os.WriteFile(cfgFile, []byte(rendered), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Setup(ctx, env, rendered); err != nil {
		t.Fatalf("issuer RBAC: %v", err)
	}
	if slices.Contains(extraArgs, "--review=watch") {
		// What the review-watch component (or the chart's issuer.review=watch)
		// adds to the base's rules.
		if err := (kube.ShippedRBAC{File: filepath.Join(procs.RepoRoot(), "manifests", "components", "review-watch", "rbac.yaml"),
			User: User, Namespace: Namespace}).Apply(ctx, env.Clientset); err != nil {
			t.Fatalf("issuer RBAC of review mode watch: %v", err)
		}
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
	return PostRequest(ctx, client, tokenURL, exchange.NewRequest(subjectToken))
}

// PostRequest posts r as the sidecar would, to tokenURL, and returns the
// status and body.
func PostRequest(ctx context.Context, client *http.Client, tokenURL string, r exchange.Request) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(r.Encode()))
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
	return i.ExchangeRequest(ctx, issuer, exchange.NewRequest(subjectToken))
}

// ExchangeRequest posts r to <issuer>/token.
func (i *Issuer) ExchangeRequest(ctx context.Context, issuer string, r exchange.Request) (Result, error) {
	status, body, err := PostRequest(ctx, i.Client, issuer+"/token", r)
	if err != nil {
		return Result{}, err
	}
	res := Result{Status: status}
	if status == http.StatusOK {
		err = json.Unmarshal(body, &res.Response)
		return res, err
	}
	res.Error, err = exchange.ParseError(body)
	return res, err
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

// KIDs are the key IDs of a JWKS, in its order.
func KIDs(jwks []byte) ([]string, error) {
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &set); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.Kid)
	}
	return out, nil
}
