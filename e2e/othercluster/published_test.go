package othercluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/kube"
	"github.com/kube-sts/kube-sts/e2e/internal/nginx"
	"github.com/kube-sts/kube-sts/e2e/internal/procs"
	"github.com/kube-sts/kube-sts/e2e/internal/seaweedfs"
	"github.com/kube-sts/kube-sts/e2e/internal/stsissuer"
	"github.com/kube-sts/kube-sts/e2e/internal/testca"
	"github.com/kube-sts/kube-sts/e2e/internal/vaultdev"
)

const (
	bucket       = "oidc"
	publishAhead = 5 * time.Second
	rotateEvery  = 20 * time.Second
)

// publishedConfig: one endpoint whose issuer is the public URL (nginx), not
// the issuer's own; its documents are published to nginx's directory and to
// a SeaweedFS bucket. Keys rotate every 20 s.
func publishedConfig(public, www, s3Endpoint string) func(string) string {
	return func(string) string {
		return fmt.Sprintf(`
cluster: %[4]s
jwksMaxAge: 1s
publishing: {interval: 10s, unreadyAfter: 5s}
endpoints:
- name: public
  issuer: %[1]s
  audience: %[5]s
  ttl: 1m
  keys:
    managed: {secret: public-keys, rotateEvery: %[6]v, publishAhead: %[7]v, resync: 500ms, leeway: 6s}
  allow: [{namespace: payments}]
  publish:
  - directory: {path: %[2]s}
  - s3: {bucket: %[8]s, endpoint: %[3]s, pathStyle: true}
`, public, www, s3Endpoint, cluster, audienceB, rotateEvery, publishAhead, bucket)
	}
}

