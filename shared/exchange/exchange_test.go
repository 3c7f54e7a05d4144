package exchange

import (
	"encoding/json"
	"errors"
	"github.com/kube-sts/kube-sts/shared/redact"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

func form(kv ...string) []byte {
	var b strings.Builder
	for i := 0; i < len(kv); i += 2 {
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(kv[i]) + "=" + url.QueryEscape(kv[i+1]))
	}
	return []byte(b.String())
}

const tok = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"

func TestParseRequest(t *testing.T) {
	tests := map[string]struct {
		body     []byte
		wantCode string
		wantIn   string // a fragment of the description
	}{
		"valid": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", TokenTypeJWT),
		},
		"valid with requested jwt": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", TokenTypeJWT, "requested_token_type", TokenTypeJWT),
		},
		"empty body": {
			body: nil, wantCode: InvalidRequest, wantIn: "missing grant_type",
		},
		"missing grant": {
			body: form("subject_token", tok, "subject_token_type", TokenTypeJWT), wantCode: InvalidRequest, wantIn: "missing grant_type",
		},
		"wrong grant": {
			body: form("grant_type", "client_credentials", "subject_token", tok, "subject_token_type", TokenTypeJWT), wantCode: UnsupportedGrantType, wantIn: "grant_type is not supported; use urn:ietf:params:oauth:grant-type:token-exchange",
		},
		"missing subject token": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token_type", TokenTypeJWT), wantCode: InvalidRequest, wantIn: "missing subject_token",
		},
		"empty subject token": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", "", "subject_token_type", TokenTypeJWT), wantCode: InvalidRequest, wantIn: "missing subject_token",
		},
		"missing subject token type": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", tok), wantCode: InvalidRequest, wantIn: "missing subject_token_type",
		},
		"access token type": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", "urn:ietf:params:oauth:token-type:access_token"), wantCode: InvalidRequest, wantIn: "not supported",
		},
		"requested saml": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", TokenTypeJWT, "requested_token_type", "urn:ietf:params:oauth:token-type:saml2"), wantCode: InvalidRequest, wantIn: "requested_token_type",
		},
		"duplicate subject token": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token", tok, "subject_token_type", TokenTypeJWT), wantCode: InvalidRequest, wantIn: "given 2 times",
		},
		"duplicate grant": {
			body: form("grant_type", GrantTypeTokenExchange, "grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", TokenTypeJWT), wantCode: InvalidRequest, wantIn: "given 2 times",
		},
		"unknown parameter ignored (RFC 6749 3.1)": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", TokenTypeJWT, "client_id", "x", "client_id", "y"),
		},
		"scope ignored": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", TokenTypeJWT, "scope", "read"),
		},
		"empty parameter counts as omitted": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", TokenTypeJWT, "requested_token_type", "", "audience", ""),
		},
		"empty duplicate counts as omitted": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token", "", "subject_token_type", TokenTypeJWT),
		},
		"audience repeated": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", TokenTypeJWT, "audience", "a", "audience", "b", "resource", "https://r"),
		},
		"too many audiences": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", TokenTypeJWT, "audience", "1", "audience", "2", "audience", "3", "audience", "4", "audience", "5", "audience", "6", "audience", "7", "audience", "8", "audience", "9"), wantCode: InvalidRequest, wantIn: "at most 8",
		},
		"delegation refused": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", TokenTypeJWT, "actor_token", tok), wantCode: InvalidRequest, wantIn: "delegation (actor_token) is not supported",
		},
		"duplicate scope": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", TokenTypeJWT, "scope", "a", "scope", "b"), wantCode: InvalidRequest, wantIn: "scope is given 2 times",
		},
		"oversized subject token": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", strings.Repeat("a", MaxSubjectTokenBytes+1), "subject_token_type", TokenTypeJWT), wantCode: InvalidRequest, wantIn: "larger than 16384",
		},
		"subject token at the limit": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", strings.Repeat("a", MaxSubjectTokenBytes), "subject_token_type", TokenTypeJWT),
		},
		"oversized body": {
			body: append(form("grant_type", GrantTypeTokenExchange, "subject_token_type", TokenTypeJWT, "subject_token", "x"), strings.Repeat("x", MaxRequestBytes)...), wantCode: InvalidRequest, wantIn: "larger than 18432",
		},
		"lifetime asked for": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", TokenTypeJWT, "kube_sts_lifetime", "600"),
		},
		"lifetime not a number": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", TokenTypeJWT, "kube_sts_lifetime", "10m"), wantCode: InvalidRequest, wantIn: "kube_sts_lifetime must be a whole number of seconds from 1 to 86400",
		},
		"lifetime zero": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", TokenTypeJWT, "kube_sts_lifetime", "0"), wantCode: InvalidRequest, wantIn: "kube_sts_lifetime must be",
		},
		"lifetime over a day": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", TokenTypeJWT, "kube_sts_lifetime", "86401"), wantCode: InvalidRequest, wantIn: "kube_sts_lifetime must be",
		},
		"lifetime twice": {
			body: form("grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", TokenTypeJWT, "kube_sts_lifetime", "600", "kube_sts_lifetime", "60"), wantCode: InvalidRequest, wantIn: "kube_sts_lifetime is given 2 times",
		},
		"bad escape": {
			body: []byte("grant_type=%zz"), wantCode: InvalidRequest, wantIn: "form encoding",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r, err := ParseRequest(tc.body)
			if tc.wantCode == "" {
				if err != nil {
					t.Fatalf("ParseRequest: %v", err)
				}
				if r.SubjectToken == "" || r.SubjectTokenType != TokenTypeJWT {
					t.Fatalf("ParseRequest = %+v", r)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("ParseRequest error = %v, want *Error %s", err, tc.wantCode)
			}
			if e.Code != tc.wantCode || !strings.Contains(e.Description, tc.wantIn) {
				t.Fatalf("ParseRequest error = %q / %q, want %q containing %q", e.Code, e.Description, tc.wantCode, tc.wantIn)
			}
			if strings.Contains(e.Description, tok) {
				t.Fatalf("error description quotes the subject token: %q", e.Description)
			}
		})
	}
}

