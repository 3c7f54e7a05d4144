// Package satoken checks a ServiceAccount token locally, before any API call
// is spent on it: its signature against the cluster's own service-account
// keys (the API server's OIDC discovery document and JWKS, fetched with the
// issuer's credentials), iss, aud, exp and nbf, and reads what the token is
// bound to (its Pod and ServiceAccount, with UIDs). A request whose token the
// cluster did not sign costs no TokenReview. In review mode tokenreview it
// only screens (the TokenReview and the live Pod check decide); in review
// mode watch it is the token check, and the binding is compared with watched
// Pods and ServiceAccounts (package review).
package satoken

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Paths the API server serves its service-account issuer discovery on
// (KEP-1393). The jwks_uri of the document names the external URL, which the
// issuer may not reach; the keys are always read from the API server itself.
const (
	PathDiscovery = "/.well-known/openid-configuration"
	PathJWKS      = "/openid/v1/jwks"
)

// Algorithms a ServiceAccount token may be signed with.
var algorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

// Leeway tolerates clock skew between the API server and the issuer on exp
// and nbf; the TokenReview judges exactly.
const Leeway = 30 * time.Second

// Getter fetches a path from the API server, for example
// clientset.Discovery().RESTClient().Get().AbsPath(path).DoRaw(ctx).
type Getter func(ctx context.Context, path string) ([]byte, error)

// Error is a refusal (the token is not the cluster's) or, when Retryable,
// the keys could not be loaded. Its text never quotes the token.
type Error struct {
	// Reason is a stable key for logs and metrics: bad_signature, unknown_key,
	// wrong_issuer, wrong_audience, expired, not_yet_valid, not_a_jwt,
	// cluster_keys_unavailable.
	Reason      string
	Description string
	Retryable   bool
	// RetryAfter says when an unknown key may be looked up again.
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Reason + ": " + e.Description }

func refuse(reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Description: fmt.Sprintf(format, args...)}
}

type keySet struct {
	issuer string
	keys   map[string]jose.JSONWebKey
	all    []jose.JSONWebKey
}

// Verifier holds the cluster's keys and refreshes them when a token names a
// key it does not know, at most once per MinRefresh.
type Verifier struct {
	get        Getter
	minRefresh time.Duration
	now        func() time.Time

	current atomic.Pointer[keySet]
	// fetchMu allows one fetch at a time (others do not wait for it);
	// attempted is when the last one started, successful or not, so neither
	// garbage nor an outage makes fetches frequent.
	fetchMu   sync.Mutex
	attempted time.Time
}

// Options configure a Verifier.
type Options struct {
	Get Getter
	// MinRefresh is the shortest time between two fetches (default 5s).
	MinRefresh time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// New returns a verifier; keys are fetched on first use or by Refresh.
func New(o Options) *Verifier {
	v := &Verifier{get: o.Get, minRefresh: o.MinRefresh, now: o.Now}
	if v.minRefresh <= 0 {
		v.minRefresh = 5 * time.Second
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v
}

// Ready reports whether the cluster's keys have been loaded.
func (v *Verifier) Ready() bool { return v.current.Load() != nil }

// Refresh fetches the keys unless they were fetched less than MinRefresh ago.
func (v *Verifier) Refresh(ctx context.Context) error {
	_, err := v.refresh(ctx, nil)
	return err
}

// refresh fetches the keys unless one was tried within minRefresh or the set
// changed since the caller saw seen; it returns the set to use.
func (v *Verifier) refresh(ctx context.Context, seen *keySet) (*keySet, error) {
	// Nobody waits for a fetch in progress: a flood of unknown kids while the
	// API server is slow must not pile up goroutines behind it.
	if !v.fetchMu.TryLock() {
		return v.current.Load(), errors.New("the cluster's keys are being fetched")
	}
	defer v.fetchMu.Unlock()
	cur := v.current.Load()
	if cur != seen {
		return cur, nil
	}
	if !v.attempted.IsZero() && v.now().Sub(v.attempted) < v.minRefresh {
		return cur, errors.New("the cluster's keys were fetched moments ago")
	}
	v.attempted = v.now()
	set, err := v.fetch(ctx)
	if err != nil {
		return cur, err
	}
	v.current.Store(set)
	return set, nil
}

func (v *Verifier) fetch(ctx context.Context) (*keySet, error) {
	raw, err := v.get(ctx, PathDiscovery)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", PathDiscovery, err)
	}
	var disc struct {
		Issuer string `json:"issuer"`
	}
	if err := json.Unmarshal(raw, &disc); err != nil || disc.Issuer == "" {
		return nil, fmt.Errorf("%s names no issuer", PathDiscovery)
	}
	raw, err = v.get(ctx, PathJWKS)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", PathJWKS, err)
	}
	var jwks jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &jwks); err != nil {
		return nil, fmt.Errorf("%s is not a JWKS: %w", PathJWKS, err)
	}
	set := &keySet{issuer: disc.Issuer, keys: map[string]jose.JSONWebKey{}}
	for _, k := range jwks.Keys {
		if !k.Valid() || !k.IsPublic() {
			continue
		}
		set.all = append(set.all, k)
		if k.KeyID != "" {
			set.keys[k.KeyID] = k
		}
	}
	if len(set.all) == 0 {
		return nil, fmt.Errorf("%s holds no usable key", PathJWKS)
	}
	return set, nil
}

