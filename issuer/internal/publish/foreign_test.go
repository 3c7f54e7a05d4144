package publish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-sts/kube-sts/issuer/internal/config"
)

// jwksOf is a JWKS holding the keys named (their x is the name, so two keys
// of one kid can differ).
func jwksOf(kids ...string) string {
	var ks []string
	for _, k := range kids {
		id, x, _ := strings.Cut(k, "=")
		if x == "" {
			x = id
		}
		ks = append(ks, fmt.Sprintf(`{"kty":"EC","crv":"P-256","kid":%q,"x":%q,"y":"y"}`, id, x))
	}
	return `{"keys":[` + strings.Join(ks, ",") + `]}`
}

// fakeS3 is an in-memory S3 bucket served path-style: PUT and GET of
// objects with their x-amz-meta-* headers, 404 NoSuchKey otherwise.
type fakeS3 struct {
	mu      sync.Mutex
	objects map[string]fakeObject
	// drop makes PUTs succeed without storing (a target that lies).
	drop bool
	// conditional counts PUTs that carried If-Match or If-None-Match.
	conditional int
	// beforePut runs (unlocked) before each PUT is applied: a racing writer.
	beforePut func(key string)
}

type fakeObject struct {
	body []byte
	meta http.Header
	etag string
}

var etagSeq int

