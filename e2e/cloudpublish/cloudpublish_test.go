// Package cloudpublish checks the issuer's cloud publish targets against the
// clouds' emulators: Google Cloud Storage (fake-gcs-server, its JSON API) and
// Azure Blob Storage (Azurite, its REST API with Shared Key signatures it
// verifies), each served over TLS at a path-style issuer URL like the
// clouds' public ones, and Vault's JWT auth discovering each issuer there.
package cloudpublish

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kube-sts/kube-sts/e2e/internal/azurite"
	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/fakegcs"
	"github.com/kube-sts/kube-sts/e2e/internal/kube"
	"github.com/kube-sts/kube-sts/e2e/internal/scrape"
	"github.com/kube-sts/kube-sts/e2e/internal/stsissuer"
	"github.com/kube-sts/kube-sts/e2e/internal/testca"
	"github.com/kube-sts/kube-sts/e2e/internal/vaultdev"
)

var cp = controlplane.New()

func TestMain(m *testing.M) { os.Exit(cp.Main(m)) }

const (
	bucket    = "oidc-gcs"
	container = "oidc"
	// The audiences each cloud expects by default: a Google workload
	// identity pool provider's resource name, Microsoft Entra ID's token
	// exchange.
	gcpAudience   = "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/kube/providers/prod"
	azureAudience = "api://AzureADTokenExchange"
	rotateEvery   = 20 * time.Second
	// generationMeta is the metadata key both targets carry the key set's
	// generation in (GCS custom metadata, Azure x-ms-meta-*).
	gcsGenerationMeta   = "kube-sts-generation"
	azureGenerationMeta = "kube_sts_generation"
)

// cloud is one endpoint published to one emulator.
type cloud struct {
	name, issuer, audience, algorithm string
	// target is the metric's target label.
	target string
	// get reads a published document anonymously at its public URL.
	get func(ctx context.Context, url string) (*http.Response, error)
	// generation reads the generation stored beside the published JWKS
	// through the storage API.
	generation func(ctx context.Context) (string, error)
	// plant writes a JWKS with a generation, as a writer other than the issuer.
	plant func(ctx context.Context, jwks []byte, gen string) error
}

