// Package exchange is the wire format of the token exchange between the
// sidecar and the issuer: an RFC 8693 request as an
// application/x-www-form-urlencoded body, a JSON success response, and RFC 6749
// §5.2 error responses. Parsing is strict, because the issuer faces the network.
package exchange

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kube-sts/kube-sts/shared/jsonstr"
	"github.com/kube-sts/kube-sts/shared/redact"
)

// RFC 8693 identifiers.
const (
	// GrantTypeTokenExchange is the only grant the issuer accepts.
	GrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	// TokenTypeJWT is the type of both the subject token and the issued token.
	TokenTypeJWT = "urn:ietf:params:oauth:token-type:jwt"
	// TokenTypeNA is the token_type of an issued token that is not an OAuth
	// access token (RFC 8693 §2.2.1).
	TokenTypeNA = "N_A"
	// ContentTypeForm is the request's content type.
	ContentTypeForm = "application/x-www-form-urlencoded"
	// EndpointPath is the token endpoint below an issuer URL: the issuer
	// serves it, the webhook's exchange URLs end with it.
	EndpointPath = "/token"
)

// Form parameter names.
const (
	ParamGrantType          = "grant_type"
	ParamSubjectToken       = "subject_token"
	ParamSubjectTokenType   = "subject_token_type"
	ParamRequestedTokenType = "requested_token_type"
	// ParamAudience and ParamResource name the target (RFC 8693 §2.1); an
	// issuer endpoint serves one audience, so they may only repeat it.
	ParamAudience = "audience"
	ParamResource = "resource"
	// ParamScope is accepted and ignored: minted tokens carry no scope.
	ParamScope = "scope"
	// ParamActorToken and ParamActorTokenType ask for delegation, which is
	// not supported; they are refused rather than ignored.
	ParamActorToken     = "actor_token"
	ParamActorTokenType = "actor_token_type"
	// ParamLifetime asks for a shorter lifetime than the endpoint's, in whole
	// seconds (the Pod's kube-sts.io/ttl). RFC 8693 has no such parameter;
	// this one is ours, with the vendor prefix RFC 6749 §8.2 asks for. The
	// issuer decides: it never grants longer than its endpoint's lifetime,
	// may forbid or bound shorter ones, and says so in LifetimeNote.
	ParamLifetime = "kube_sts_lifetime"
)

// MaxLifetime bounds ParamLifetime (an issuer endpoint's longest lifetime).
const MaxLifetime = 24 * time.Hour

// Limits applied before anything else looks at a request.
const (
	// MaxSubjectTokenBytes bounds the subject token; real ServiceAccount
	// tokens are 1–1.5 KiB (header, claims with the Pod and Node binding,
	// signature), so 16 KiB leaves ten times their size.
	MaxSubjectTokenBytes = 16 << 10
	// MaxRequestBytes bounds the whole form body: the subject token and
	// 2 KiB for the other parameters. The issuer holds at most this much of
	// each request it answers, and refuses a longer declared body unread.
	MaxRequestBytes = MaxSubjectTokenBytes + 2<<10
	// MaxResponseBytes bounds what a client reads of a response.
	MaxResponseBytes = 1 << 20
	// MaxTargets bounds how many audience and resource values a request may carry.
	MaxTargets = 8
)

// Request is a token-exchange request.
type Request struct {
	// SubjectToken is the presented ServiceAccount token. Never log it.
	SubjectToken string
	// SubjectTokenType is TokenTypeJWT.
	SubjectTokenType string
	// RequestedTokenType is empty or TokenTypeJWT.
	RequestedTokenType string
	// Audiences and Resources are the targets the client asked for, if any;
	// the issuer answers invalid_target unless it can serve them.
	Audiences []string
	Resources []string
	// Lifetime is the lifetime asked for (ParamLifetime); 0: the endpoint's.
	Lifetime time.Duration
}

