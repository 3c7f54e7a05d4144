// Package azurite runs Azurite's Blob service (Azure Storage's emulator,
// Node.js, installed from npm by e2e/hack/toolchain.sh) on loopback over
// TLS, path-style: https://127.0.0.1:<port>/<account>/<container>/<blob>.
// Writes must be signed with the account's key (Shared Key; Azurite checks
// every signature); a container can be made readable anonymously, as a
// container Microsoft Entra ID reads an issuer's discovery from.
package azurite

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/procs"
	"github.com/kube-sts/kube-sts/e2e/internal/testca"
)

// Azurite's well-known development account and its key (published in
// Azurite's documentation; it protects nothing).
const (
	Account = "devstoreaccount1"
	Key     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Server is a running Azurite Blob service.
type Server struct {
	*procs.Proc
	// Endpoint is the account's blob service: https://127.0.0.1:<port>/devstoreaccount1.
	Endpoint string
	// Client trusts the test CA.
	Client *http.Client
}

// Start runs Azurite in memory with a serving certificate of ca and creates
// the containers named with anonymous read access to their blobs. It stops
// at test cleanup.
func Start(ctx context.Context, t testing.TB, ca *testca.CA, publicContainers ...string) *Server {
	t.Helper()
	bin, err := controlplane.Binary(ctx, "azurite")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key, err := ca.Serving(dir)
	if err != nil {
		t.Fatal(err)
	}
	port := procs.FreePort(t)
	s := &Server{Endpoint: fmt.Sprintf("https://127.0.0.1:%d/%s", port, Account), Client: procs.TLSClient(ca.Pool())}
	s.Proc = procs.Start(t, "azurite", dir, bin, "--blobHost", "127.0.0.1", "--blobPort", fmt.Sprint(port),
		"--inMemoryPersistence", "--disableTelemetry", "--disableProductStyleUrl",
		"--cert", cert, "--key", key)
	deadline := time.Now().Add(30 * time.Second)
	for _, c := range publicContainers {
		for {
			err := s.createContainer(ctx, c)
			if err == nil {
				break
			}
			if exited, _ := s.Exited(); exited || time.Now().After(deadline) {
				t.Fatalf("azurite: create container %s: %v\n%s", c, err, s.Log())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return s
}

// createContainer is Create Container with public read access to blobs.
func (s *Server) createContainer(ctx context.Context, name string) error {
	resp, err := s.Do(ctx, http.MethodPut, "/"+name+"?restype=container", map[string]string{"x-ms-blob-public-access": "blob"}, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1000))
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	return nil
}

// Do sends a request for path (below the account, with its query) signed
// with the account key: what a writer other than the issuer does. The
// Blob service's Shared Key scheme, for the requests tests send: of the
// twelve standard headers only Content-Length, If-Match and If-None-Match
// may be set (headers), the x-ms-* headers lowercased and sorted, the
// resource with the account twice (path-style), then at most one query
// parameter.
func (s *Server) Do(ctx context.Context, method, path string, headers map[string]string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.Endpoint+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	headers["x-ms-date"] = time.Now().UTC().Format(http.TimeFormat)
	headers["x-ms-version"] = "2021-12-02"
	var msHeaders []string
	for k, v := range headers {
		req.Header.Set(k, v)
		if strings.HasPrefix(k, "x-ms-") {
			msHeaders = append(msHeaders, k+":"+v+"\n")
		}
	}
	sort.Strings(msHeaders)
	length := ""
	if len(body) > 0 {
		length = strconv.Itoa(len(body))
	}
	resource := "/" + Account + req.URL.Path
	if q := req.URL.Query(); len(q) > 0 {
		for k, v := range q { // one parameter: sorting is moot
			resource += "\n" + strings.ToLower(k) + ":" + v[0]
		}
	}
	toSign := method + "\n\n\n" + length + "\n\n\n\n\n" + headers["If-Match"] + "\n" + headers["If-None-Match"] + "\n\n\n" +
		strings.Join(msHeaders, "") + resource
	k, _ := base64.StdEncoding.DecodeString(Key)
	mac := hmac.New(sha256.New, k)
	mac.Write([]byte(toSign))
	req.Header.Set("Authorization", "SharedKey "+Account+":"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	return s.Client.Do(req)
}

// Get reads a blob anonymously, as a relying party reading a public
// container does: path is below the account (/<container>/<blob>).
func (s *Server) Get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Endpoint+path, nil)
	if err != nil {
		return nil, err
	}
	return s.Client.Do(req)
}
