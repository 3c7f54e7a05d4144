package publish

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kube-sts/kube-sts/issuer/internal/config"
)

// AzureMetadataGeneration is the metadata name that carries the generation
// on every blob an AzureBlob writes (x-ms-meta-kube_sts_generation: Azure's
// metadata names are C# identifiers, so no '-').
const AzureMetadataGeneration = "kube_sts_generation"

// azureVersion is the Blob service REST API version we speak (2017-11-09 or
// later is needed for Entra ID tokens).
const azureVersion = "2021-12-02"

// Environment variables an AzureBlob target reads its credential from, in
// this order of precedence. The last three are what Azure's workload
// identity webhook puts into a Pod (AZURE_AUTHORITY_HOST too).
const (
	EnvAzureSAS            = "AZURE_STORAGE_SAS_TOKEN"
	EnvAzureKey            = "AZURE_STORAGE_KEY"
	EnvAzureClientID       = "AZURE_CLIENT_ID"
	EnvAzureTenantID       = "AZURE_TENANT_ID"
	EnvAzureFederatedToken = "AZURE_FEDERATED_TOKEN_FILE"
	EnvAzureAuthorityHost  = "AZURE_AUTHORITY_HOST"
)

// AzureBlob is an Azure Blob Storage container target, written through the
// Blob service's REST API (Put Blob, Get Blob). Each blob carries the
// generation as metadata, its content type and Cache-Control; the JWKS is
// written on condition that its ETag is still the one Read saw (If-Match, or
// If-None-Match: * when there was none), as Bucket does on S3.
type AzureBlob struct {
	t       config.AzureBlobTarget
	client  *http.Client
	service string // the blob service's URL without a trailing '/'
	auth    azureAuth
	name    string

	mu    sync.Mutex
	etags map[string]string
}

// azureAuth signs or authorizes one request.
type azureAuth interface {
	authorize(ctx context.Context, req *http.Request) error
}

// NewAzureBlob builds the client for t with the first credential the
// environment holds (EnvAzureSAS, EnvAzureKey, then workload identity); an
// issuer without any stops at start. Credentials are never logged.
func NewAzureBlob(t config.AzureBlobTarget) (*AzureBlob, error) {
	tr, err := transport(t.CAFile)
	if err != nil {
		return nil, fmt.Errorf("azureBlob caFile: %w", err)
	}
	client := &http.Client{Transport: tr}
	auth, err := azureAuthFromEnv(t.Account, client)
	if err != nil {
		return nil, err
	}
	service := "https://" + t.Account + config.AzureBlobHostSuffix
	if t.Endpoint != "" {
		service = trimSlash(t.Endpoint)
	}
	return &AzureBlob{t: t, client: client, service: service, auth: auth, name: config.PublishTarget{AzureBlob: &t}.String(), etags: map[string]string{}}, nil
}

func azureAuthFromEnv(account string, client *http.Client) (azureAuth, error) {
	if sas := strings.TrimPrefix(strings.TrimSpace(os.Getenv(EnvAzureSAS)), "?"); sas != "" {
		if q, err := url.ParseQuery(sas); err != nil || q.Get("sig") == "" {
			return nil, fmt.Errorf("azureBlob: %s is not a SAS token (a query string with sig=...)", EnvAzureSAS)
		}
		return sasAuth{query: sas}, nil
	}
	if k := os.Getenv(EnvAzureKey); k != "" {
		key, err := base64.StdEncoding.DecodeString(k)
		if err != nil || len(key) == 0 {
			return nil, fmt.Errorf("azureBlob: %s is not a base64 account key", EnvAzureKey)
		}
		return sharedKey{account: account, key: key}, nil
	}
	id, tenant, file := os.Getenv(EnvAzureClientID), os.Getenv(EnvAzureTenantID), os.Getenv(EnvAzureFederatedToken)
	if id != "" && tenant != "" && file != "" {
		authority := os.Getenv(EnvAzureAuthorityHost)
		if authority == "" {
			authority = "https://login.microsoftonline.com/"
		}
		return &entraToken{tokenURL: strings.TrimRight(authority, "/") + "/" + url.PathEscape(tenant) + "/oauth2/v2.0/token",
			clientID: id, assertionFile: file, client: client}, nil
	}
	return nil, fmt.Errorf("azureBlob: no credential: set %s, %s, or workload identity's %s, %s and %s",
		EnvAzureSAS, EnvAzureKey, EnvAzureClientID, EnvAzureTenantID, EnvAzureFederatedToken)
}