// NewRequest returns the request the sidecar sends for a ServiceAccount token.
func NewRequest(subjectToken string) Request {
	return Request{SubjectToken: subjectToken, SubjectTokenType: TokenTypeJWT}
}

// Encode renders the request as a form body.
func (r Request) Encode() string {
	v := url.Values{}
	v.Set(ParamGrantType, GrantTypeTokenExchange)
	v.Set(ParamSubjectToken, r.SubjectToken)
	v.Set(ParamSubjectTokenType, r.SubjectTokenType)
	if r.RequestedTokenType != "" {
		v.Set(ParamRequestedTokenType, r.RequestedTokenType)
	}
	for _, a := range r.Audiences {
		v.Add(ParamAudience, a)
	}
	for _, a := range r.Resources {
		v.Add(ParamResource, a)
	}
	if r.Lifetime > 0 {
		v.Set(ParamLifetime, strconv.FormatInt(int64(r.Lifetime/time.Second), 10))
	}
	return v.Encode()
}

// ParseRequest parses a form body strictly: size limits first, then every
// parameter at most once (audience and resource may repeat), the
// token-exchange grant, JWT token types, and a subject token that is not
// empty and within its limit. As RFC 6749 §3.1 says, a parameter sent
// without a value counts as omitted and an unrecognized one is ignored;
// scope is ignored too, and delegation (actor_token) is refused.
// Errors are *Error values ready to be sent to the client; their
// descriptions name parameters and what is allowed, and never quote a value.
func ParseRequest(body []byte) (Request, error) {
	if len(body) > MaxRequestBytes {
		return Request{}, Errorf(InvalidRequest, "request body is larger than %d bytes", MaxRequestBytes)
	}
	f, ok := parseForm(string(body))
	if !ok {
		return Request{}, Errorf(InvalidRequest, "request body is not a valid form encoding")
	}
	return f.request()
}

// params are what ParseRequest reads of a body: the non-empty values of each
// parameter given once at most (singleParams), the targets in order, and
// whether delegation was asked for (actor_token, else actor_token_type).
type params struct {
	count                [len(singleParams)]int
	value                [len(singleParams)]string
	audiences, resources []string
	actor                string
}

// parseForm does what url.ParseQuery does, into params' slots instead of a
// map: the issuer parses every request it answers, garbage included. ok is
// false when url.ParseQuery would fail.
func parseForm(body string) (f params, ok bool) {
	for rest := body; rest != ""; {
		var pair string
		pair, rest, _ = strings.Cut(rest, "&")
		if strings.Contains(pair, ";") {
			return params{}, false
		}
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		k, kerr := unescape(k)
		v, verr := unescape(v)
		switch {
		case kerr != nil || verr != nil:
			return params{}, false
		case v == "":
			// RFC 6749 §3.1: a parameter without a value counts as omitted.
		case k == ParamAudience:
			f.audiences = append(f.audiences, v)
		case k == ParamResource:
			f.resources = append(f.resources, v)
		case k == ParamActorToken:
			f.actor = k
		case k == ParamActorTokenType:
			if f.actor == "" {
				f.actor = k
			}
		default:
			if n := slices.Index(singleParams[:], k); n >= 0 {
				if f.count[n]++; f.count[n] == 1 {
					f.value[n] = v
				}
			}
		}
	}
	return f, true
}

