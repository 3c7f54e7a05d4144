// Package fakegcs runs fake-gcs-server on loopback over TLS: Google Cloud
// Storage's JSON API (what the issuer's gcs publish target speaks) and its
// public, path-style object reads (https://<host>/<bucket>/<object>, as
// storage.googleapis.com serves a public bucket), built from the Go module
// proxy by e2e/hack/toolchain.sh. It asks for no credentials.
package fakegcs

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/procs"
	"github.com/kube-sts/kube-sts/e2e/internal/testca"
)

// Server is a running fake-gcs-server.
type Server struct {
	*procs.Proc
	// Endpoint is https://127.0.0.1:<port>: the JSON API's and the public reads' base.
	Endpoint string
	// Client trusts the test CA.
	Client *http.Client
}

// Start runs fake-gcs-server with the buckets named, empty, in memory, and
// a serving certificate of ca. It stops at test cleanup.
func Start(ctx context.Context, t testing.TB, ca *testca.CA, buckets ...string) *Server {
	t.Helper()
	bin, err := controlplane.Binary(ctx, "fake-gcs-server")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key, err := ca.Serving(dir)
	if err != nil {
		t.Fatal(err)
	}
	// A folder per bucket under the seed directory: empty buckets at start.
	seed := filepath.Join(dir, "seed")
	for _, b := range buckets {
		if err := os.MkdirAll(filepath.Join(seed, b), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	port := procs.FreePort(t)
	host := fmt.Sprintf("127.0.0.1:%d", port)
	s := &Server{Endpoint: "https://" + host, Client: procs.TLSClient(ca.Pool())}
	// public-host: object reads at /<bucket>/<object> are answered for
	// requests to this host only (other hosts name a bucket).
	s.Proc = procs.Start(t, "fake-gcs-server", dir, bin, "-backend=memory", "-data="+seed, "-scheme=https",
		"-host=127.0.0.1", fmt.Sprintf("-port=%d", port), "-public-host="+host, "-external-url="+s.Endpoint,
		"-cert-location="+cert, "-private-key-location="+key, "-log-level=warn")
	if err := s.WaitHTTP(ctx, s.Client, s.Endpoint+"/storage/v1/b/"+buckets[0], 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return s
}