func (a *AzureBlob) String() string { return a.name }

// url is a blob's URL; each segment of its name is escaped.
func (a *AzureBlob) url(blob string) string {
	segs := strings.Split(blob, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return a.service + "/" + url.PathEscape(a.t.Container) + "/" + strings.Join(segs, "/")
}

// prepare sets the service's version and date headers and authorizes req:
// the last step before sending it, as Shared Key signs every header.
func (a *AzureBlob) prepare(ctx context.Context, req *http.Request) error {
	req.Header.Set("x-ms-version", azureVersion)
	req.Header.Set("x-ms-date", time.Now().UTC().Format(http.TimeFormat))
	return a.auth.authorize(ctx, req)
}

// Read gets the JWKS blob, its ETag and the generation in its metadata.
func (a *AzureBlob) Read(ctx context.Context, base string) (string, []byte, bool, error) {
	blob := a.t.Name(base, NameJWKS)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.url(blob), nil)
	if err != nil {
		return "", nil, false, err
	}
	if err := a.prepare(ctx, req); err != nil {
		return "", nil, false, fmt.Errorf("read %s: %w", blob, err)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return "", nil, false, fmt.Errorf("read %s: %w", blob, err)
	}
	defer drain(resp)
	switch {
	case resp.StatusCode == http.StatusNotFound && resp.Header.Get("x-ms-error-code") == "BlobNotFound":
		a.setETag(base, "")
		return "", nil, false, nil
	case resp.StatusCode != http.StatusOK: // a missing container too: nothing could be written
		return "", nil, false, fmt.Errorf("read %s: %w", blob, statusError("azure", resp))
	}
	jwks, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKS))
	if err != nil {
		return "", nil, false, fmt.Errorf("read %s: %w", blob, err)
	}
	a.setETag(base, resp.Header.Get("ETag"))
	return resp.Header.Get("x-ms-meta-" + AzureMetadataGeneration), jwks, true, nil
}

func (a *AzureBlob) setETag(base, etag string) {
	a.mu.Lock()
	a.etags[base] = etag
	a.mu.Unlock()
}

// Put writes each object as a block blob. The JWKS is written on condition
// that it is still what the last Read saw; when it is not, Put writes
// nothing more and returns ErrChanged.
func (a *AzureBlob) Put(ctx context.Context, base string, objs []Object, cacheControl, gen string) error {
	a.mu.Lock()
	etag, read := a.etags[base]
	a.mu.Unlock()
	for _, o := range objs {
		blob := a.t.Name(base, o.Name)
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, a.url(blob), bytes.NewReader(o.Body))
		if err != nil {
			return err
		}
		req.Header.Set("x-ms-blob-type", "BlockBlob")
		req.Header.Set("x-ms-blob-content-type", o.ContentType)
		req.Header.Set("x-ms-blob-cache-control", cacheControl)
		req.Header.Set("x-ms-meta-"+AzureMetadataGeneration, gen)
		if o.Name == NameJWKS && read {
			if etag == "" {
				req.Header.Set("If-None-Match", "*")
			} else {
				req.Header.Set("If-Match", etag)
			}
		}
		if err := a.prepare(ctx, req); err != nil {
			return fmt.Errorf("put %s: %w", blob, err)
		}
		if err := putResult("azure", blob, a.client, req); err != nil {
			return err
		}
	}
	return nil
}

// sasAuth appends a shared access signature to every request, as given
// (its signature stays byte for byte what Azure signed).
type sasAuth struct{ query string }

func (s sasAuth) authorize(_ context.Context, req *http.Request) error {
	if req.URL.RawQuery == "" {
		req.URL.RawQuery = s.query
	} else {
		req.URL.RawQuery += "&" + s.query
	}
	return nil
}

// sharedKey signs requests with the storage account's key (Shared Key
// authorization of the Blob service).
type sharedKey struct {
	account string
	key     []byte
}

func (s sharedKey) authorize(_ context.Context, req *http.Request) error {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(sharedKeyStringToSign(s.account, req)))
	req.Header.Set("Authorization", "SharedKey "+s.account+":"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	return nil
}