// request checks the form and builds the Request.
func (f *params) request() (Request, error) {
	r := Request{Audiences: f.audiences, Resources: f.resources}
	for n, c := range f.count {
		if c > 1 {
			return Request{}, Errorf(InvalidRequest, "parameter %s is given %d times; give it once", singleParams[n], c)
		}
	}
	for _, p := range [...]struct {
		name string
		n    int
	}{{ParamAudience, len(r.Audiences)}, {ParamResource, len(r.Resources)}} {
		if p.n > MaxTargets {
			return Request{}, Errorf(InvalidRequest, "parameter %s is given %d times; at most %d are accepted", p.name, p.n, MaxTargets)
		}
	}
	if f.actor != "" {
		return Request{}, Errorf(InvalidRequest, "delegation (%s) is not supported; send only the subject token", f.actor)
	}
	switch g := f.value[paramGrantType]; g {
	case GrantTypeTokenExchange:
	case "":
		return Request{}, Errorf(InvalidRequest, "missing %s; use %s", ParamGrantType, GrantTypeTokenExchange)
	default:
		return Request{}, Errorf(UnsupportedGrantType, "the %s is not supported; use %s", ParamGrantType, GrantTypeTokenExchange)
	}
	r.SubjectToken = f.value[paramSubjectToken]
	r.SubjectTokenType = f.value[paramSubjectTokenType]
	r.RequestedTokenType = f.value[paramRequestedTokenType]
	if v := f.value[paramLifetime]; v != "" {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs < 1 || secs > int64(MaxLifetime/time.Second) {
			return Request{}, Errorf(InvalidRequest, "%s must be a whole number of seconds from 1 to %d", ParamLifetime, int64(MaxLifetime/time.Second))
		}
		r.Lifetime = time.Duration(secs) * time.Second
	}
	switch {
	case r.SubjectToken == "":
		return Request{}, Errorf(InvalidRequest, "missing %s", ParamSubjectToken)
	case len(r.SubjectToken) > MaxSubjectTokenBytes:
		return Request{}, Errorf(InvalidRequest, "%s is larger than %d bytes", ParamSubjectToken, MaxSubjectTokenBytes)
	case r.SubjectTokenType == "":
		return Request{}, Errorf(InvalidRequest, "missing %s; use %s", ParamSubjectTokenType, TokenTypeJWT)
	case r.SubjectTokenType != TokenTypeJWT:
		return Request{}, Errorf(InvalidRequest, "this %s is not supported; use %s", ParamSubjectTokenType, TokenTypeJWT)
	case r.RequestedTokenType != "" && r.RequestedTokenType != TokenTypeJWT:
		return Request{}, Errorf(InvalidRequest, "this %s is not supported; only %s is issued", ParamRequestedTokenType, TokenTypeJWT)
	}
	return r, nil
}

// unescape is url.QueryUnescape, which walks every byte; a subject token
// (1-2 KiB of base64url) has nothing to unescape, and two IndexByte scans
// say so much faster.
func unescape(s string) (string, error) {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s, nil
	}
	return url.QueryUnescape(s)
}

// singleParams are the parameters of RFC 6749 and RFC 8693 (and ours) that
// must not repeat, in the order of the indexes below; audience and
// resource may (RFC 8693 §2.1), and delegation is refused.
var singleParams = [...]string{ParamGrantType, ParamSubjectToken, ParamSubjectTokenType, ParamRequestedTokenType, ParamScope, ParamLifetime}

const (
	paramGrantType = iota
	paramSubjectToken
	paramSubjectTokenType
	paramRequestedTokenType
	_ // scope: ignored
	paramLifetime
)

// Response is a successful exchange (RFC 8693 §2.2.1). Servers send it with
// Cache-Control: no-store.
type Response struct {
	// AccessToken is the minted JWT. Never log it.
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
	// ExpiresIn is the token's remaining lifetime in seconds.
	ExpiresIn int64 `json:"expires_in"`
	// LifetimeNote says why the lifetime asked for (ParamLifetime) was not
	// granted as asked; empty when it was, or when none was asked for.
	LifetimeNote string `json:"kube_sts_lifetime_note,omitempty"`
}

