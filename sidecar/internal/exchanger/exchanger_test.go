package exchanger

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kube-sts/kube-sts/shared/redact"
	"github.com/kube-sts/kube-sts/sidecar/internal/issuertest"
)

func caPEM(t *testing.T, iss *issuertest.Issuer) string {
	t.Helper()
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: iss.Certificate().Raw}))
}

func otherCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "someone else"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestTLSTrust(t *testing.T) {
	iss := issuertest.NewTLS(time.Hour)
	defer iss.Close()
	dir := t.TempDir()
	good := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(good, []byte(caPEM(t, iss)), 0o644); err != nil {
		t.Fatal(err)
	}
	wrong := filepath.Join(dir, "wrong.crt")
	if err := os.WriteFile(wrong, []byte(otherCA(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		file, inline string
		wantIn       string
	}{
		"CA file":              {file: good},
		"inline CA":            {inline: caPEM(t, iss)},
		"wrong CA file":        {file: wrong, wantIn: "not trusted by the configured CA bundle"},
		"wrong inline CA":      {inline: otherCA(t), wantIn: "not trusted by the configured CA bundle"},
		"system roots only":    {wantIn: "not trusted by the configured CA bundle"},
		"wrong file, good PEM": {file: wrong, inline: caPEM(t, iss)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			// The bound is loose: "system roots only" loads the machine's
			// CA bundle in the handshake, which took over 5 s under -race
			// at the lowest priority beside the e2e suites of a cold make
			// test. What is tested is the error, not the speed.
			hc, err := NewHTTPClient(tc.file, tc.inline, time.Minute)
			if err != nil {
				t.Fatalf("NewHTTPClient: %v", err)
			}
			c := &Client{URL: iss.TokenURL(), HTTP: hc, Now: time.Now}
			tok, err := c.Exchange(context.Background(), "subject")
			if tc.wantIn == "" {
				if err != nil || tok.Raw == "" {
					t.Fatalf("Exchange = %v", err)
				}
				return
			}
			var xe *Error
			if !errors.As(err, &xe) || xe.Kind != Transient || !strings.Contains(err.Error(), tc.wantIn) || !strings.Contains(err.Error(), "STS_CA_FILE") {
				t.Fatalf("Exchange error = %v, want a transient error containing %q and naming the setting", err, tc.wantIn)
			}
		})
	}
}

func TestNewHTTPClientErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct{ file, inline, wantIn string }{
		"missing file":     {file: filepath.Join(dir, "nope"), wantIn: "read CA file"},
		"file without PEM": {file: notPEM, wantIn: "holds no PEM certificate"},
		"inline junk":      {inline: "junk", wantIn: "inline CA PEM holds no certificate"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewHTTPClient(tc.file, tc.inline, time.Second)
			if err == nil || !strings.Contains(err.Error(), tc.wantIn) {
				t.Fatalf("NewHTTPClient = %v, want error containing %q", err, tc.wantIn)
			}
		})
	}
}

func TestExchangeAnswers(t *testing.T) {
	iss := issuertest.New(time.Hour)
	defer iss.Close()
	hc := plainClient(t)
	c := &Client{URL: iss.TokenURL(), HTTP: hc, Now: time.Now}
	tests := map[string]struct {
		b      issuertest.Behavior
		kind   Kind
		status int
		wantIn string
	}{
		"ok":                {b: issuertest.OK},
		"503":               {b: issuertest.Unavailable, kind: Transient, status: 503, wantIn: "temporarily_unavailable"},
		"429":               {b: issuertest.TooMany, kind: Transient, status: 429, wantIn: "slow down"},
		"refused":           {b: issuertest.Refuse, kind: Refused, status: 400, wantIn: "invalid_request: namespace test-vault is not allowed"},
		"non-JSON":          {b: issuertest.NonJSON, kind: Transient, status: 200, wantIn: "not a token response"},
		"HTML error page":   {b: issuertest.HTMLError, kind: Transient, status: 502, wantIn: "not an OAuth error (text/html)"},
		"no access_token":   {b: issuertest.MissingAccessToken, kind: Transient, status: 200, wantIn: "no access_token"},
		"wrong issued type": {b: issuertest.WrongIssuedType, kind: Transient, status: 200, wantIn: "issued_token_type"},
		"expires_in 0":      {b: issuertest.ZeroExpiresIn, kind: Transient, status: 200, wantIn: "expires_in is 0"},
		"body over 1 MiB":   {b: issuertest.HugeBody, kind: Transient, status: 200, wantIn: "over 1048576 bytes"},
		"already expired":   {b: issuertest.AlreadyExpired, kind: Transient, status: 200, wantIn: "expired at"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			iss.Set(tc.b)
			tok, err := c.Exchange(context.Background(), "subject")
			if tc.wantIn == "" {
				if err != nil {
					t.Fatalf("Exchange: %v", err)
				}
				if tok.Claims.ID == "" || !tok.Claims.Expiry.After(time.Now()) {
					t.Fatalf("token claims = %+v", tok.Claims)
				}
				return
			}
			var xe *Error
			if !errors.As(err, &xe) {
				t.Fatalf("Exchange error = %v (%T), want *Error", err, err)
			}
			if xe.Kind != tc.kind || xe.Status != tc.status || !strings.Contains(err.Error(), tc.wantIn) {
				t.Fatalf("Exchange error = kind %v status %d %q; want kind %v status %d containing %q", xe.Kind, xe.Status, err, tc.kind, tc.status, tc.wantIn)
			}
		})
	}
	if sent := iss.HugeBytesSent(); sent > 16<<20 {
		t.Errorf("the client accepted %d bytes of the huge body; it should stop after 1 MiB", sent)
	}
}

