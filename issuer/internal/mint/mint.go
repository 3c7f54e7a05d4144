// Package mint builds and signs the STS token, and is the home of its
// claims (claims.go). The standard claims are iss aud exp nbf iat jti sub
// cluster namespace saname (+ pod, pod_uid, node when configured); an
// endpoint may add string claims of its own (static values, Pod labels),
// which never replace a standard or reserved one. All are strings or
// numbers, as Vault's claim_mappings need.
package mint

import (
	"crypto/rand"
	"encoding/base64"
	"time"

	"github.com/kube-sts/kube-sts/issuer/internal/keys"
)

// NotBeforeSkew backdates nbf, so a relying party whose clock is a little
// behind accepts a fresh token.
const NotBeforeSkew = time.Minute

// Subject is <cluster>:<namespace>:<serviceaccount>.
func Subject(cluster, namespace, serviceAccount string) string {
	return cluster + ":" + namespace + ":" + serviceAccount
}

// Request is what a token is minted for.
type Request struct {
	Issuer, Audience, Cluster string
	Namespace, ServiceAccount string
	Pod, PodUID, Node         string // empty unless the endpoint adds them
	Extra                     map[string]string
	TTL                       time.Duration
	Now                       time.Time
}

// Token is a signed token and its facts for the audit log.
type Token struct {
	JWT    string
	ID     string
	Expiry time.Time
	KeyID  string
}

// Mint signs a new token with key.
func Mint(key *keys.Key, r Request) (Token, error) {
	jti, err := newID()
	if err != nil {
		return Token{}, err
	}
	now := r.Now.Truncate(time.Second)
	exp := now.Add(r.TTL)
	c := Claims{
		Issuer:    r.Issuer,
		Audience:  r.Audience,
		Expiry:    exp.Unix(),
		NotBefore: now.Add(-NotBeforeSkew).Unix(),
		IssuedAt:  now.Unix(),
		ID:        jti,
		Subject:   Subject(r.Cluster, r.Namespace, r.ServiceAccount),
		Cluster:   r.Cluster,
		Namespace: r.Namespace,
		SAName:    r.ServiceAccount,
		Pod:       r.Pod,
		PodUID:    r.PodUID,
		Node:      r.Node,
		Extra:     r.Extra,
	}
	// MarshalJSON directly: through json.Marshal its output would be
	// checked and compacted once more.
	payload, err := c.MarshalJSON()
	if err != nil {
		return Token{}, err
	}
	jwt, err := key.Sign(payload)
	if err != nil {
		return Token{}, err
	}
	return Token{JWT: jwt, ID: jti, Expiry: exp, KeyID: key.ID}, nil
}

// newID returns 128 random bits, base64url.
func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