// AppendJSON appends r as encoding/json would write it, and a newline (as
// json.Encoder does); the issuer answers every exchange with it, without
// reflection.
func (r Response) AppendJSON(b []byte) []byte {
	b = append(b, `{"access_token":`...)
	b = jsonstr.Append(b, r.AccessToken)
	b = append(b, `,"issued_token_type":`...)
	b = jsonstr.Append(b, r.IssuedTokenType)
	b = append(b, `,"token_type":`...)
	b = jsonstr.Append(b, r.TokenType)
	b = append(b, `,"expires_in":`...)
	b = strconv.AppendInt(b, r.ExpiresIn, 10)
	if r.LifetimeNote != "" {
		b = append(b, `,"kube_sts_lifetime_note":`...)
		b = jsonstr.Append(b, r.LifetimeNote)
	}
	return append(b, "}\n"...)
}

// NewResponse returns the response for a minted JWT.
func NewResponse(jwt string, expiresIn int64) Response {
	return Response{AccessToken: jwt, IssuedTokenType: TokenTypeJWT, TokenType: TokenTypeNA, ExpiresIn: expiresIn}
}

// Validate reports what is wrong with a response a client received.
func (r Response) Validate() error {
	switch {
	case r.AccessToken == "":
		return errors.New("response has no access_token")
	case r.IssuedTokenType != TokenTypeJWT:
		return fmt.Errorf("response issued_token_type is %q, want %s", redact.Text(r.IssuedTokenType), TokenTypeJWT)
	case r.ExpiresIn <= 0:
		return fmt.Errorf("response expires_in is %d, want a positive number of seconds", r.ExpiresIn)
	}
	return nil
}

// Error codes of RFC 6749 §5.2 and RFC 8693 §2.2.2, plus the two of RFC 6749
// §4.1.2.1 that a token endpoint also needs.
const (
	InvalidRequest         = "invalid_request"
	InvalidClient          = "invalid_client"
	InvalidGrant           = "invalid_grant"
	UnauthorizedClient     = "unauthorized_client"
	UnsupportedGrantType   = "unsupported_grant_type"
	InvalidScope           = "invalid_scope"
	InvalidTarget          = "invalid_target"
	ServerError            = "server_error"
	TemporarilyUnavailable = "temporarily_unavailable"
)

// Error is an OAuth error response body, and a Go error.
type Error struct {
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// Errorf returns an *Error with a formatted description.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Description: fmt.Sprintf(format, args...)}
}

// AppendJSON appends e as encoding/json would write it, and a newline (as
// json.Encoder does): the issuer's refusals, without reflection.
func (e *Error) AppendJSON(b []byte) []byte {
	b = append(b, `{"error":`...)
	b = jsonstr.Append(b, e.Code)
	if e.Description != "" {
		b = append(b, `,"error_description":`...)
		b = jsonstr.Append(b, e.Description)
	}
	return append(b, "}\n"...)
}

func (e *Error) Error() string {
	if e.Description == "" {
		return e.Code
	}
	return e.Code + ": " + e.Description
}

// HTTPStatus is the status an issuer sends with the error: 401 for
// invalid_client (RFC 6749 §5.2), 503 for temporarily_unavailable, 500 for
// server_error, 400 for everything else.
func (e *Error) HTTPStatus() int {
	switch e.Code {
	case InvalidClient:
		return http.StatusUnauthorized
	case TemporarilyUnavailable:
		return http.StatusServiceUnavailable
	case ServerError:
		return http.StatusInternalServerError
	default:
		return http.StatusBadRequest
	}
}

// Retryable reports whether a client should retry soon (the server could not
// decide) rather than slowly (the server decided no).
func (e *Error) Retryable() bool {
	return e.Code == TemporarilyUnavailable || e.Code == ServerError
}

// ParseError decodes an error body. It returns an error when the body is not
// an OAuth error, so a client can tell "the issuer said no" from "something
// that is not the issuer answered" (an HTML page from a proxy, say).
func ParseError(body []byte) (*Error, error) {
	var e Error
	if err := json.Unmarshal(body, &e); err != nil {
		return nil, fmt.Errorf("error response is not JSON: %w", err)
	}
	if e.Code == "" {
		return nil, errors.New("error response has no error code")
	}
	return &e, nil
}
