// Package exchanger trades the projected ServiceAccount token for an STS token
// at the issuer's token endpoint, and sorts every failure into "retry soon"
// (the issuer could not decide) or "retry slowly" (the issuer said no).
package exchanger

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kube-sts/kube-sts/shared/buildinfo"
	"github.com/kube-sts/kube-sts/shared/contract"
	"github.com/kube-sts/kube-sts/shared/exchange"
	"github.com/kube-sts/kube-sts/shared/redact"
	"github.com/kube-sts/kube-sts/sidecar/internal/jwtinfo"
)

// Kind says how soon a failed exchange should be tried again.
type Kind int

const (
	// Transient failures (network, timeouts, 5xx, 429, broken answers) are
	// retried with exponential backoff.
	Transient Kind = iota
	// Refused exchanges (the issuer answered 4xx) are retried slowly: a rule
	// may allow the Pod later, but hammering the issuer will not.
	Refused
)

func (k Kind) String() string {
	if k == Refused {
		return "refused"
	}
	return "transient"
}

// Error is a failed exchange.
type Error struct {
	Kind Kind
	// Status is the HTTP status, 0 when there was no answer.
	Status int
	// OAuth is the issuer's error body, when it sent one.
	OAuth *exchange.Error
	// RetryAfter is the issuer's Retry-After, 0 when absent.
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Token is a minted token and what the sidecar needs to know about it.
type Token struct {
	// Raw is the JWT. Never log it.
	Raw    string
	Claims jwtinfo.Claims
	// Received is when the response arrived.
	Received time.Time
	// LifetimeNote is the issuer's word on why the lifetime asked for was
	// not granted as asked (redacted; empty when it was).
	LifetimeNote string
}

// Lifetime is the span the schedule divides: from iat (or receipt) to exp.
func (t Token) Lifetime() time.Duration {
	start := t.Claims.IssuedAt
	if start.IsZero() || start.After(t.Received) {
		start = t.Received
	}
	return t.Claims.Expiry.Sub(start)
}

// Client talks to one token endpoint.
type Client struct {
	URL  string
	HTTP *http.Client
	// Now is the clock used to reject already-expired tokens.
	Now func() time.Time
	// Lifetime is asked for at every exchange (0: the endpoint's).
	Lifetime time.Duration
}

// Exchange presents subjectToken and returns the minted token.
func (c *Client) Exchange(ctx context.Context, subjectToken string) (Token, error) {
	er := exchange.NewRequest(subjectToken)
	er.Lifetime = c.Lifetime
	body := er.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, strings.NewReader(body))
	if err != nil {
		return Token{}, &Error{Kind: Refused, Err: fmt.Errorf("build request: %w", err)}
	}
	req.Header.Set("Content-Type", exchange.ContentTypeForm)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "sts-creds-sidecar/"+buildinfo.Version)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return Token{}, &Error{Kind: Transient, Err: describeTransportError(err)}
	}
	defer resp.Body.Close()
	// Read at most one byte past the limit, so an endless body costs nothing.
	data, err := io.ReadAll(io.LimitReader(resp.Body, exchange.MaxResponseBytes+1))
	if err != nil {
		return Token{}, &Error{Kind: Transient, Status: resp.StatusCode, Err: fmt.Errorf("read response: %w", err)}
	}
	if len(data) > exchange.MaxResponseBytes {
		return Token{}, &Error{Kind: Transient, Status: resp.StatusCode, Err: fmt.Errorf("issuer answered HTTP %d with a body over %d bytes; not reading further", resp.StatusCode, exchange.MaxResponseBytes)}
	}
	if resp.StatusCode != http.StatusOK {
		return Token{}, c.failure(resp, data)
	}
	now := c.Now()
	var r exchange.Response
	if err := json.Unmarshal(data, &r); err != nil {
		return Token{}, &Error{Kind: Transient, Status: resp.StatusCode, Err: fmt.Errorf("issuer answered HTTP 200 with a body that is not a token response (%s): %w", contentType(resp), err)}
	}
	if err := r.Validate(); err != nil {
		return Token{}, &Error{Kind: Transient, Status: resp.StatusCode, Err: fmt.Errorf("issuer answered HTTP 200 but %w", err)}
	}
	claims, err := jwtinfo.Parse(r.AccessToken)
	if err != nil {
		return Token{}, &Error{Kind: Transient, Status: resp.StatusCode, Err: fmt.Errorf("issuer returned an access_token that is not a JWT: %w", err)}
	}
	// expires_in wins when it is sooner than exp: the issuer knows best.
	if byExpiresIn := now.Add(time.Duration(r.ExpiresIn) * time.Second); byExpiresIn.Before(claims.Expiry) {
		claims.Expiry = byExpiresIn
	}
	if !claims.Expiry.After(now) {
		return Token{}, &Error{Kind: Transient, Status: resp.StatusCode, Err: fmt.Errorf("issuer returned a token that expired at %s, before it arrived (clock skew between the issuer and this node?)", claims.Expiry.UTC().Format(time.RFC3339))}
	}
	return Token{Raw: r.AccessToken, Claims: claims, Received: now, LifetimeNote: redact.Text(r.LifetimeNote)}, nil
}