// Binding is what a verified token says it is bound to: the API server's
// private "kubernetes.io" claim. Names are empty for what the token is not
// bound to (a token made by a TokenRequest for a Secret has no Pod).
type Binding struct {
	Namespace                         string
	ServiceAccount, ServiceAccountUID string
	Pod, PodUID                       string
	Node, NodeUID                     string
}

// PodBound reports whether the token names a Pod and its ServiceAccount,
// each with its UID.
func (b *Binding) PodBound() bool {
	return b != nil && b.Namespace != "" && b.ServiceAccount != "" && b.ServiceAccountUID != "" && b.Pod != "" && b.PodUID != ""
}

type ref struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

type private struct {
	K *struct {
		Namespace      string `json:"namespace"`
		Pod            ref    `json:"pod"`
		ServiceAccount ref    `json:"serviceaccount"`
		Node           ref    `json:"node"`
	} `json:"kubernetes.io"`
}

// binding reads the private claim; nil when the token has none (a legacy
// Secret token), or when it contradicts the token's subject.
func (p private) binding(subject string) *Binding {
	if p.K == nil {
		return nil
	}
	b := &Binding{Namespace: p.K.Namespace, ServiceAccount: p.K.ServiceAccount.Name, ServiceAccountUID: p.K.ServiceAccount.UID,
		Pod: p.K.Pod.Name, PodUID: p.K.Pod.UID, Node: p.K.Node.Name, NodeUID: p.K.Node.UID}
	if subject != "system:serviceaccount:"+b.Namespace+":"+b.ServiceAccount {
		return nil
	}
	return b
}

// Verify checks that token was signed by the cluster for audience and is
// within its validity, and returns what it is bound to (nil when it names
// no binding). A nil error means the cluster made the token for audience;
// whether its Pod and ServiceAccount still exist is the caller's question.
// A token the cluster did sign but for another audience, or that has
// expired, is refused with its binding too: its Pod may be told why.
func (v *Verifier) Verify(ctx context.Context, token, audience string) (*Binding, error) {
	h, ok := ParseHeader(token)
	if !ok {
		return nil, refuse("not_a_jwt", "subject_token is not a signed JWT")
	}
	return v.VerifyHeader(ctx, token, h, audience)
}

// VerifyHeader is Verify for a caller that has decoded the token's header
// already (with ParseHeader, or as sts-issuer's precheck does): the header
// is not decoded twice.
func (v *Verifier) VerifyHeader(ctx context.Context, token string, h Header, audience string) (*Binding, error) {
	// The header alone decides most refusals of tokens the cluster did not
	// sign (a garbage flood's), before the payload and signature are decoded.
	if !slices.Contains(algorithms, jose.SignatureAlgorithm(h.Algorithm)) {
		return nil, refuse("not_a_jwt", "subject_token is not a signed JWT")
	}
	set := v.current.Load()
	if set == nil {
		if set, _ = v.refresh(ctx, nil); set == nil {
			return nil, &Error{Reason: "cluster_keys_unavailable", Retryable: true,
				Description: "the issuer could not load the cluster's service-account keys; retry"}
		}
	}
	candidates := set.candidates(h.KeyID)
	if len(candidates) == 0 {
		// A key the cluster started to use after our last fetch, or garbage.
		seen := set
		set, _ = v.refresh(ctx, seen)
		if candidates = set.candidates(h.KeyID); len(candidates) == 0 {
			if set == seen {
				// No new fetch allowed yet: this might be a brand-new key.
				return nil, &Error{Reason: "unknown_key", Retryable: true, RetryAfter: v.minRefresh,
					Description: "subject_token is signed with a key the issuer has not seen yet; retry shortly"}
			}
			return nil, errNotOurs
		}
	}
	// Only a key of the header's algorithm can have signed it (a P-256
	// signature under the kid of the cluster's RSA key is not the cluster's).
	fitting := func(k jose.JSONWebKey) bool { return fits(k, h.Algorithm) }
	if !slices.ContainsFunc(candidates, fitting) {
		return nil, errNotOurs
	}

	tok, err := jwt.ParseSigned(token, algorithms)
	if err != nil {
		return nil, refuse("not_a_jwt", "subject_token is not a signed JWT")
	}
	if len(tok.Headers) != 1 {
		return nil, refuse("not_a_jwt", "subject_token must carry exactly one signature")
	}
	var claims jwt.Claims
	var priv private
	verified := false
	for _, k := range candidates {
		if !fitting(k) {
			continue
		}
		if err := tok.Claims(k.Key, &claims, &priv); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, errNotOurs
	}
	err = claims.ValidateWithLeeway(jwt.Expected{Issuer: set.issuer, AnyAudience: jwt.Audience{audience}, Time: v.now()}, Leeway)
	switch {
	case err == nil:
		return priv.binding(claims.Subject), nil
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return nil, refuse("wrong_issuer", "subject_token was not issued by this cluster's service-account issuer")
	case errors.Is(err, jwt.ErrInvalidAudience):
		// The cluster signed it: its Pod may be told (an Event) why.
		return priv.binding(claims.Subject), refuse("wrong_audience", "subject_token is not valid for audience %q; project a token with that audience", audience)
	case errors.Is(err, jwt.ErrExpired):
		return priv.binding(claims.Subject), refuse("expired", "subject_token has expired")
	case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
		return nil, refuse("not_yet_valid", "subject_token is not valid yet (clock skew?)")
	}
	return nil, refuse("bad_claims", "subject_token has invalid claims")
}