// TestCloudPublishing: one issuer publishes an endpoint to GCS (ES256, the
// audience a workload identity pool provider expects) and another to
// Azure Blob (RS256, Entra ID's audience); each cloud's rules hold for what
// it would read at <issuer>/.well-known/openid-configuration; the objects
// carry content types, Cache-Control and the key set's generation; Vault
// trusts each issuer through the emulator alone; a key rotation reaches
// both; a key set planted by another writer is overwritten and counted as
// foreign.
func TestCloudPublishing(t *testing.T) {
	env := cp.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ca, err := testca.New("cloudpublish")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	gcs := fakegcs.Start(ctx, t, ca, bucket)
	az := azurite.Start(ctx, t, ca, container)
	// The Azure target's credential: the account key (Azurite checks each
	// Shared Key signature), from the environment like in a Pod.
	t.Setenv("AZURE_STORAGE_SAS_TOKEN", "")
	t.Setenv("AZURE_STORAGE_KEY", azurite.Key)

	gcp := cloud{name: "gcp", issuer: gcs.Endpoint + "/" + bucket + "/prod/gcp", audience: gcpAudience, algorithm: "ES256",
		target: "gs://" + bucket + "/ at " + gcs.Endpoint,
		get:    getWith(gcs.Client),
		generation: func(ctx context.Context) (string, error) {
			var o struct {
				Metadata map[string]string `json:"metadata"`
			}
			err := getJSON(ctx, gcs.Client, gcs.Endpoint+"/storage/v1/b/"+bucket+"/o/"+url.PathEscape("prod/gcp/jwks"), &o)
			return o.Metadata[gcsGenerationMeta], err
		},
		plant: func(ctx context.Context, jwks []byte, gen string) error {
			return gcsInsert(ctx, gcs, "prod/gcp/jwks", jwks, gen)
		}}
	azure := cloud{name: "azure", issuer: az.Endpoint + "/" + container + "/prod/azure", audience: azureAudience, algorithm: "RS256",
		target: "azblob://" + azurite.Account + "/" + container + "/ at " + az.Endpoint,
		get:    getWith(az.Client),
		generation: func(ctx context.Context) (string, error) {
			resp, err := az.Get(ctx, "/"+container+"/prod/azure/jwks")
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			return resp.Header.Get("x-ms-meta-" + azureGenerationMeta), nil
		},
		plant: func(ctx context.Context, jwks []byte, gen string) error {
			resp, err := az.Do(ctx, http.MethodPut, "/"+container+"/prod/azure/jwks", map[string]string{
				"x-ms-blob-type": "BlockBlob", "x-ms-blob-content-type": "application/jwk-set+json", "x-ms-meta-" + azureGenerationMeta: gen}, jwks)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				b, _ := io.ReadAll(resp.Body)
				return fmt.Errorf("put blob: %s %s", resp.Status, b)
			}
			return nil
		}}
	clouds := []cloud{gcp, azure}

	config := func(string) string {
		var eps strings.Builder
		for _, c := range clouds {
			target := fmt.Sprintf("gcs: {bucket: %s, endpoint: %q, anonymous: true, caFile: %s}", bucket, gcs.Endpoint, caFile)
			if c.name == "azure" {
				target = fmt.Sprintf("azureBlob: {account: %s, container: %s, endpoint: %q, caFile: %s}", azurite.Account, container, az.Endpoint, caFile)
			}
			fmt.Fprintf(&eps, `
- name: %[1]s
  issuer: %[2]s
  audience: %[3]q
  algorithm: %[4]s
  ttl: 1m
  keys:
    managed: {secret: %[1]s-keys, rotateEvery: %[5]v, publishAhead: 5s, resync: 500ms, leeway: 6s}
  allow: [{namespace: payments}]
  publish:
  - %[6]s
`, c.name, c.issuer, c.audience, c.algorithm, rotateEvery, target)
		}
		return "cluster: prod\njwksMaxAge: 1s\npublishing: {interval: 10s, unreadyAfter: 30s}\nendpoints:" + eps.String()
	}
	iss := stsissuer.Start(t, env, ca, config)
	local := func(c cloud) string { u, _ := url.Parse(c.issuer); return iss.Base + u.Path }

	for _, c := range clouds {
		if err := waitFor(ctx, 30*time.Second, func() error { _, _, err := fetch(ctx, c, c.issuer+"/.well-known/openid-configuration"); return err }); err != nil {
			t.Fatalf("%s: nothing published at %s: %v\n%s", c.name, c.issuer, err, iss.Log())
		}
	}

	t.Run("each cloud reads at the issuer URL what the issuer serves, by the cloud's rules", func(t *testing.T) {
		for _, c := range clouds {
			disc, h, err := fetch(ctx, c, c.issuer+"/.well-known/openid-configuration")
			if err != nil {
				t.Fatal(err)
			}
			own, err := getWith(iss.Client)(ctx, local(c)+"/.well-known/openid-configuration")
			if err != nil {
				t.Fatal(err)
			}
			ownBody, _ := io.ReadAll(own.Body)
			own.Body.Close()
			if !bytes.Equal(disc, ownBody) {
				t.Errorf("%s: the published discovery document differs from the issuer's:\n%s\n%s", c.name, disc, ownBody)
			}
			if ct, cc := h.Get("Content-Type"), h.Get("Cache-Control"); ct != "application/json" || cc != "public, max-age=1" {
				t.Errorf("%s discovery: Content-Type %q, Cache-Control %q", c.name, ct, cc)
			}
			jwks, h, err := fetch(ctx, c, c.issuer+"/jwks")
			if err != nil {
				t.Fatal(err)
			}
			if ct := h.Get("Content-Type"); ct != "application/jwk-set+json" {
				t.Errorf("%s jwks: Content-Type %q", c.name, ct)
			}
			for _, problem := range cloudRules(c, disc, jwks) {
				t.Errorf("%s: %s", c.name, problem)
			}
			gen, err := c.generation(ctx)
			if err != nil || !strings.Contains(gen, "/") {
				t.Errorf("%s: the JWKS object's generation metadata %q (%v)", c.name, gen, err)
			}
		}
	})

	t.Run("Vault trusts each issuer through the emulator alone", func(t *testing.T) {
		vaultBin, err := controlplane.Binary(ctx, "vault")
		if err != nil {
			t.Fatal(err)
		}
		_, vaultAddr := vaultdev.Start(t, t.TempDir(), vaultBin)
		pod := kube.Workload(ctx, t, env.Clientset, "payments", "api", "api-0")
		for _, c := range clouds {
			vaultdev.EnableJWT(ctx, t, vaultAddr, "jwt-"+c.name, c.issuer, ca.CertPEM, "payments", map[string]any{
				"bound_audiences": []string{c.audience}, "bound_subject": "prod:payments:api", "token_ttl": "1m", "token_policies": []string{"default"}})
			r, err := iss.Exchange(ctx, local(c), kube.PodToken(ctx, t, env.Clientset, pod, c.issuer))
			if err != nil || r.Status != http.StatusOK {
				t.Fatalf("%s: exchange: %v %+v", c.name, err, r.Error)
			}
			if code, body := vaultdev.Login(ctx, t, vaultAddr, "jwt-"+c.name, "payments", r.Response.AccessToken); code != http.StatusOK {
				t.Errorf("%s: Vault refused the token: %d %s", c.name, code, body)
			}
		}
	})

	t.Run("a key set another writer planted is overwritten and counted as foreign", func(t *testing.T) {
		far := "9999-01-01T00:00:00Z/2026-01-01T00:00:00Z"
		evil := []byte(`{"keys":[{"kty":"EC","crv":"P-256","kid":"evil","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}`)
		for _, c := range clouds {
			if err := c.plant(ctx, evil, far); err != nil {
				t.Fatalf("%s: plant: %v", c.name, err)
			}
		}
		for _, c := range clouds {
			err := waitFor(ctx, 30*time.Second, func() error {
				jwks, _, err := fetch(ctx, c, c.issuer+"/jwks")
				if err != nil {
					return err
				}
				if bytes.Contains(jwks, []byte(`"evil"`)) {
					return fmt.Errorf("still the planted JWKS")
				}
				samples, err := scrape.Samples(iss.MetricsURL)
				if err != nil {
					return err
				}
				if n := scrape.Sum(samples, "sts_issuer_publish_total", `result="foreign"`, `target="`+c.target+`"`); n < 1 {
					return fmt.Errorf("no foreign publish counted for %s", c.target)
				}
				return nil
			})
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
		}
	})

	t.Run("a key rotation reaches both clouds", func(t *testing.T) {
		for _, c := range clouds {
			first, _, err := fetch(ctx, c, c.issuer+"/jwks")
			if err != nil {
				t.Fatal(err)
			}
			before, err := stsissuer.KIDs(first)
			if err != nil {
				t.Fatal(err)
			}
			err = waitFor(ctx, 2*rotateEvery, func() error {
				jwks, _, err := fetch(ctx, c, c.issuer+"/jwks")
				if err != nil {
					return err
				}
				now, err := stsissuer.KIDs(jwks)
				if err != nil {
					return err
				}
				for _, k := range now {
					if !slices.Contains(before, k) {
						return nil
					}
				}
				return fmt.Errorf("no new key beside %v", before)
			})
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
		}
	})
}

