package config

import (
	"strings"
	"testing"
)

// TestCloudTargetNames: the objects of the gcs and azureBlob targets are
// named below the issuer path, without the leading segments a path-style
// URL on the bucket or container carries, so that
// <issuer>/.well-known/openid-configuration is their public URL.
func TestCloudTargetNames(t *testing.T) {
	g := GCSTarget{Bucket: "oidc", Prefix: "kube/"}
	for base, want := range map[string]string{
		"oidc/prod/gcp": "kube/prod/gcp/jwks", // https://storage.googleapis.com/oidc/prod/gcp
		"prod/gcp":      "kube/prod/gcp/jwks", // https://oidc.storage.googleapis.com/prod/gcp, or a CDN
		"oidc":          "kube/jwks",
		"oidc-b/x":      "kube/oidc-b/x/jwks", // a segment that only starts like the bucket stays
		"":              "kube/jwks",
	} {
		if got := g.Name(base, "jwks"); got != want {
			t.Errorf("gcs Name(%q) = %q, want %q", base, got, want)
		}
	}
	if u := (GCSTarget{Bucket: "oidc"}).PublicURL("prod/jwks"); u != "https://storage.googleapis.com/oidc/prod/jwks" {
		t.Errorf("gcs PublicURL %q", u)
	}
	a := AzureBlobTarget{Account: "devstoreaccount1", Container: "oidc"}
	for base, want := range map[string]string{
		"oidc/prod/azure":                  "prod/azure/jwks", // https://<account>.blob.core.windows.net/oidc/prod/azure
		"devstoreaccount1/oidc/prod/azure": "prod/azure/jwks", // path-style (Azurite): the account first
		"prod/azure":                       "prod/azure/jwks",
	} {
		if got := a.Name(base, "jwks"); got != want {
			t.Errorf("azureBlob Name(%q) = %q, want %q", base, got, want)
		}
	}
	if u := a.PublicURL("prod/jwks"); u != "https://devstoreaccount1.blob.core.windows.net/oidc/prod/jwks" {
		t.Errorf("azureBlob PublicURL %q", u)
	}
}

// TestCloudNotes: what a cloud would not accept is noted (the issuer logs
// it at start), what it would is not.
func TestCloudNotes(t *testing.T) {
	c, err := Parse([]byte(`cluster: c
endpoints:
- name: gcp-ok
  issuer: https://storage.googleapis.com/oidc/prod/gcp
  audience: a
  algorithm: ES256
  keys: {files: [/k]}
  allow: [{}]
  publish: [{gcs: {bucket: oidc}}]
- name: gcp-vhost
  issuer: https://oidc.storage.googleapis.com/prod/gcp
  audience: a
  keys: {files: [/k]}
  allow: [{}]
  publish: [{gcs: {bucket: oidc}}]
- name: gcp-elsewhere
  issuer: https://sts.example.com/prod/gcp
  audience: a
  keys: {files: [/k]}
  allow: [{}]
  publish: [{gcs: {bucket: oidc}}, {gcs: {bucket: oidc, endpoint: "http://127.0.0.1:4443", anonymous: true}}]
- name: azure-ok
  issuer: https://acct.blob.core.windows.net/oidc/prod/azure
  audience: api://AzureADTokenExchange
  keys: {files: [/k]}
  allow: [{}]
  publish: [{azureBlob: {account: acct, container: oidc}}]
- name: azure-es
  issuer: https://acct.blob.core.windows.net/other/prod/azure
  audience: api://AzureADTokenExchange
  algorithm: ES256
  keys: {files: [/k]}
  allow: [{}]
  publish: [{azureBlob: {account: acct, container: oidc}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	notes := c.Notes()
	want := []string{
		"endpoints[2].publish[0] (gcs): Google's federation reads https://sts.example.com/prod/gcp/.well-known/openid-configuration, but this target puts the discovery document at https://storage.googleapis.com/oidc/prod/gcp/.well-known/openid-configuration; set the issuer to https://storage.googleapis.com/oidc/prod/gcp",
		"endpoints[4].publish[0] (azureBlob): Microsoft Entra ID reads https://acct.blob.core.windows.net/other/prod/azure/.well-known/openid-configuration, but this target puts the discovery document at https://acct.blob.core.windows.net/oidc/other/prod/azure/.well-known/openid-configuration",
		"endpoints[4].publish[0] (azureBlob): endpoint azure-es signs with ES256, and Microsoft Entra ID's workload identity federation accepts RSA signatures only (RS256)",
	}
	if len(notes) != len(want) {
		t.Fatalf("notes:\n%s\nwant %d", strings.Join(notes, "\n"), len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(notes[i], w) {
			t.Errorf("note %d:\n%s\nwant it to start with\n%s", i, notes[i], w)
		}
	}
}