// errNotOurs refuses a token the cluster's keys did not sign.
var errNotOurs = refuse("bad_signature", "subject_token is not signed by this cluster's service-account keys")

// Header is what Verify reads of a token before anything else: its
// protected header's algorithm and key ID.
type Header struct {
	Algorithm string `json:"alg"`
	KeyID     string `json:"kid"`
}

// maxHeaderBytes bounds the header ParseHeader decodes (a ServiceAccount
// token's is about 100 bytes).
const maxHeaderBytes = 1024

// ParseHeader decodes a compact JWS's protected header only; ok is false when
// the token has not three segments, or the header is not base64url JSON of
// at most maxHeaderBytes. Whether the algorithm is one a ServiceAccount
// token may be signed with is VerifyHeader's question.
func ParseHeader(token string) (Header, bool) {
	var h Header
	seg, rest, ok := strings.Cut(token, ".")
	if !ok || strings.Count(rest, ".") != 1 || len(seg) > base64.RawURLEncoding.EncodedLen(maxHeaderBytes) {
		return h, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return h, false
	}
	return DecodeHeader(raw)
}

// DecodeHeader reads a protected header (base64-decoded) as json.Unmarshal
// into Header does. A flat object of plain ASCII strings, which is what the
// API server writes ({"alg":"…","kid":"…"}) and what most forgeries are,
// is read without encoding/json (it was a quarter of a garbage request's
// cost); anything else goes through encoding/json. A fuzz test holds the
// two equal.
func DecodeHeader(raw []byte) (Header, bool) {
	if h, ok := decodeFlatHeader(raw); ok {
		return h, true
	}
	var h Header
	if json.Unmarshal(raw, &h) != nil {
		return Header{}, false
	}
	return h, true
}

// decodeFlatHeader reads {"k":"v",...} without spaces, escapes or other
// value types; ok is false for anything else, and for what encoding/json
// would read differently: a repeated alg or kid (it keeps the last), or
// those names in another letter case (it matches them).
func decodeFlatHeader(raw []byte) (h Header, ok bool) {
	if len(raw) < 2 || raw[0] != '{' || raw[len(raw)-1] != '}' {
		return Header{}, false
	}
	rest := raw[1 : len(raw)-1]
	var alg, kid bool
	for len(rest) > 0 {
		if rest[0] != '"' {
			return Header{}, false
		}
		key, after, ok := plainUntilQuote(rest[1:])
		if !ok || len(after) < 2 || after[0] != ':' || after[1] != '"' {
			return Header{}, false
		}
		val, after, ok := plainUntilQuote(after[2:])
		if !ok {
			return Header{}, false
		}
		switch {
		case key == "alg" && !alg:
			h.Algorithm, alg = val, true
		case key == "kid" && !kid:
			h.KeyID, kid = val, true
		case strings.EqualFold(key, "alg") || strings.EqualFold(key, "kid"):
			return Header{}, false
		}
		if len(after) == 0 {
			break
		}
		if after[0] != ',' || len(after) == 1 {
			return Header{}, false
		}
		rest = after[1:]
	}
	return h, true
}

// plainUntilQuote returns b up to its first '"' and what follows that quote;
// ok is false when there is none, or a byte before it would mean something
// else in JSON (an escape, a control character) or is not ASCII.
func plainUntilQuote(b []byte) (string, []byte, bool) {
	for i, c := range b {
		switch {
		case c == '"':
			return string(b[:i]), b[i+1:], true
		case c < 0x20 || c > 0x7e || c == '\\':
			return "", nil, false
		}
	}
	return "", nil, false
}

// fits reports whether k can verify signatures of alg.
func fits(k jose.JSONWebKey, alg string) bool {
	switch pub := k.Key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return pub.Curve == elliptic.P256()
		case "ES384":
			return pub.Curve == elliptic.P384()
		case "ES512":
			return pub.Curve == elliptic.P521()
		}
		return false
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	// A key type this function does not know: let the signature decide.
	return true
}

func (s *keySet) candidates(kid string) []jose.JSONWebKey {
	if s == nil {
		return nil
	}
	if kid == "" {
		return s.all
	}
	if k, ok := s.keys[kid]; ok {
		return []jose.JSONWebKey{k}
	}
	return nil
}
