// Package vaultdev runs Vault's dev server (in memory, root token "root") on
// a free loopback port.
package vaultdev

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"testing"
	"time"

	"github.com/kube-sts/kube-sts/e2e/internal/procs"
)

// RootToken is the dev server's root token.
const RootToken = "root"

// Start runs bin (the pinned Vault) in dev mode, logging into dir, with env
// added to the test's environment, and returns once it is healthy, with its
// http://127.0.0.1:<port> address.
func Start(t testing.TB, dir, bin string, env ...string) (*procs.Proc, string) {
	t.Helper()
	port := procs.FreePort(t)
	addr := fmt.Sprintf("http://127.0.0.1:%d", port)
	p := procs.StartEnv(t, env, "vault", dir, bin, "server", "-dev", "-dev-root-token-id="+RootToken,
		fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", port))
	if err := p.WaitHTTP(context.Background(), &http.Client{Timeout: 5 * time.Second}, addr+"/v1/sys/health", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	return p, addr
}

// Write POSTs body as JSON to addr/v1/<path> with the root token and returns
// the status and body.
func Write(ctx context.Context, addr, path string, body any) (int, string, error) {
	raw, err := json.Marshal(body)
	if err != nil {
		return 0, "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, addr+"/v1/"+path, bytes.NewReader(raw))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("X-Vault-Token", RootToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// EnableJWT mounts Vault's JWT auth at mount, trusting issuer through OIDC
// discovery (its TLS through caPEM), and writes one role with body (the
// role_type is jwt and user_claim sub unless body says otherwise). It fails
// t on any refusal.
func EnableJWT(ctx context.Context, t testing.TB, addr, mount, issuer string, caPEM []byte, role string, body map[string]any) {
	t.Helper()
	roleBody := map[string]any{"role_type": "jwt", "user_claim": "sub"}
	maps.Copy(roleBody, body)
	for _, step := range []struct {
		path string
		body any
	}{
		{"sys/auth/" + mount, map[string]any{"type": "jwt"}},
		{"auth/" + mount + "/config", map[string]any{"oidc_discovery_url": issuer, "oidc_discovery_ca_pem": string(caPEM), "bound_issuer": issuer}},
		{"auth/" + mount + "/role/" + role, roleBody},
	} {
		code, b, err := Write(ctx, addr, step.path, step.body)
		if err != nil || code/100 != 2 {
			t.Fatalf("vault %s: %d %s %v", step.path, code, b, err)
		}
	}
}

// Login logs in at mount with role and jwt; it returns Vault's status and body.
func Login(ctx context.Context, t testing.TB, addr, mount, role, jwt string) (int, string) {
	t.Helper()
	code, b, err := Write(ctx, addr, "auth/"+mount+"/login", map[string]string{"role": role, "jwt": jwt})
	if err != nil {
		t.Fatal(err)
	}
	return code, b
}
