// Package mint builds and signs the STS token. The standard claims are
// iss aud exp nbf iat jti sub cluster namespace saname (+ pod, pod_uid,
// node when configured); an endpoint may add string claims of its own
// (static values, Pod labels), which never replace a standard one. All are
// strings or numbers, as Vault's claim_mappings need.
package mint

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/kube-sts/kube-sts/issuer/internal/keys"
)

// NotBeforeSkew backdates nbf, so a relying party whose clock is a little
// behind accepts a fresh token.
const NotBeforeSkew = time.Minute

// Claims is the token's payload.
type Claims struct {
	Issuer    string `json:"iss"`
	Audience  string `json:"aud"`
	Expiry    int64  `json:"exp"`
	NotBefore int64  `json:"nbf"`
	IssuedAt  int64  `json:"iat"`
	ID        string `json:"jti"`
	Subject   string `json:"sub"`
	Cluster   string `json:"cluster"`
	Namespace string `json:"namespace"`
	SAName    string `json:"saname"`
	Pod       string `json:"pod,omitempty"`
	PodUID    string `json:"pod_uid,omitempty"`
	Node      string `json:"node,omitempty"`
	// Extra are the endpoint's own claims; a name of the fields above is
	// dropped (configuration refuses such names at load).
	Extra map[string]string `json:"-"`
}

// MarshalJSON writes the standard claims, then the extra ones in name order.
func (c Claims) MarshalJSON() ([]byte, error) {
	type standard Claims
	b, err := json.Marshal(standard(c))
	if err != nil || len(c.Extra) == 0 {
		return b, err
	}
	var taken map[string]json.RawMessage
	if err := json.Unmarshal(b, &taken); err != nil {
		return nil, err
	}
	extra := map[string]string{}
	for k, v := range c.Extra {
		if _, ok := taken[k]; !ok && !IsReserved(k) {
			extra[k] = v
		}
	}
	if len(extra) == 0 {
		return b, nil
	}
	e, err := json.Marshal(extra)
	if err != nil {
		return nil, err
	}
	return append(append(b[:len(b)-1], ','), e[1:]...), nil
}

// StandardClaims are the names of the fields of Claims: extra claims never
// take them.
var StandardClaims = []string{"iss", "aud", "exp", "nbf", "iat", "jti", "sub", "cluster", "namespace", "saname", "pod", "pod_uid", "node"}

// ReservedClaims are names relying parties give a meaning of their own
// (authorized party, OAuth scope, group membership, email, delegation,
// proof of possession): no extra claim may take them either.
var ReservedClaims = []string{"azp", "scope", "groups", "email", "act", "cnf"}

// IsReserved reports whether an extra claim may not be called name: a
// standard or reserved name in any letter case. Relying parties that decode
// JSON case-insensitively (Go's encoding/json does) would otherwise read
// "Sub" or "Namespace" from a Pod label as sub or namespace.
func IsReserved(name string) bool {
	same := func(n string) bool { return strings.EqualFold(n, name) }
	return slices.ContainsFunc(StandardClaims, same) || slices.ContainsFunc(ReservedClaims, same)
}

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
	payload, err := json.Marshal(c)
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