func (c *Client) failure(resp *http.Response, data []byte) *Error {
	e := &Error{Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	// 429 and 5xx: the issuer (or what is in front of it) could not decide.
	// Any other status is a refusal, also one that is not an OAuth error (a
	// proxy, a wrong URL): retried slowly, with the reason in the log.
	e.Kind = Refused
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		e.Kind = Transient
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		// No redirect is followed: the subject token goes to the configured URL only.
		e.Err = fmt.Errorf("issuer answered HTTP %d, a redirect; the sidecar follows none, so the ServiceAccount token goes nowhere but %s: set the exchange URL to the issuer's token endpoint itself", resp.StatusCode, c.URL)
		return e
	}
	oauth, perr := exchange.ParseError(data)
	if perr != nil {
		e.Err = fmt.Errorf("issuer answered HTTP %d with a body that is not an OAuth error (%s); is %s the token endpoint?", resp.StatusCode, contentType(resp), c.URL)
		return e
	}
	// What the issuer says is quoted in our logs: redacted like any text from elsewhere.
	oauth.Description = redact.Text(oauth.Description)
	oauth.Code = redact.Text(oauth.Code)
	e.OAuth = oauth
	e.Err = fmt.Errorf("issuer answered HTTP %d: %s", resp.StatusCode, oauth.Error())
	return e
}

func contentType(resp *http.Response) string {
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt == "" {
		return "no content type"
	}
	return mt
}

func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 0
}

// describeTransportError makes TLS trust failures say what to fix.
func describeTransportError(err error) error {
	var unknown x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	var hostname x509.HostnameError
	switch {
	case errors.As(err, &hostname):
		return fmt.Errorf("TLS: the issuer's certificate is not valid for this host; check the exchange URL: %w", err)
	case errors.As(err, &unknown), errors.As(err, &verify):
		return fmt.Errorf("TLS: the issuer's certificate is not trusted by the configured CA bundle (%s / %s); check it: %w", contract.EnvCAFile, contract.EnvCAPEM, err)
	}
	return err
}

// noRedirect makes the client hand a 3xx back instead of following it: a
// redirect must not carry the ServiceAccount token to another address.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// NewHTTPClient returns a client that trusts caFile and caPEM when either is
// given (only them), or the system roots otherwise.
func NewHTTPClient(caFile, caPEM string, timeout time.Duration) (*http.Client, error) {
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		TLSHandshakeTimeout: timeout,
		MaxIdleConns:        1,
		// One request every few minutes: keeping the connection open costs
		// more (timers, memory) than a new handshake.
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{MinVersion: tls.VersionTLS12},
	}
	if caFile != "" || caPEM != "" {
		pool := x509.NewCertPool()
		if caFile != "" {
			data, err := os.ReadFile(caFile)
			if err != nil {
				return nil, fmt.Errorf("read CA file: %w", err)
			}
			if !pool.AppendCertsFromPEM(data) {
				return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
			}
		}
		if caPEM != "" && !pool.AppendCertsFromPEM([]byte(caPEM)) {
			return nil, errors.New("inline CA PEM holds no certificate")
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return &http.Client{Transport: tr, Timeout: timeout, CheckRedirect: noRedirect}, nil
}