// TestPublishedDiscovery: relying parties that never reach the issuer —
// cluster B's API server and Vault's JWT auth — trust kube-sts through the
// discovery document and JWKS that two issuer replicas publish to a
// directory served by nginx (TLS, test CA), across managed rotations, with
// no refusal; the same documents land in a SeaweedFS bucket with
// Cache-Control; a target that fails makes /readyz say so.
func TestPublishedDiscovery(t *testing.T) {
	envA := cp.Require(t)
	// make test builds SeaweedFS beside the suites: the test's own time
	// starts once it is there (a cold run met the deadline while waiting).
	if _, err := controlplane.Binary(context.Background(), "weed"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	ca, err := testca.New("published")
	if err != nil {
		t.Fatal(err)
	}
	www := t.TempDir()
	web := nginx.Start(t, ca, www, "public, max-age=1")
	store := seaweedfs.Start(ctx, t, bucket)
	// The issuer takes S3 credentials from the AWS SDK's default chain.
	t.Setenv("AWS_ACCESS_KEY_ID", store.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", store.SecretKey)
	public := web.Base + "/prod-east/public"
	cfg := publishedConfig(public, www, store.Endpoint)
	replicas := []*stsissuer.Issuer{stsissuer.Start(t, envA, ca, cfg), stsissuer.Start(t, envA, ca, cfg)}
	client := procs.TLSClient(ca.Pool())

	fetch := func(url string) ([]byte, http.Header, error) {
		resp, err := client.Get(url)
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
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, _, err := fetch(public + "/.well-known/openid-configuration")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing published at %s: %v", public, err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	t.Run("the published discovery document names the public URL byte for byte", func(t *testing.T) {
		body, h, err := fetch(public + "/.well-known/openid-configuration")
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatal(err)
		}
		if doc.Issuer != public || doc.JWKSURI != public+"/jwks" {
			t.Errorf("issuer %q jwks_uri %q; want %q and its /jwks", doc.Issuer, doc.JWKSURI, public)
		}
		if cc := h.Get("Cache-Control"); cc != "public, max-age=1" {
			t.Errorf("nginx Cache-Control %q", cc)
		}
	})

	// Relying party 1: cluster B's API server, pointed at the public URL.
	dir := t.TempDir()
	authnFile := filepath.Join(dir, "authentication-config.yaml")
	if err := os.WriteFile(authnFile, []byte(authenticationConfiguration(public, ca.CertPEM)), 0o644); err != nil {
		t.Fatal(err)
	}
	envB, err := controlplane.Start(ctx, map[string][]string{"authentication-config": {authnFile}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = envB.Stop()
		envB.TidyLogs(t.Failed())
	})
	grantInB(ctx, t, envB.Clientset)

	// Relying party 2: Vault's JWT auth, discovering the public URL.
	vaultBin, err := controlplane.Binary(ctx, "vault")
	if err != nil {
		t.Fatal(err)
	}
	_, vaultAddr := vaultdev.Start(t, t.TempDir(), vaultBin)
	vaultdev.EnableJWT(ctx, t, vaultAddr, "kube-sts-public", public, ca.CertPEM, "payments", map[string]any{"bound_audiences": []string{audienceB},
		"bound_claims": map[string]string{"cluster": cluster, "namespace": "payments"}, "token_ttl": "1m", "token_policies": []string{"default"}})

	pod := kube.Workload(ctx, t, envA.Clientset, "payments", "api", "api-0")
	mint := func(i int) string {
		t.Helper()
		iss := replicas[i%len(replicas)]
		r, err := iss.Exchange(ctx, iss.Base+"/prod-east/public", kube.PodToken(ctx, t, envA.Clientset, pod, public))
		if err != nil || r.Status != http.StatusOK {
			t.Fatalf("exchange at replica %d: %v %+v", i%len(replicas), err, r.Error)
		}
		return r.Response.AccessToken
	}
	bootstrap := mint(0)
	waitReview(ctx, t, clientFor(t, envB.Config, bootstrap))

	// Watch the published JWKS as a relying party does, every 200 ms: when
	// each key first appeared, and which keys are there now.
	var mu sync.Mutex
	firstPublished := map[string]time.Time{}
	present := map[string]bool{}
	var watchErr error
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for watchCtx.Err() == nil {
			body, h, err := fetch(public + "/jwks")
			mu.Lock()
			if err != nil && watchErr == nil {
				watchErr = err
			}
			if err == nil {
				if cc := h.Get("Cache-Control"); cc != "public, max-age=1" && watchErr == nil {
					watchErr = fmt.Errorf("published JWKS Cache-Control %q", cc)
				}
				present = map[string]bool{}
				for _, k := range kids(t, body) {
					present[k] = true
					if _, ok := firstPublished[k]; !ok {
						firstPublished[k] = time.Now()
					}
				}
			}
			mu.Unlock()
			time.Sleep(200 * time.Millisecond)
		}
	}()

	t.Run("B and Vault accept every token across two rotations, and the published JWKS keeps the key plan", func(t *testing.T) {
		type minted struct {
			kid string
			exp time.Time
		}
		var tokens []minted
		firstUsed := map[string]time.Time{}
		refusals := 0
		deadline := time.Now().Add(2*rotateEvery + 3*rotateEvery)
		for i := 1; ; i++ {
			tok := mint(i)
			k := kid(t, tok)
			if _, ok := firstUsed[k]; !ok {
				firstUsed[k] = time.Now()
			}
			tokens = append(tokens, minted{k, expiry(t, tok)})
			if _, err := clientFor(t, envB.Config, tok).AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{}); err != nil {
				refusals++
				t.Errorf("cluster B refused a token of key %s: %v", k, err)
			}
			if code, b := vaultdev.Login(ctx, t, vaultAddr, "kube-sts-public", "payments", tok); code != http.StatusOK {
				refusals++
				t.Errorf("Vault refused a token of key %s: %d %s", k, code, b)
			}
			// Every unexpired token's key is still published.
			mu.Lock()
			for _, m := range tokens {
				if time.Until(m.exp) > time.Second && !present[m.kid] {
					t.Errorf("key %s left the published JWKS while a token it signed is valid until %s", m.kid, m.exp.Format(time.RFC3339))
				}
			}
			mu.Unlock()
			if len(firstUsed) >= 3 || time.Now().After(deadline) {
				break
			}
			time.Sleep(2 * time.Second)
		}
		if len(firstUsed) < 3 {
			t.Fatalf("saw %d signing keys in %v; want at least two rotations", len(firstUsed), 5*rotateEvery)
		}
		mu.Lock()
		defer mu.Unlock()
		if watchErr != nil {
			t.Errorf("reading the published JWKS: %v", watchErr)
		}
		for k, used := range firstUsed {
			pub, ok := firstPublished[k]
			switch {
			case !ok:
				t.Errorf("key %s signed but was never published", k)
			case k == kid(t, bootstrap):
				// The first key signs at once: no relying party can have
				// cached an older JWKS of this issuer.
			case used.Sub(pub) < publishAhead-time.Second:
				t.Errorf("key %s was published %v before it signed; want at least publishAhead (%v) less the resync", k, used.Sub(pub).Round(time.Millisecond), publishAhead)
			}
		}
		t.Logf("%d tokens, %d keys, %d refusals; published ahead of first use: %v", len(tokens), len(firstUsed), refusals, aheadOf(firstUsed, firstPublished))
	})
	stopWatch()
	<-watched

	t.Run("the bucket holds the same documents, with Cache-Control and the key-set generation", func(t *testing.T) {
		dirJWKS, _, err := fetch(public + "/jwks")
		if err != nil {
			t.Fatal(err)
		}
		gen, err := os.ReadFile(filepath.Join(www, "prod-east/public/.kube-sts-generation"))
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			obj, err := store.Client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("prod-east/public/jwks")})
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(obj.Body)
			obj.Body.Close()
			if bytes.Equal(body, dirJWKS) {
				if cc := aws.ToString(obj.CacheControl); cc != "public, max-age=1" {
					t.Errorf("object Cache-Control %q, want at most jwksMaxAge", cc)
				}
				if g := obj.Metadata["kube-sts-generation"]; g != strings.TrimSpace(string(gen)) {
					t.Errorf("object generation %q, directory %q", g, gen)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the bucket's JWKS differs from the directory's:\n%s\n%s", body, dirJWKS)
			}
			time.Sleep(time.Second)
		}
		resp, err := store.Get(ctx, bucket, "prod-east/public/.well-known/openid-configuration")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "public, max-age=1" || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("anonymous GET of the bucket's discovery document: %s, Cache-Control %q, Content-Type %q",
				resp.Status, resp.Header.Get("Cache-Control"), resp.Header.Get("Content-Type"))
		}
	})

	t.Run("a target that fails makes /readyz say so after unreadyAfter", func(t *testing.T) {
		store.Stop()
		deadline := time.Now().Add(45 * time.Second)
		for {
			resp, err := replicas[0].Client.Get(replicas[0].Base + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable {
				if !strings.Contains(string(body), "publishing to s3://oidc/") {
					t.Errorf("readyz: %s", body)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("readyz still %s 45 s after the bucket went away (unreadyAfter 5s, interval 10s)", resp.Status)
			}
			time.Sleep(time.Second)
		}
		metrics, _, err := fetch(replicas[0].MetricsURL)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range [][]string{
			{`sts_issuer_publish_total{`, `result="published"`, `target="directory:` + www + `"`},
			{`sts_issuer_publish_total{`, `result="error"`, `target="s3://oidc/ at ` + store.Endpoint + `"`},
			{`sts_issuer_publish_last_success_timestamp_seconds{`, `target="directory:` + www + `"`},
		} {
			if !hasLine(string(metrics), want...) {
				t.Errorf("no metric line with all of %q", want)
			}
		}
	})
}

func kids(t *testing.T, jwks []byte) []string {
	t.Helper()
	k, err := stsissuer.KIDs(jwks)
	if err != nil {
		t.Errorf("published %v", err)
	}
	return k
}

func aheadOf(used, published map[string]time.Time) map[string]string {
	out := map[string]string{}
	for k, u := range used {
		out[k[:8]] = u.Sub(published[k]).Round(100 * time.Millisecond).String()
	}
	return out
}

// hasLine reports whether one line of text contains every part.
func hasLine(text string, parts ...string) bool {
	for _, line := range strings.Split(text, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}
