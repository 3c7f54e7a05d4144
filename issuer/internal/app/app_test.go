package app

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckConfig: --check-config validates the file with the real parser and
// exits without reading keys or touching the API server.
func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.yaml"), filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte(`
cluster: c1
endpoints:
- name: vault
  issuer: https://sts.example/vault
  audience: https://vault.example/
  keys: {managed: {secret: vault-keys}}
  allow: [{namespace: "*"}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("cluster: c1\nendpoints: [{name: vault, issuer: https://sts.example/vault, ttl: 1s}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := Run(context.Background(), []string{"--check-config", "--config", good, "--kubeconfig", "/nonexistent"}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "is valid") {
		t.Fatalf("valid file: %v %q", err, out.String())
	}
	// What a cloud would not accept is valid, and said: an Azure container
	// that is not where the issuer URL points, and ES256 for Entra ID.
	azure := filepath.Join(dir, "azure.yaml")
	if err := os.WriteFile(azure, []byte(`
cluster: c1
endpoints:
- name: azure
  issuer: https://sts.example/azure
  audience: api://AzureADTokenExchange
  algorithm: ES256
  keys: {managed: {secret: azure-keys}}
  allow: [{namespace: "*"}]
  publish: [{azureBlob: {account: acct, container: oidc}}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := Run(context.Background(), []string{"--check-config", "--config", azure}, &out, io.Discard); err != nil ||
		strings.Count(out.String(), "warning: endpoints[0].publish[0] (azureBlob)") != 2 {
		t.Fatalf("a configuration Azure would refuse: %v\n%s", err, out.String())
	}
	err := Run(context.Background(), []string{"--check-config", "--config", bad}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "endpoints[0].audience") || !strings.Contains(err.Error(), "endpoints[0].ttl") {
		t.Fatalf("invalid file: %v", err)
	}
}
