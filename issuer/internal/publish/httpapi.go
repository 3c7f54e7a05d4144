package publish

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// What the targets that speak a storage API over plain HTTP (GCS, Azure
// Blob) share.

// transport is an HTTP transport trusting the system roots and, when caFile
// is set, the PEM bundle in it.
func transport(caFile string) (*http.Transport, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 30 * time.Second
	if caFile == "" {
		return t, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return t, nil
}

func trimSlash(s string) string { return strings.TrimRight(s, "/") }

// drain reads what is left of a response body (a few KiB at most) and closes
// it, so that the connection is reused.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// statusError describes an unexpected answer: the status and the service's
// error code when it sends one in a header (Azure: x-ms-error-code, whose
// error documents may quote the request's signature, so no more of them),
// else the start of the body on one line (GCS's JSON error: a code and a
// message).
func statusError(service string, resp *http.Response) error {
	msg := fmt.Sprintf("%s answered %s", service, resp.Status)
	if code := resp.Header.Get("x-ms-error-code"); code != "" {
		return fmt.Errorf("%s (%s)", msg, code)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
	if s := strings.Join(strings.Fields(string(b)), " "); s != "" {
		msg += ": " + s
	}
	return fmt.Errorf("%s", msg)
}

// putResult sends a write and says how it went: ErrChanged when a condition
// did not hold (412; Azure answers 409 BlobAlreadyExists to If-None-Match: *
// on a blob that is there).
func putResult(service, name string, client *http.Client, req *http.Request) error {
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	defer drain(resp)
	switch {
	case resp.StatusCode == http.StatusPreconditionFailed,
		resp.StatusCode == http.StatusConflict && resp.Header.Get("x-ms-error-code") == "BlobAlreadyExists":
		return fmt.Errorf("put %s: %w", name, ErrChanged)
	case resp.StatusCode/100 != 2:
		return fmt.Errorf("put %s: %w", name, statusError(service, resp))
	}
	return nil
}
