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
)

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

// multi are the parameters that RFC 8693 lets a request repeat.
var multi = map[string]bool{ParamAudience: true, ParamResource: true}

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
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return Request{}, Errorf(InvalidRequest, "request body is not a valid form encoding")
	}
	for name, values := range form {
		values = slices.DeleteFunc(values, func(v string) bool { return v == "" })
		if len(values) == 0 {
			delete(form, name)
			continue
		}
		form[name] = values
		switch {
		case multi[name] && len(values) > MaxTargets:
			return Request{}, Errorf(InvalidRequest, "parameter %s is given %d times; at most %d are accepted", name, len(values), MaxTargets)
		case !multi[name] && len(values) != 1 && known(name):
			return Request{}, Errorf(InvalidRequest, "parameter %s is given %d times; give it once", name, len(values))
		case name == ParamActorToken || name == ParamActorTokenType:
			return Request{}, Errorf(InvalidRequest, "delegation (%s) is not supported; send only the subject token", name)
		}
	}
	switch g := form.Get(ParamGrantType); g {
	case GrantTypeTokenExchange:
	case "":
		return Request{}, Errorf(InvalidRequest, "missing %s; use %s", ParamGrantType, GrantTypeTokenExchange)
	default:
		return Request{}, Errorf(UnsupportedGrantType, "the %s is not supported; use %s", ParamGrantType, GrantTypeTokenExchange)
	}
	r := Request{
		SubjectToken:       form.Get(ParamSubjectToken),
		SubjectTokenType:   form.Get(ParamSubjectTokenType),
		RequestedTokenType: form.Get(ParamRequestedTokenType),
		Audiences:          form[ParamAudience],
		Resources:          form[ParamResource],
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

// known reports whether name is a parameter of RFC 6749 or RFC 8693 that
// must not repeat.
func known(name string) bool {
	switch name {
	case ParamGrantType, ParamSubjectToken, ParamSubjectTokenType, ParamRequestedTokenType, ParamScope, ParamActorToken, ParamActorTokenType:
		return true
	}
	return false
}

// Response is a successful exchange (RFC 8693 §2.2.1). Servers send it with
// Cache-Control: no-store.
type Response struct {
	// AccessToken is the minted JWT. Never log it.
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
	// ExpiresIn is the token's remaining lifetime in seconds.
	ExpiresIn int64 `json:"expires_in"`
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