func TestRequestRoundTrip(t *testing.T) {
	for name, r := range map[string]Request{
		"plain":           NewRequest(tok),
		"requested type":  {SubjectToken: tok, SubjectTokenType: TokenTypeJWT, RequestedTokenType: TokenTypeJWT},
		"needs escaping":  NewRequest("a+b/c=d&e"),
		"unicode-ish jwt": NewRequest("ä.ö.ü"),
		"lifetime":        {SubjectToken: tok, SubjectTokenType: TokenTypeJWT, Lifetime: 10 * time.Minute},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ParseRequest([]byte(r.Encode()))
			if err != nil {
				t.Fatalf("ParseRequest(Encode()): %v", err)
			}
			if !reflect.DeepEqual(got, r) {
				t.Fatalf("round trip = %+v, want %+v", got, r)
			}
		})
	}
}

// TestResponseAppendJSON: AppendJSON writes what json.Encoder writes, so
// that the names in the struct tags stay the one definition of the format.
func TestResponseAppendJSON(t *testing.T) {
	for _, r := range []Response{
		NewResponse(tok, 900),
		{AccessToken: tok, IssuedTokenType: TokenTypeJWT, TokenType: TokenTypeNA, ExpiresIn: 600, LifetimeNote: `1h0m0s is longer than endpoint "vault"'s ttl <15m0s>; issued for 15m0s`},
		{},
	} {
		var want strings.Builder
		if err := json.NewEncoder(&want).Encode(r); err != nil {
			t.Fatal(err)
		}
		if got := string(r.AppendJSON([]byte("x"))); got != "x"+want.String() {
			t.Errorf("AppendJSON = %s, want x%s", got, want.String())
		}
	}
}

// TestErrorAppendJSON: AppendJSON writes what json.Encoder writes.
func TestErrorAppendJSON(t *testing.T) {
	for _, e := range []*Error{Errorf(InvalidRequest, "endpoint %s issues tokens for audience %q only", "vault", "https://v/<x>&"), {Code: ServerError}} {
		var want strings.Builder
		if err := json.NewEncoder(&want).Encode(e); err != nil {
			t.Fatal(err)
		}
		if got := string(e.AppendJSON(nil)); got != want.String() {
			t.Errorf("AppendJSON = %s, want %s", got, want.String())
		}
	}
}

func TestResponseValidate(t *testing.T) {
	tests := map[string]struct {
		resp   Response
		wantIn string
	}{
		"valid":             {resp: NewResponse(tok, 900)},
		"no access token":   {resp: Response{IssuedTokenType: TokenTypeJWT, TokenType: TokenTypeNA, ExpiresIn: 900}, wantIn: "no access_token"},
		"wrong issued type": {resp: Response{AccessToken: tok, IssuedTokenType: "urn:ietf:params:oauth:token-type:access_token", ExpiresIn: 900}, wantIn: "issued_token_type"},
		"zero expiry":       {resp: Response{AccessToken: tok, IssuedTokenType: TokenTypeJWT, ExpiresIn: 0}, wantIn: "expires_in is 0"},
		"negative expiry":   {resp: Response{AccessToken: tok, IssuedTokenType: TokenTypeJWT, ExpiresIn: -5}, wantIn: "expires_in is -5"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.resp.Validate()
			if tc.wantIn == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantIn) {
				t.Fatalf("Validate = %v, want error containing %q", err, tc.wantIn)
			}
		})
	}
}

