// Package issuertest is a scriptable token endpoint for the sidecar's tests:
// it mints JWT-shaped tokens (the sidecar does not verify signatures) and can
// be told to fail in the ways real issuers and proxies fail.
package issuertest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"

	"github.com/kube-sts/kube-sts/shared/exchange"
)

// Behavior is how the next requests are answered.
type Behavior int

const (
	OK Behavior = iota
	Unavailable
	TooMany
	Refuse
	NonJSON
	HTMLError
	MissingAccessToken
	WrongIssuedType
	ZeroExpiresIn
	HugeBody
	AlreadyExpired
	Hang
)

// Issuer records what it was sent and answers per its current Behavior.
type Issuer struct {
	*httptest.Server

	mu       sync.Mutex
	behavior Behavior
	// Lifetime of minted tokens; IssuedAgo backdates iat (and nbf) by that much.
	lifetime  time.Duration
	issuedAgo time.Duration
	subjects  []string
	times     []time.Time
	lifetimes []time.Duration
	minted    []string
	seq       int
	hugeSent  int64
	release   chan struct{}
}

// New starts a plain-HTTP issuer; NewTLS one with a self-signed certificate.
func New(lifetime time.Duration) *Issuer {
	i := &Issuer{lifetime: lifetime, release: make(chan struct{})}
	i.Server = httptest.NewServer(http.HandlerFunc(i.serve))
	return i
}

// NewTLS starts an issuer on HTTPS; Certificate() is its CA.
func NewTLS(lifetime time.Duration) *Issuer {
	i := &Issuer{lifetime: lifetime, release: make(chan struct{})}
	i.Server = httptest.NewTLSServer(http.HandlerFunc(i.serve))
	return i
}

// Close releases hanging requests and stops the server.
func (i *Issuer) Close() {
	i.mu.Lock()
	select {
	case <-i.release:
	default:
		close(i.release)
	}
	i.mu.Unlock()
	i.Server.Close()
}

// Set changes the behavior for the following requests.
func (i *Issuer) Set(b Behavior) { i.mu.Lock(); i.behavior = b; i.mu.Unlock() }

// SetLifetime changes the lifetime and backdating of minted tokens.
func (i *Issuer) SetLifetime(lifetime, issuedAgo time.Duration) {
	i.mu.Lock()
	i.lifetime, i.issuedAgo = lifetime, issuedAgo
	i.mu.Unlock()
}

// Requests returns the subject tokens received and when.
func (i *Issuer) Requests() ([]string, []time.Time) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return append([]string(nil), i.subjects...), append([]time.Time(nil), i.times...)
}

// Lifetimes returns the lifetime each request asked for (0: none).
func (i *Issuer) Lifetimes() []time.Duration {
	i.mu.Lock()
	defer i.mu.Unlock()
	return append([]time.Duration(nil), i.lifetimes...)
}

// Count is the number of requests received.
func (i *Issuer) Count() int { i.mu.Lock(); defer i.mu.Unlock(); return len(i.subjects) }

// Minted returns the tokens issued so far.
func (i *Issuer) Minted() []string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return append([]string(nil), i.minted...)
}

// HugeBytesSent is how much of the huge body the client accepted.
func (i *Issuer) HugeBytesSent() int64 { i.mu.Lock(); defer i.mu.Unlock(); return i.hugeSent }

// URL of the token endpoint.
func (i *Issuer) TokenURL() string { return i.Server.URL + "/token" }

func (i *Issuer) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, exchange.MaxRequestBytes+1))
	req, perr := exchange.ParseRequest(body)
	i.mu.Lock()
	b, lifetime, ago := i.behavior, i.lifetime, i.issuedAgo
	if perr == nil {
		i.subjects = append(i.subjects, req.SubjectToken)
		i.times = append(i.times, time.Now())
		i.lifetimes = append(i.lifetimes, req.Lifetime)
	}
	i.seq++
	seq := i.seq
	i.mu.Unlock()
	if perr != nil || r.Method != http.MethodPost || r.URL.Path != "/token" {
		oauthError(w, http.StatusBadRequest, exchange.InvalidRequest, fmt.Sprintf("bad request: %v", perr))
		return
	}
	now := time.Now()
	switch b {
	case Unavailable:
		oauthError(w, http.StatusServiceUnavailable, exchange.TemporarilyUnavailable, "the API server did not answer")
		return
	case TooMany:
		w.Header().Set("Retry-After", "1")
		oauthError(w, http.StatusTooManyRequests, exchange.TemporarilyUnavailable, "slow down")
		return
	case Refuse:
		oauthError(w, http.StatusBadRequest, exchange.InvalidRequest, "namespace test-vault is not allowed by endpoint vault")
		return
	case NonJSON:
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "token: nope")
		return
	case HTMLError:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = io.WriteString(w, "<html><body><h1>502 Bad Gateway</h1></body></html>")
		return
	case Hang:
		<-i.release
		return
	case HugeBody:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		chunk := make([]byte, 64<<10)
		for n := 0; n < 1024; n++ { // 64 MiB if the client kept reading
			if _, err := w.Write(chunk); err != nil {
				return
			}
			i.mu.Lock()
			i.hugeSent += int64(len(chunk))
			i.mu.Unlock()
		}
		return
	}
	// As the issuer does: a shorter lifetime asked for is granted, a longer
	// one is not, with a note.
	note := ""
	switch {
	case req.Lifetime > lifetime:
		note = fmt.Sprintf("%v is longer than the endpoint's %v; issued for %v", req.Lifetime, lifetime, lifetime)
	case req.Lifetime > 0:
		lifetime = req.Lifetime
	}
	tok := Mint(seq, now.Add(-ago), now.Add(lifetime))
	resp := exchange.NewResponse(tok, int64(lifetime.Seconds()+0.5))
	resp.LifetimeNote = note
	switch b {
	case MissingAccessToken:
		resp.AccessToken = ""
	case WrongIssuedType:
		resp.IssuedTokenType = "urn:ietf:params:oauth:token-type:access_token"
	case ZeroExpiresIn:
		resp.ExpiresIn = 0
	case AlreadyExpired:
		resp.AccessToken = Mint(seq, now.Add(-2*time.Hour), now.Add(-time.Hour))
	}
	if resp.ExpiresIn < 1 && b == OK {
		resp.ExpiresIn = 1
	}
	i.mu.Lock()
	i.minted = append(i.minted, resp.AccessToken)
	i.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(resp)
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(exchange.Errorf(code, "%s", desc))
}

// Mint returns a JWT-shaped token (fake signature) with fractional-second times.
func Mint(seq int, iat, exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	secs := func(t time.Time) string { return strconv.FormatFloat(float64(t.UnixNano())/1e9, 'f', 3, 64) }
	payload := `{"iss":"https://sts.test","aud":"vault","sub":"c:ns:sa","jti":"jti-` + strconv.Itoa(seq) +
		`","iat":` + secs(iat) + `,"nbf":` + secs(iat) + `,"exp":` + secs(exp) + `}`
	return enc([]byte(`{"alg":"RS256","kid":"test","typ":"JWT"}`)) + "." + enc([]byte(payload)) + "." + enc([]byte("sig-"+strconv.Itoa(seq)))
}