// sharedKeyStringToSign is the Blob service's string to sign for req: the
// verb, twelve standard headers (Content-Length empty when 0; Date empty, as
// x-ms-date is set), the x-ms-* headers lowercased and sorted, and the
// resource: /<account><path>, then each query parameter lowercased and
// sorted. On a path-style endpoint (Azurite) the path starts with the
// account, which therefore appears twice.
func sharedKeyStringToSign(account string, req *http.Request) string {
	length := ""
	if req.ContentLength > 0 {
		length = strconv.FormatInt(req.ContentLength, 10)
	}
	h := req.Header
	var b strings.Builder
	for _, v := range []string{req.Method, h.Get("Content-Encoding"), h.Get("Content-Language"), length, h.Get("Content-MD5"),
		h.Get("Content-Type"), h.Get("Date"), h.Get("If-Modified-Since"), h.Get("If-Match"), h.Get("If-None-Match"),
		h.Get("If-Unmodified-Since"), h.Get("Range")} {
		b.WriteString(v)
		b.WriteByte('\n')
	}
	var names []string
	for k := range h {
		if lk := strings.ToLower(k); strings.HasPrefix(lk, "x-ms-") {
			names = append(names, lk)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		b.WriteString(n + ":" + strings.Join(strings.Fields(strings.Join(h.Values(n), ",")), " ") + "\n")
	}
	b.WriteString("/" + account + req.URL.EscapedPath())
	q := req.URL.Query()
	keys := make([]string, 0, len(q))
	lower := map[string][]string{}
	for k, v := range q {
		lk := strings.ToLower(k)
		if _, ok := lower[lk]; !ok {
			keys = append(keys, lk)
		}
		lower[lk] = append(lower[lk], v...)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := lower[k]
		sort.Strings(v)
		b.WriteString("\n" + k + ":" + strings.Join(v, ","))
	}
	return b.String()
}

// entraToken authorizes requests with a Microsoft Entra ID access token for
// Azure Storage, obtained with workload identity: the federated token in
// assertionFile (re-read for every new access token, as it rotates) is the
// client assertion of a client credentials grant.
type entraToken struct {
	tokenURL, clientID, assertionFile string
	client                            *http.Client

	mu      sync.Mutex
	token   string
	refresh time.Time
}

// storageScope is Azure Storage's resource, as an OAuth scope.
const storageScope = "https://storage.azure.com/.default"

func (e *entraToken) authorize(ctx context.Context, req *http.Request) error {
	tok, err := e.get(ctx)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	return nil
}

func (e *entraToken) get(ctx context.Context) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.token != "" && time.Now().Before(e.refresh) {
		return e.token, nil
	}
	assertion, err := os.ReadFile(e.assertionFile)
	if err != nil {
		return "", fmt.Errorf("workload identity: read %s: %w", EnvAzureFederatedToken, err)
	}
	form := url.Values{
		"client_id": {e.clientID}, "scope": {storageScope}, "grant_type": {"client_credentials"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {strings.TrimSpace(string(assertion))},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := e.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("workload identity: %w", err)
	}
	defer drain(resp)
	var body struct {
		AccessToken string          `json:"access_token"`
		ExpiresIn   json.RawMessage `json:"expires_in"` // a number, or a string of one
		Error       string          `json:"error"`
		Description string          `json:"error_description"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body); err != nil && resp.StatusCode == http.StatusOK {
		return "", fmt.Errorf("workload identity: the token endpoint's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK || body.AccessToken == "" {
		// Entra ID's error and description name the problem (AADSTS codes);
		// neither echoes the assertion.
		return "", fmt.Errorf("workload identity: the token endpoint answered %s: %s %s", resp.Status, body.Error, firstLine(body.Description))
	}
	secs, err := strconv.Atoi(strings.Trim(string(body.ExpiresIn), `"`))
	if err != nil || secs <= 0 {
		return "", errors.New("workload identity: the token endpoint's answer has no expires_in")
	}
	life := time.Duration(secs) * time.Second
	e.token, e.refresh = body.AccessToken, time.Now().Add(life-min(5*time.Minute, life/2))
	return e.token, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(line)
}