func TestErrorStatus(t *testing.T) {
	tests := map[string]struct {
		code      string
		status    int
		retryable bool
	}{
		InvalidRequest:         {InvalidRequest, http.StatusBadRequest, false},
		InvalidClient:          {InvalidClient, http.StatusUnauthorized, false},
		InvalidGrant:           {InvalidGrant, http.StatusBadRequest, false},
		UnauthorizedClient:     {UnauthorizedClient, http.StatusBadRequest, false},
		UnsupportedGrantType:   {UnsupportedGrantType, http.StatusBadRequest, false},
		InvalidScope:           {InvalidScope, http.StatusBadRequest, false},
		InvalidTarget:          {InvalidTarget, http.StatusBadRequest, false},
		ServerError:            {ServerError, http.StatusInternalServerError, true},
		TemporarilyUnavailable: {TemporarilyUnavailable, http.StatusServiceUnavailable, true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := Errorf(tc.code, "x")
			if got := e.HTTPStatus(); got != tc.status {
				t.Errorf("HTTPStatus = %d, want %d", got, tc.status)
			}
			if got := e.Retryable(); got != tc.retryable {
				t.Errorf("Retryable = %v, want %v", got, tc.retryable)
			}
		})
	}
}

func TestParseError(t *testing.T) {
	tests := map[string]struct {
		body     string
		wantCode string
		wantDesc string
		wantErr  string
	}{
		"oauth error":     {body: `{"error":"invalid_request","error_description":"pod is gone"}`, wantCode: InvalidRequest, wantDesc: "pod is gone"},
		"code only":       {body: `{"error":"temporarily_unavailable"}`, wantCode: TemporarilyUnavailable},
		"html page":       {body: `<html><body>502 Bad Gateway</body></html>`, wantErr: "not JSON"},
		"json without it": {body: `{"message":"nope"}`, wantErr: "no error code"},
		"empty":           {body: ``, wantErr: "not JSON"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e, err := ParseError([]byte(tc.body))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseError = %v, %v; want error containing %q", e, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseError: %v", err)
			}
			if e.Code != tc.wantCode || e.Description != tc.wantDesc {
				t.Fatalf("ParseError = %+v, want %s / %q", e, tc.wantCode, tc.wantDesc)
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	if got := Errorf(InvalidRequest, "pod %s is gone", "p").Error(); got != "invalid_request: pod p is gone" {
		t.Fatalf("Error() = %q", got)
	}
	if got := (&Error{Code: ServerError}).Error(); got != "server_error" {
		t.Fatalf("Error() = %q", got)
	}
}

// TestRefusalsQuoteNoValue: a token put where another value belongs (or sent
// without a name) never comes back in the error description.
func TestRefusalsQuoteNoValue(t *testing.T) {
	secret := "eyJhbGciOiJSUzI1NiIsImtpZCI6InNlY3JldCJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YTpiIn0.U0lHTkFUVVJFLXNlY3JldC1ieXRlcw"
	bodies := map[string][]byte{
		"as grant_type":           form("grant_type", secret, "subject_token", tok, "subject_token_type", TokenTypeJWT),
		"as subject_token_type":   form("grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", secret),
		"as requested_token_type": form("grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", TokenTypeJWT, "requested_token_type", secret),
		"without a name":          []byte(secret),
		"as a parameter name":     []byte(url.QueryEscape(secret) + "=1&" + string(form("grant_type", secret))),
		"twice as subject_token":  form("grant_type", GrantTypeTokenExchange, "subject_token", secret, "subject_token", secret, "subject_token_type", TokenTypeJWT),
		"oversized":               form("grant_type", GrantTypeTokenExchange, "subject_token", secret+strings.Repeat("A", MaxSubjectTokenBytes), "subject_token_type", TokenTypeJWT),
		"as actor_token":          form("grant_type", GrantTypeTokenExchange, "subject_token", tok, "subject_token_type", TokenTypeJWT, "actor_token", secret),
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			_, err := ParseRequest(body)
			if err == nil {
				t.Fatal("accepted")
			}
			if redact.Leaks(err.Error(), secret) {
				t.Fatalf("the error quotes the token: %q", err)
			}
		})
	}
}