// TestLifetimeAsked: the client sends the lifetime it is configured with at
// every exchange (none when unset) and reads the issuer's note.
func TestLifetimeAsked(t *testing.T) {
	iss := issuertest.New(time.Hour)
	defer iss.Close()
	hc := plainClient(t)
	for _, tc := range []struct {
		asked, want time.Duration
		noteIn      string
	}{
		{0, time.Hour, ""},
		{10 * time.Minute, 10 * time.Minute, ""},
		{2 * time.Hour, time.Hour, "2h0m0s is longer than the endpoint's 1h0m0s"},
	} {
		c := &Client{URL: iss.TokenURL(), HTTP: hc, Now: time.Now, Lifetime: tc.asked}
		tok, err := c.Exchange(context.Background(), "subject")
		if err != nil {
			t.Fatal(err)
		}
		if got := tok.Lifetime().Round(time.Second); got != tc.want || (tc.noteIn == "") != (tok.LifetimeNote == "") || !strings.Contains(tok.LifetimeNote, tc.noteIn) {
			t.Errorf("asked %v: lifetime %v note %q, want %v and a note with %q", tc.asked, got, tok.LifetimeNote, tc.want, tc.noteIn)
		}
	}
	if got := iss.Lifetimes(); len(got) != 3 || got[0] != 0 || got[1] != 10*time.Minute || got[2] != 2*time.Hour {
		t.Fatalf("lifetimes sent %v, want [0 10m 2h]", got)
	}
}

func TestRetryAfterHeader(t *testing.T) {
	iss := issuertest.New(time.Hour)
	defer iss.Close()
	iss.Set(issuertest.TooMany)
	c := &Client{URL: iss.TokenURL(), HTTP: iss.Client(), Now: time.Now}
	_, err := c.Exchange(context.Background(), "subject")
	var xe *Error
	if !errors.As(err, &xe) || xe.RetryAfter != time.Second {
		t.Fatalf("RetryAfter = %v (%v), want 1s", xe, err)
	}
}

func TestNetworkErrorIsTransient(t *testing.T) {
	iss := issuertest.New(time.Hour)
	url := iss.TokenURL()
	iss.Close()
	c := &Client{URL: url, HTTP: iss.Client(), Now: time.Now}
	_, err := c.Exchange(context.Background(), "subject")
	var xe *Error
	if !errors.As(err, &xe) || xe.Kind != Transient || xe.Status != 0 {
		t.Fatalf("Exchange to a closed port = %v, want a transient error without status", err)
	}
}

// TestNoRedirectFollowed: a 307 from the issuer's address is not followed;
// the subject token reaches the configured URL and nowhere else.
func TestNoRedirectFollowed(t *testing.T) {
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	defer other.Close()
	redirecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/token", http.StatusTemporaryRedirect)
	}))
	defer redirecting.Close()
	hc := plainClient(t)
	c := &Client{URL: redirecting.URL + "/token", HTTP: hc, Now: time.Now}
	_, err := c.Exchange(context.Background(), "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
	var xe *Error
	if !errors.As(err, &xe) || xe.Status != http.StatusTemporaryRedirect || !strings.Contains(err.Error(), "redirect") {
		t.Fatalf("Exchange = %v, want a refusal naming the redirect", err)
	}
	if n := elsewhere.Load(); n != 0 {
		t.Fatalf("the token was posted to the redirect target %d times", n)
	}
}

// TestIssuerDescriptionRedacted: a JWT quoted in an issuer's
// error_description does not reach our error text or logs.
func TestIssuerDescriptionRedacted(t *testing.T) {
	const quoted = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzZWNyZXQifQ.c2lnbmF0dXJlLXNlY3JldA"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":"invalid_request","error_description":"token `+quoted+` refused"}`)
	}))
	defer srv.Close()
	c := &Client{URL: srv.URL, HTTP: srv.Client(), Now: time.Now}
	_, err := c.Exchange(context.Background(), "subject")
	var xe *Error
	if !errors.As(err, &xe) || xe.OAuth == nil {
		t.Fatalf("Exchange = %v", err)
	}
	if redact.Leaks(err.Error(), quoted) || redact.Leaks(xe.OAuth.Description, quoted) {
		t.Fatalf("the issuer's quoted token survived: %q", err)
	}
}

// plainClient is the sidecar's client for a plain-HTTP test issuer.
func plainClient(t *testing.T) *http.Client {
	t.Helper()
	hc, err := NewHTTPClient("", "", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return hc
}
