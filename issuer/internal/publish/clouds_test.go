package publish

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-sts/kube-sts/issuer/internal/config"
)

// The bucket-like targets against in-memory servers speaking their APIs'
// subsets (S3 and Azure Blob: fakeS3; GCS's JSON API: fakeGCS). The real
// services' emulators (SeaweedFS, fake-gcs-server, Azurite) check them in
// e2e/othercluster and e2e/cloudpublish.

// fakeStore is what the tests do to a fake server beside the target.
type fakeStore interface {
	set(key, body, gen string)
	get(key string) string
	onPut(func(key string))
	conditionals() int
}

// cloudStore is a bucket-like target, its fake server and the key the
// publisher's JWKS for base "aws" lands at.
type cloudStore struct {
	target  Target
	fake    fakeStore
	jwksKey string
}

func cloudStores(t *testing.T) map[string]cloudStore {
	b, f := newFakeBucket(t)
	g, fg := newFakeGCSTarget(t, config.GCSTarget{Bucket: "oidc"})
	// The Azure dialect of fakeS3: container oidc, a SAS for a credential.
	fa := &fakeS3{objects: map[string]fakeObject{}}
	srv := httptest.NewServer(fa)
	t.Cleanup(srv.Close)
	t.Setenv(EnvAzureSAS, "sv=2021-12-02&sig=test")
	a, err := NewAzureBlob(config.AzureBlobTarget{Account: "acct", Container: "oidc", Endpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]cloudStore{
		"s3":        {b, f, "oidc/aws/jwks"},
		"gcs":       {g, fg, "aws/jwks"},
		"azureBlob": {a, fa, "oidc/aws/jwks"},
	}
}

// fakeGCS is an in-memory bucket behind GCS's JSON API: objects.get (the
// resource, or its media with alt=media at a generation) and objects.insert
// with a multipart upload and ifGenerationMatch.
type fakeGCS struct {
	bucket string

	mu          sync.Mutex
	objects     map[string]gcsFakeObject
	seq         int64
	conditional int
	beforePut   func(key string)
}

type gcsFakeObject struct {
	body                      []byte
	gen                       int64
	meta                      map[string]string
	contentType, cacheControl string
}

func newFakeGCSTarget(t *testing.T, tc config.GCSTarget) (*GCS, *fakeGCS) {
	t.Helper()
	f := &fakeGCS{bucket: tc.Bucket, objects: map[string]gcsFakeObject{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	tc.Endpoint, tc.Anonymous = srv.URL, true
	g, err := NewGCS(context.Background(), tc)
	if err != nil {
		t.Fatal(err)
	}
	return g, f
}

func (f *fakeGCS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	get := "/storage/v1/b/" + f.bucket + "/o/"
	switch {
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.EscapedPath(), get):
		// The name is one escaped path segment ('/' as %2F), as GCS wants it.
		name, err := url.PathUnescape(strings.TrimPrefix(r.URL.EscapedPath(), get))
		if err != nil || strings.Contains(strings.TrimPrefix(r.URL.EscapedPath(), get), "/") {
			http.Error(w, "object name not escaped", http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		o, ok := f.objects[name]
		f.mu.Unlock()
		if !ok || (r.URL.Query().Get("generation") != "" && r.URL.Query().Get("generation") != strconv.FormatInt(o.gen, 10)) {
			http.Error(w, `{"error":{"code":404,"message":"No such object"}}`, http.StatusNotFound)
			return
		}
		if r.URL.Query().Get("alt") == "media" {
			w.Header().Set("Content-Type", o.contentType)
			_, _ = w.Write(o.body)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"name": name, "generation": strconv.FormatInt(o.gen, 10), "metadata": o.meta,
			"contentType": o.contentType, "cacheControl": o.cacheControl})
	case r.Method == http.MethodPost && r.URL.Path == "/upload/storage/v1/b/"+f.bucket+"/o" && r.URL.Query().Get("uploadType") == "multipart":
		f.insert(w, r)
	default:
		http.Error(w, "not a call this fake knows: "+r.Method+" "+r.URL.Path, http.StatusNotImplemented)
	}
}

func (f *fakeGCS) insert(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if f.beforePut != nil {
		f.beforePut(name)
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/related" {
		http.Error(w, "want multipart/related", http.StatusBadRequest)
		return
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	var meta struct {
		Name, ContentType, CacheControl string
		Metadata                        map[string]string
	}
	part, err := mr.NextPart()
	if err == nil {
		err = json.NewDecoder(part).Decode(&meta)
	}
	var body []byte
	var media *multipart.Part
	if err == nil {
		media, err = mr.NextPart()
	}
	if err == nil {
		body, err = io.ReadAll(media)
	}
	if err != nil || meta.Name != name || media.Header.Get("Content-Type") != meta.ContentType {
		http.Error(w, fmt.Sprintf("bad multipart body: %v (name %q)", err, meta.Name), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cur := f.objects[name]
	if c := r.URL.Query().Get("ifGenerationMatch"); c != "" {
		f.conditional++
		if c != strconv.FormatInt(cur.gen, 10) {
			http.Error(w, `{"error":{"code":412,"message":"conditionNotMet"}}`, http.StatusPreconditionFailed)
			return
		}
	}
	f.seq++
	f.objects[name] = gcsFakeObject{body: body, gen: f.seq, meta: meta.Metadata, contentType: meta.ContentType, cacheControl: meta.CacheControl}
	_ = json.NewEncoder(w).Encode(map[string]any{"name": name, "generation": strconv.FormatInt(f.seq, 10)})
}

func (f *fakeGCS) set(key, body, gen string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	meta := map[string]string{}
	if gen != "" {
		meta[MetadataGeneration] = gen
	}
	f.objects[key] = gcsFakeObject{body: []byte(body), gen: f.seq, meta: meta, contentType: ContentTypeJWKS}
}

func (f *fakeGCS) get(key string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return string(f.objects[key].body)
}

func (f *fakeGCS) onPut(hook func(key string)) { f.beforePut = hook }
func (f *fakeGCS) conditionals() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conditional
}

// TestCloudObjectsCarryTheirHeaders: what relying parties and caches read
// of each object on GCS and Azure: its content type, Cache-Control, the
// generation, and the names below the issuer path, leaving out the bucket
// or the account and container a path-style issuer URL carries.
func TestCloudObjectsCarryTheirHeaders(t *testing.T) {
	ctx := context.Background()
	objs := []Object{{Name: NameJWKS, Body: []byte(jwksOf("k1")), ContentType: ContentTypeJWKS},
		{Name: NameDiscovery, Body: []byte(`{"issuer":"x"}`), ContentType: ContentTypeDiscovery}}

	g, fg := newFakeGCSTarget(t, config.GCSTarget{Bucket: "oidc", Prefix: "clusters/"})
	if err := g.Put(ctx, "oidc/prod/vault", objs, "public, max-age=60", "gen1"); err != nil {
		t.Fatal(err)
	}
	d := fg.objects["clusters/prod/vault/"+NameDiscovery]
	if d.contentType != ContentTypeDiscovery || d.cacheControl != "public, max-age=60" || d.meta[MetadataGeneration] != "gen1" || string(d.body) != `{"issuer":"x"}` {
		t.Errorf("gcs discovery object: %+v", d)
	}

	fa := &fakeS3{objects: map[string]fakeObject{}}
	srv := httptest.NewServer(fa)
	t.Cleanup(srv.Close)
	t.Setenv(EnvAzureSAS, "sv=2021-12-02&sig=test")
	a, err := NewAzureBlob(config.AzureBlobTarget{Account: "acct", Container: "oidc", Endpoint: srv.URL + "/acct"})
	if err != nil {
		t.Fatal(err)
	}
	// An issuer at https://<emulator>/acct/oidc/prod: account and container lead the path.
	if err := a.Put(ctx, "acct/oidc/prod", objs, "public, max-age=60", "gen1"); err != nil {
		t.Fatal(err)
	}
	o, ok := fa.objects["acct/oidc/prod/"+NameJWKS]
	if !ok {
		t.Fatalf("azure: blobs at %v, want acct/oidc/prod/jwks (container oidc, blob prod/jwks)", keysOf(fa.objects))
	}
	if o.meta.Get("X-Ms-Meta-"+AzureMetadataGeneration) != "gen1" {
		t.Errorf("azure jwks metadata: %v", o.meta)
	}
}

func keysOf[V any](m map[string]V) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	return k
}

// TestSharedKeyStringToSign: the Blob service's canonical request, as
// Azurite recomputes it (e2e/cloudpublish signs real requests against it):
// a Content-Length of 0 is empty, Date is empty beside x-ms-date, the
// x-ms-* headers come lowercased and sorted with their whitespace folded,
// the resource repeats the account on a path-style endpoint, and query
// parameters come lowercased and sorted.
func TestSharedKeyStringToSign(t *testing.T) {
	req := httptest.NewRequest(http.MethodPut, "http://127.0.0.1:10000/devstoreaccount1/oidc?restype=container&Comp=x", nil)
	req.ContentLength = 0
	req.Header.Set("x-ms-version", azureVersion)
	req.Header.Set("X-Ms-Date", "Fri, 04 Dec 2026 21:00:00 GMT")
	req.Header.Set("x-ms-blob-public-access", "  blob  ")
	req.Header.Set("If-None-Match", "*")
	got := sharedKeyStringToSign("devstoreaccount1", req)
	want := "PUT\n\n\n\n\n\n\n\n\n*\n\n\n" +
		"x-ms-blob-public-access:blob\nx-ms-date:Fri, 04 Dec 2026 21:00:00 GMT\nx-ms-version:" + azureVersion + "\n" +
		"/devstoreaccount1/devstoreaccount1/oidc\ncomp:x\nrestype:container"
	if got != want {
		t.Errorf("string to sign:\n%q\nwant\n%q", got, want)
	}
	req = httptest.NewRequest(http.MethodPut, "https://acct.blob.core.windows.net/oidc/prod/jwks", strings.NewReader("abc"))
	if got := sharedKeyStringToSign("acct", req); !strings.HasPrefix(got, "PUT\n\n\n3\n") || !strings.HasSuffix(got, "\n/acct/oidc/prod/jwks") {
		t.Errorf("string to sign of a 3-byte put on Azure: %q", got)
	}
}

// TestAzureCredentialFromEnvironment: the first credential the environment
// holds is used, an unusable one stops the target at start naming the
// variable (never its value), and none at all says which to set.
func TestAzureCredentialFromEnvironment(t *testing.T) {
	for _, v := range []string{EnvAzureSAS, EnvAzureKey, EnvAzureClientID, EnvAzureTenantID, EnvAzureFederatedToken} {
		t.Setenv(v, "")
	}
	tc := config.AzureBlobTarget{Account: "acct", Container: "oidc"}
	if _, err := NewAzureBlob(tc); err == nil || !strings.Contains(err.Error(), "no credential") {
		t.Fatalf("no credential: %v", err)
	}
	t.Setenv(EnvAzureKey, "not base64!")
	if _, err := NewAzureBlob(tc); err == nil || !strings.Contains(err.Error(), EnvAzureKey) || strings.Contains(err.Error(), "not base64!") {
		t.Fatalf("bad key: %v", err)
	}
	t.Setenv(EnvAzureKey, "a2V5")
	a, err := NewAzureBlob(tc)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a.auth.(sharedKey); !ok || a.service != "https://acct.blob.core.windows.net" {
		t.Fatalf("with a key: %T at %s", a.auth, a.service)
	}
	t.Setenv(EnvAzureSAS, "?sv=1&sig=abc")
	if a, err := NewAzureBlob(tc); err != nil {
		t.Fatal(err)
	} else if _, ok := a.auth.(sasAuth); !ok {
		t.Fatalf("a SAS beside a key: %T, want the SAS", a.auth)
	}
	t.Setenv(EnvAzureSAS, "sv=1")
	if _, err := NewAzureBlob(tc); err == nil || !strings.Contains(err.Error(), "not a SAS token") {
		t.Fatalf("a SAS without sig: %v", err)
	}
	// The SAS goes on each request as given: its signature byte for byte.
	var query string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		query = r.URL.RawQuery
		w.Header().Set("x-ms-error-code", "BlobNotFound")
		w.WriteHeader(http.StatusNotFound)
	}))
	t.Cleanup(srv.Close)
	t.Setenv(EnvAzureSAS, "?sv=2021-12-02&sp=rw&sig=a%2Bb%2F%3D")
	tc.Endpoint = srv.URL
	a, err = NewAzureBlob(tc)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := a.Read(context.Background(), "aws"); err != nil || query != "sv=2021-12-02&sp=rw&sig=a%2Bb%2F%3D" {
		t.Fatalf("read with a SAS: %v, query %q", err, query)
	}
}

// TestAzureWorkloadIdentity: with workload identity the target asks Entra
// ID's token endpoint (AZURE_AUTHORITY_HOST) for a Storage token with the
// federated token as client assertion, re-reading the file for each new
// access token, sends it as a bearer token, and reuses it until close to
// its expiry; a refusal is an error naming Entra's error code.
func TestAzureWorkloadIdentity(t *testing.T) {
	for _, v := range []string{EnvAzureSAS, EnvAzureKey} {
		t.Setenv(v, "")
	}
	var (
		mu         sync.Mutex
		assertions []string
		expiresIn  = 3600
		refuse     bool
	)
	entra := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/tenant-1/oauth2/v2.0/token" || r.ParseForm() != nil {
			http.Error(w, "wrong path", http.StatusNotFound)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		f := r.PostForm
		if f.Get("client_id") != "client-1" || f.Get("scope") != storageScope || f.Get("grant_type") != "client_credentials" ||
			f.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		if refuse {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"invalid_client","error_description":"AADSTS700213: No matching federated identity record found.\nTrace ID: x"}`)
			return
		}
		assertions = append(assertions, f.Get("client_assertion"))
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("access-%d", len(assertions)), "expires_in": expiresIn})
	}))
	t.Cleanup(entra.Close)
	var bearers []string
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		bearers = append(bearers, r.Header.Get("Authorization"))
		mu.Unlock()
		if r.Header.Get("x-ms-version") < "2017-11-09" {
			http.Error(w, "bearer tokens need a newer x-ms-version", http.StatusBadRequest)
			return
		}
		w.Header().Set("x-ms-error-code", "BlobNotFound")
		w.WriteHeader(http.StatusNotFound)
	}))
	t.Cleanup(storage.Close)
	file := filepath.Join(t.TempDir(), "azure-identity-token")
	if err := os.WriteFile(file, []byte("federated-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvAzureClientID, "client-1")
	t.Setenv(EnvAzureTenantID, "tenant-1")
	t.Setenv(EnvAzureFederatedToken, file)
	t.Setenv(EnvAzureAuthorityHost, entra.URL+"/")
	a, err := NewAzureBlob(config.AzureBlobTarget{Account: "acct", Container: "oidc", Endpoint: storage.URL})
	if err != nil {
		t.Fatal(err)
	}
	a.client = storage.Client() // the same plain HTTP client for both fakes
	a.auth.(*entraToken).client = entra.Client()
	ctx := context.Background()
	for range 2 {
		if _, _, found, err := a.Read(ctx, "aws"); err != nil || found {
			t.Fatalf("read: %v %v", found, err)
		}
	}
	// Rotated on disk, and the access token close to its expiry: a new one,
	// asked for with the new assertion.
	if err := os.WriteFile(file, []byte("federated-2"), 0o600); err != nil {
		t.Fatal(err)
	}
	a.auth.(*entraToken).refresh = time.Now().Add(-time.Second)
	if _, _, _, err := a.Read(ctx, "aws"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if strings.Join(assertions, ",") != "federated-1,federated-2" || strings.Join(bearers, ",") != "Bearer access-1,Bearer access-1,Bearer access-2" {
		t.Errorf("assertions %q, bearers %q", assertions, bearers)
	}
	refuse = true
	mu.Unlock()
	a.auth.(*entraToken).refresh = time.Now().Add(-time.Second)
	_, _, _, err = a.Read(ctx, "aws")
	if err == nil || !strings.Contains(err.Error(), "AADSTS700213") || strings.Contains(err.Error(), "federated-2") || strings.Contains(err.Error(), "Trace ID") {
		t.Fatalf("refused: %v", err)
	}
}

// TestStatusErrorQuotesNoAzureBody: an Azure refusal is reported by its
// error code alone (its error document may quote the request's signature);
// another service's error message is kept, on one line.
func TestStatusErrorQuotesNoAzureBody(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("x-ms-error-code", "AuthenticationFailed")
	rec.WriteHeader(http.StatusForbidden)
	_, _ = io.WriteString(rec, "<Error><AuthenticationErrorDetail>The MAC signature found in the HTTP request 'c2lnbmF0dXJl' is not ...</AuthenticationErrorDetail></Error>")
	err := statusError("azure", rec.Result())
	if err == nil || !strings.Contains(err.Error(), "403 Forbidden (AuthenticationFailed)") || strings.Contains(err.Error(), "c2lnbmF0dXJl") {
		t.Errorf("azure: %v", err)
	}
	rec = httptest.NewRecorder()
	rec.WriteHeader(http.StatusForbidden)
	_, _ = io.WriteString(rec, "{\"error\": {\"code\": 403,\n  \"message\": \"x@y.iam.gserviceaccount.com does not have storage.objects.create access\"}}")
	if err := statusError("gcs", rec.Result()); err == nil || !strings.Contains(err.Error(), `"message": "x@y.iam.gserviceaccount.com does not have storage.objects.create access"`) {
		t.Errorf("gcs: %v", err)
	}
}