func (f *fakeS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := strings.TrimPrefix(r.URL.Path, "/")
	if r.Method == http.MethodPut && f.beforePut != nil {
		f.beforePut(key)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.Method {
	case http.MethodPut:
		cur, exists := f.objects[key]
		im, inm := r.Header.Get("If-Match"), r.Header.Get("If-None-Match")
		if im != "" || inm != "" {
			f.conditional++
		}
		if (im != "" && (!exists || cur.etag != im)) || (inm == "*" && exists) {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusPreconditionFailed)
			_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>`)
			return
		}
		body, _ := io.ReadAll(r.Body)
		meta := http.Header{}
		for k, v := range r.Header {
			// S3's metadata and headers, and Azure's (x-ms-meta-*, x-ms-blob-*).
			if lk := strings.ToLower(k); strings.HasPrefix(lk, "x-amz-meta-") || strings.HasPrefix(lk, "x-ms-meta-") || k == "Content-Type" || k == "Cache-Control" {
				meta[k] = v
			}
		}
		etagSeq++
		etag := fmt.Sprintf(`"e%d"`, etagSeq)
		if !f.drop {
			f.objects[key] = fakeObject{body: body, meta: meta, etag: etag}
		}
		w.Header().Set("ETag", etag)
	case http.MethodGet, http.MethodHead:
		o, ok := f.objects[key]
		if !ok {
			w.Header().Set("x-ms-error-code", "BlobNotFound") // Azure's way of saying it
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>no such key</Message></Error>`)
			return
		}
		for k, v := range o.meta {
			w.Header()[k] = v
		}
		w.Header().Set("ETag", o.etag)
		w.Header().Set("Content-Length", fmt.Sprint(len(o.body)))
		if r.Method == http.MethodGet {
			_, _ = w.Write(o.body)
		}
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func (f *fakeS3) set(key, body, gen string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	meta := http.Header{}
	if gen != "" {
		meta.Set("X-Amz-Meta-"+MetadataGeneration, gen)
		meta.Set("X-Ms-Meta-"+AzureMetadataGeneration, gen)
	}
	etagSeq++
	f.objects[key] = fakeObject{body: []byte(body), meta: meta, etag: fmt.Sprintf(`"p%d"`, etagSeq)}
}

func (f *fakeS3) get(key string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return string(f.objects[key].body)
}

func (f *fakeS3) onPut(hook func(key string)) { f.beforePut = hook }
func (f *fakeS3) conditionals() int           { f.mu.Lock(); defer f.mu.Unlock(); return f.conditional }

func newFakeBucket(t *testing.T) (*Bucket, *fakeS3) {
	t.Helper()
	f := &fakeS3{objects: map[string]fakeObject{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	b, err := NewBucket(context.Background(), config.S3Target{Bucket: "oidc", Region: "us-east-1", Endpoint: srv.URL, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	return b, f
}

// target is one kind of publish target as the tests below drive it.
type target struct {
	Target
	plant func(gen, jwks string) // what a writer other than the issuer leaves
	jwks  func() string
}

func targets(t *testing.T) map[string]target {
	d := Dir{Root: t.TempDir()}
	m := map[string]target{
		"directory": {Target: d,
			plant: func(gen, jwks string) {
				_ = os.MkdirAll(filepath.Join(d.Root, "aws"), 0o755)
				_ = os.WriteFile(filepath.Join(d.Root, "aws", NameJWKS), []byte(jwks), 0o644)
				_ = os.WriteFile(filepath.Join(d.Root, "aws", GenerationFile), []byte(gen+"\n"), 0o644)
			},
			jwks: func() string { b, _ := os.ReadFile(filepath.Join(d.Root, "aws", NameJWKS)); return string(b) }},
	}
	for name, s := range cloudStores(t) {
		m[name] = target{Target: s.target,
			plant: func(gen, jwks string) { s.fake.set(s.jwksKey, jwks, gen) },
			jwks:  func() string { return s.fake.get(s.jwksKey) }}
	}
	return m
}

// TestTargetsRead: each target reads back the generation and the JWKS it
// wrote, and says "not found" before the first write (S3 through the real
// SDK against an in-memory bucket: a Read that always said "not found"
// would fail here).
func TestTargetsRead(t *testing.T) {
	ctx := context.Background()
	for name, tg := range targets(t) {
		t.Run(name, func(t *testing.T) {
			if _, _, found, err := tg.Read(ctx, "aws"); err != nil || found {
				t.Fatalf("before a write: found %v, %v", found, err)
			}
			g := gen(time.Hour, 0).String()
			objs := []Object{{Name: NameJWKS, Body: []byte(jwksOf("k1")), ContentType: ContentTypeJWKS},
				{Name: NameDiscovery, Body: []byte(`{}`), ContentType: ContentTypeDiscovery}}
			if err := tg.Put(ctx, "aws", objs, "public, max-age=60", g); err != nil {
				t.Fatal(err)
			}
			gotGen, jwks, found, err := tg.Read(ctx, "aws")
			if err != nil || !found || gotGen != g || string(jwks) != jwksOf("k1") {
				t.Fatalf("read back: %q %q %v %v", gotGen, jwks, found, err)
			}
			// A JWKS some other writer left without a generation.
			tg.plant("", jwksOf("x"))
			if gotGen, jwks, found, err := tg.Read(ctx, "aws"); err != nil || !found || gotGen != "" || string(jwks) != jwksOf("x") {
				t.Fatalf("foreign JWKS: %q %q %v %v", gotGen, jwks, found, err)
			}
		})
	}
}

// TestForeignGenerationOverwritten: a generation planted on the target that
// no replica of the issuer can have written is overwritten and counted as
// foreign, on the directory and the S3 target alike; a plausible peer's is
// left alone, but only for the grace.
func TestForeignGenerationOverwritten(t *testing.T) {
	ctx := context.Background()
	for name, tg := range targets(t) {
		t.Run(name, func(t *testing.T) {
			now := t0.Add(2 * time.Hour)
			var m recorded
			p := New(Options{Endpoint: "aws", Base: "aws", Target: tg.Target, Interval: time.Minute, SupersededGrace: 5 * time.Minute,
				Metrics: &m, Now: func() time.Time { return now }})
			ours := Documents{JWKS: []byte(jwksOf("k1")), Discovery: []byte(`{}`), Generation: gen(time.Hour, 0), SigningKeyID: "k1"}
			attempt := func(want string) {
				t.Helper()
				if err := p.Attempt(ctx, ours); err != nil {
					t.Fatal(err)
				}
				if m.last() != want {
					t.Fatalf("result %q, want %q", m.last(), want)
				}
			}
			far := Generation{Newest: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), Oldest: t0}
			for _, tc := range []struct{ what, gen, jwks string }{
				{"a generation dated 9999", far.String(), jwksOf("k1", "evil")},
				{"a newer generation without the signing key", gen(90*time.Minute, 0).String(), jwksOf("evil")},
				{"a newer generation whose signing key differs", gen(90*time.Minute, 0).String(), jwksOf("k1=other", "k2")},
			} {
				tg.plant(tc.gen, tc.jwks)
				attempt(ResultForeign)
				if got := tg.jwks(); got != jwksOf("k1") {
					t.Fatalf("%s: the target holds %s after the attempt, want this issuer's JWKS", tc.what, got)
				}
			}
			// A peer that rotated first: newer, carrying our signing key.
			peer := gen(90*time.Minute, 0).String()
			tg.plant(peer, jwksOf("k1", "k2"))
			attempt(ResultSuperseded)
			now = now.Add(4 * time.Minute)
			attempt(ResultSuperseded)
			if tg.jwks() != jwksOf("k1", "k2") {
				t.Fatal("a plausible peer's newer key set was overwritten within the grace")
			}
			// No replica takes that long to see a rotation.
			now = now.Add(2 * time.Minute)
			attempt(ResultForeign)
			if tg.jwks() != jwksOf("k1") {
				t.Fatal("a newer generation outliving the grace was not overwritten")
			}
			// Caught up: publishing as usual resets the grace.
			attempt(ResultPublished)
		})
	}
}

// TestReadBackMustMatch: a target that accepts writes but keeps something
// else is an error, not a success.
func TestReadBackMustMatch(t *testing.T) {
	b, f := newFakeBucket(t)
	f.set("oidc/aws/jwks", jwksOf("old"), gen(0, 0).String())
	f.drop = true
	var m recorded
	p := New(Options{Endpoint: "aws", Base: "aws", Target: b, Interval: time.Minute, Metrics: &m})
	err := p.Attempt(context.Background(), Documents{JWKS: []byte(jwksOf("k1")), Discovery: []byte(`{}`), Generation: gen(time.Hour, 0), SigningKeyID: "k1"})
	if err == nil || !strings.Contains(err.Error(), "read back") || m.last() != ResultError {
		t.Fatalf("a target that dropped the write: %v, result %q", err, m.last())
	}
}

// TestBucketWritesAreConditional: on every bucket-like target the JWKS is
// written only if it is still the object the publisher read (S3 and Azure:
// If-Match, or If-None-Match: * when there was none; GCS: ifGenerationMatch,
// 0 for none), so a newer set another writer put there in between is not
// overwritten; the next attempt reads it and decides again.
func TestBucketWritesAreConditional(t *testing.T) {
	for name, s := range cloudStores(t) {
		t.Run(name, func(t *testing.T) {
			var m recorded
			now := t0.Add(2 * time.Hour)
			p := New(Options{Endpoint: "aws", Base: "aws", Target: s.target, Interval: time.Minute, Metrics: &m, Now: func() time.Time { return now }})
			ours := Documents{JWKS: []byte(jwksOf("k1")), Discovery: []byte(`{}`), Generation: gen(time.Hour, 0), SigningKeyID: "k1"}
			if err := p.Attempt(context.Background(), ours); err != nil || m.last() != ResultPublished {
				t.Fatalf("first write: %v %q", err, m.last())
			}
			if s.fake.conditionals() == 0 {
				t.Fatal("the first write carried no condition")
			}
			// A peer writes its newer set between this replica's read and write.
			peer := jwksOf("k1", "k2")
			raced := false
			s.fake.onPut(func(key string) {
				if key == s.jwksKey && !raced {
					raced = true
					s.fake.set(key, peer, gen(90*time.Minute, 0).String())
				}
			})
			err := p.Attempt(context.Background(), ours)
			if !errors.Is(err, ErrChanged) || m.last() != ResultError {
				t.Fatalf("write after a racing writer: %v %q, want ErrChanged", err, m.last())
			}
			if s.fake.get(s.jwksKey) != peer {
				t.Fatal("the racing writer's newer set was overwritten")
			}
			// The next attempt sees the peer's newer set and leaves it.
			if err := p.Attempt(context.Background(), ours); err != nil || m.last() != ResultSuperseded {
				t.Fatalf("next attempt: %v %q, want superseded", err, m.last())
			}
		})
	}
}
