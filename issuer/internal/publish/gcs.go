package publish

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
	"strconv"
	"sync"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"github.com/kube-sts/kube-sts/issuer/internal/config"
)

// gcsScope is the OAuth scope that reads and writes objects.
const gcsScope = "https://www.googleapis.com/auth/devstorage.read_write"

// GCS is a Google Cloud Storage bucket target, written through the JSON API
// (objects.get, objects.insert with a multipart upload). Each object carries
// the generation as custom metadata (MetadataGeneration), its content type
// and Cache-Control; the JWKS is written on condition that its GCS
// generation is still the one Read saw (ifGenerationMatch, 0 for none), as
// Bucket does with ETags on S3.
type GCS struct {
	t      config.GCSTarget
	client *http.Client
	api    string // endpoint without a trailing '/'
	name   string

	mu          sync.Mutex
	generations map[string]int64 // per base: the JWKS object's generation at the last Read, 0 for none
}

// NewGCS builds the client for t: Application Default Credentials (GKE
// workload identity, GOOGLE_APPLICATION_CREDENTIALS), none when t is
// anonymous. They are found here, so an issuer without any stops at start.
func NewGCS(ctx context.Context, t config.GCSTarget) (*GCS, error) {
	base, err := transport(t.CAFile)
	if err != nil {
		return nil, fmt.Errorf("gcs caFile: %w", err)
	}
	client := &http.Client{Transport: base}
	if !t.Anonymous {
		creds, err := google.FindDefaultCredentials(ctx, gcsScope)
		if err != nil {
			return nil, fmt.Errorf("gcs credentials (Application Default Credentials): %w", err)
		}
		client = &http.Client{Transport: &oauth2.Transport{Source: creds.TokenSource, Base: base}}
	}
	api := "https://" + config.GCSPublicHost
	if t.Endpoint != "" {
		api = trimSlash(t.Endpoint)
	}
	return &GCS{t: t, client: client, api: api, name: config.PublishTarget{GCS: &t}.String(), generations: map[string]int64{}}, nil
}

func (g *GCS) String() string { return g.name }

// gcsObject is the part of the JSON API's object resource we read.
type gcsObject struct {
	Generation string            `json:"generation"`
	Metadata   map[string]string `json:"metadata"`
}

// Read reads the JWKS object's metadata (its generation and ours), then its
// content at that GCS generation, so both belong to the same write.
func (g *GCS) Read(ctx context.Context, base string) (string, []byte, bool, error) {
	object := g.t.Name(base, NameJWKS)
	u := g.api + "/storage/v1/b/" + url.PathEscape(g.t.Bucket) + "/o/" + url.PathEscape(object)
	var meta gcsObject
	found, err := g.get(ctx, u, func(r io.Reader) error { return json.NewDecoder(io.LimitReader(r, maxJWKS)).Decode(&meta) })
	switch {
	case err != nil:
		return "", nil, false, fmt.Errorf("read %s: %w", object, err)
	case !found:
		g.setGeneration(base, 0)
		return "", nil, false, nil
	}
	gen, err := strconv.ParseInt(meta.Generation, 10, 64)
	if err != nil || gen <= 0 {
		return "", nil, false, fmt.Errorf("read %s: the object's generation %q is not a positive number", object, meta.Generation)
	}
	var jwks []byte
	found, err = g.get(ctx, u+"?alt=media&generation="+meta.Generation, func(r io.Reader) (err error) {
		jwks, err = io.ReadAll(io.LimitReader(r, maxJWKS))
		return err
	})
	switch {
	case err != nil:
		return "", nil, false, fmt.Errorf("read %s: %w", object, err)
	case !found: // replaced between the two requests: read again next time
		return "", nil, false, fmt.Errorf("read %s: generation %d went away while reading; %w", object, gen, ErrChanged)
	}
	g.setGeneration(base, gen)
	return meta.Metadata[MetadataGeneration], jwks, true, nil
}

func (g *GCS) setGeneration(base string, gen int64) {
	g.mu.Lock()
	g.generations[base] = gen
	g.mu.Unlock()
}

// get GETs u and hands the body of a 200 to read; found is false on a 404.
func (g *GCS) get(ctx context.Context, u string, read func(io.Reader) error) (found bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, err
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return false, err
	}
	defer drain(resp)
	switch resp.StatusCode {
	case http.StatusOK:
		return true, read(resp.Body)
	case http.StatusNotFound:
		return false, nil
	}
	return false, statusError("gcs", resp)
}

// Put writes each object with a multipart upload (metadata, then media).
// The JWKS is written only if the object is still at the GCS generation the
// last Read saw; when it is not, Put writes nothing more and returns
// ErrChanged.
func (g *GCS) Put(ctx context.Context, base string, objs []Object, cacheControl, gen string) error {
	g.mu.Lock()
	cur, read := g.generations[base]
	g.mu.Unlock()
	for _, o := range objs {
		object := g.t.Name(base, o.Name)
		q := url.Values{"uploadType": {"multipart"}, "name": {object}}
		if o.Name == NameJWKS && read {
			q.Set("ifGenerationMatch", strconv.FormatInt(cur, 10))
		}
		body, contentType, err := gcsMultipart(object, o, cacheControl, gen)
		if err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.api+"/upload/storage/v1/b/"+url.PathEscape(g.t.Bucket)+"/o?"+q.Encode(), bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", contentType)
		if err := putResult("gcs", object, g.client, req); err != nil {
			return err
		}
	}
	return nil
}

// gcsMultipart is an objects.insert body: the object's metadata as JSON,
// then its content.
func gcsMultipart(object string, o Object, cacheControl, gen string) ([]byte, string, error) {
	meta, err := json.Marshal(map[string]any{
		"name": object, "contentType": o.ContentType, "cacheControl": cacheControl,
		"metadata": map[string]string{MetadataGeneration: gen},
	})
	if err != nil {
		return nil, "", err
	}
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for _, part := range []struct {
		contentType string
		body        []byte
	}{{"application/json; charset=UTF-8", meta}, {o.ContentType, o.Body}} {
		pw, err := w.CreatePart(textproto.MIMEHeader{"Content-Type": {part.contentType}})
		if err != nil {
			return nil, "", err
		}
		if _, err := pw.Write(part.body); err != nil {
			return nil, "", err
		}
	}
	if err := w.Close(); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), "multipart/related; boundary=" + w.Boundary(), nil
}