// cloudRules lists what the cloud would refuse in the documents it reads:
// both want the issuer byte for byte where it was read, over https, and a
// jwks_uri; Google takes RSA and EC keys; Microsoft Entra ID takes RSA
// keys (RS256) only.
func cloudRules(c cloud, discovery, jwks []byte) []string {
	var p []string
	var doc struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := json.Unmarshal(discovery, &doc); err != nil {
		return []string{fmt.Sprintf("discovery is not JSON: %v", err)}
	}
	if doc.Issuer != c.issuer {
		p = append(p, fmt.Sprintf("issuer %q is not the URL it was read at (%q)", doc.Issuer, c.issuer))
	}
	if !strings.HasPrefix(doc.Issuer, "https://") || doc.JWKSURI != c.issuer+"/jwks" {
		p = append(p, fmt.Sprintf("issuer %q and jwks_uri %q: want https and <issuer>/jwks", doc.Issuer, doc.JWKSURI))
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &set); err != nil || len(set.Keys) == 0 {
		return append(p, fmt.Sprintf("JWKS has no keys (%v)", err))
	}
	for _, k := range set.Keys {
		kty, _ := k["kty"].(string)
		switch {
		case c.name == "azure" && (kty != "RSA" || k["alg"] != "RS256"):
			p = append(p, fmt.Sprintf("key %v is %s %v: Entra ID verifies RS256 only", k["kid"], kty, k["alg"]))
		case c.name == "gcp" && kty != "RSA" && kty != "EC":
			p = append(p, fmt.Sprintf("key %v is %s: Google takes RSA and EC keys", k["kid"], kty))
		}
		if _, private := k["d"]; private {
			p = append(p, fmt.Sprintf("key %v carries a private part", k["kid"]))
		}
	}
	if !slices.Contains(doc.Algs, c.algorithm) {
		p = append(p, fmt.Sprintf("discovery lists %v, not the endpoint's %s", doc.Algs, c.algorithm))
	}
	return p
}

func getWith(client *http.Client) func(ctx context.Context, url string) (*http.Response, error) {
	return func(ctx context.Context, url string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		return client.Do(req)
	}
}

// fetch reads a published document anonymously; a status other than 200 is an error.
func fetch(ctx context.Context, c cloud, url string) ([]byte, http.Header, error) {
	resp, err := c.get(ctx, url)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b, resp.Header, err
}

func getJSON(ctx context.Context, client *http.Client, url string, into any) error {
	resp, err := getWith(client)(ctx, url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(into)
}

// gcsInsert writes an object through the JSON API (multipart upload), with
// the generation as custom metadata.
func gcsInsert(ctx context.Context, gcs *fakegcs.Server, object string, body []byte, gen string) error {
	meta, _ := json.Marshal(map[string]any{"name": object, "contentType": "application/jwk-set+json", "metadata": map[string]string{gcsGenerationMeta: gen}})
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for _, part := range []struct {
		ct   string
		body []byte
	}{{"application/json", meta}, {"application/jwk-set+json", body}} {
		pw, _ := w.CreatePart(textproto.MIMEHeader{"Content-Type": {part.ct}})
		_, _ = pw.Write(part.body)
	}
	_ = w.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, gcs.Endpoint+"/upload/storage/v1/b/"+bucket+"/o?uploadType=multipart&name="+url.QueryEscape(object), &buf)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "multipart/related; boundary="+w.Boundary())
	resp, err := gcs.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("insert %s: %s %s", object, resp.Status, b)
	}
	return nil
}

// waitFor polls check every 200 ms until it returns nil or timeout passes;
// it returns the last error.
func waitFor(ctx context.Context, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}
