// Package keys holds signing keys: parsing and generating them, naming them
// (kid = RFC 7638 thumbprint, the same on every replica), the key set an
// endpoint publishes and signs with, and the pure planners that move sets
// through time (Plan for managed keys, PlanFiles for key files). It does no
// I/O; package keysource reads files and the managed Secret.
package keys

import (
	"cmp"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Algorithms.
const (
	RS256 = "RS256"
	ES256 = "ES256"
	EdDSA = "EdDSA"
)

// Key is one signing key.
type Key struct {
	// ID is the kid: the base64url SHA-256 JWK thumbprint of the public key.
	ID        string
	Algorithm string
	// Created is when the key was made (file keys: when first loaded).
	Created time.Time
	private crypto.Signer
	// header is the base64url of the protected header every token of this
	// key carries: {"alg":…,"kid":…,"typ":"JWT"}.
	header string
}

// New wraps a private key for alg; the key type must fit the algorithm.
func New(priv crypto.Signer, alg string, created time.Time) (*Key, error) {
	if err := fits(priv, alg); err != nil {
		return nil, err
	}
	kid, err := thumbprint(priv.Public())
	if err != nil {
		return nil, err
	}
	h, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{alg, kid, "JWT"})
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	return &Key{ID: kid, Algorithm: alg, Created: created, private: priv, header: base64.RawURLEncoding.EncodeToString(h)}, nil
}

// Generate makes a new key for alg: RSA 2048 for RS256 (the widest support),
// P-256 for ES256, Ed25519 for EdDSA.
func Generate(alg string, now time.Time) (*Key, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case RS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case EdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("unsupported algorithm %q", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", alg, err)
	}
	return New(priv, alg, now)
}

// Sign signs payload as a compact JWS (RFC 7515 §7.1) with kid and typ JWT
// in the header. The header is fixed per key, so a token costs the base64 of
// its payload and the signature: no JOSE library builds, encodes and
// re-serializes a header per token (that was most of an EdDSA exchange's
// time beyond the signature). Tests verify its output with go-jose.
func (k *Key) Sign(payload []byte) (string, error) {
	enc := base64.RawURLEncoding
	input := len(k.header) + 1 + enc.EncodedLen(len(payload))
	buf := make([]byte, input, input+1+enc.EncodedLen(maxSignatureBytes))
	copy(buf, k.header)
	buf[len(k.header)] = '.'
	enc.Encode(buf[len(k.header)+1:], payload)
	sig, err := k.signature(buf)
	if err != nil {
		return "", err
	}
	buf = append(buf, '.')
	return string(enc.AppendEncode(buf, sig)), nil
}

// maxSignatureBytes is the longest signature Sign makes: RSA with a
// 4096-bit key. Longer keys only cost Sign one more allocation.
const maxSignatureBytes = 512

// signature signs the JWS signing input with the key's algorithm (RFC 7518
// §3.3, §3.4; RFC 8037 §3.1). ES256's signature is R and S as two 32-byte
// big-endian numbers, not ASN.1.
func (k *Key) signature(input []byte) ([]byte, error) {
	switch priv := k.private.(type) {
	case ed25519.PrivateKey:
		return ed25519.Sign(priv, input), nil
	case *rsa.PrivateKey:
		h := sha256.Sum256(input)
		return rsa.SignPKCS1v15(nil, priv, crypto.SHA256, h[:])
	case *ecdsa.PrivateKey:
		h := sha256.Sum256(input)
		r, s, err := ecdsa.Sign(rand.Reader, priv, h[:])
		if err != nil {
			return nil, err
		}
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return sig, nil
	}
	return nil, fmt.Errorf("unsupported key type %T", k.private)
}

// Public is the key's public JWK: kid, alg, use sig, and nothing private.
func (k *Key) Public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.private.Public(), KeyID: k.ID, Algorithm: k.Algorithm, Use: "sig"}
}

// MarshalPEM returns the private key as PKCS#8 PEM, for the managed Secret.
func (k *Key) MarshalPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.private)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParsePEM reads the first private key in PEM data: PKCS#8, PKCS#1 or SEC 1.
func ParsePEM(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key found")
		}
		switch block.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse PKCS#8 key: %w", err)
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("unsupported key type %T", k)
			}
			return s, nil
		case "RSA PRIVATE KEY":
			return x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(block.Bytes)
		}
	}
}

// AlgorithmFor is the algorithm that fits a key type.
func AlgorithmFor(priv crypto.Signer) (string, error) {
	switch k := priv.(type) {
	case *rsa.PrivateKey:
		return RS256, nil
	case *ecdsa.PrivateKey:
		if k.Curve == elliptic.P256() {
			return ES256, nil
		}
		return "", fmt.Errorf("EC curve %s is not supported; use P-256", k.Curve.Params().Name)
	case ed25519.PrivateKey:
		return EdDSA, nil
	}
	return "", fmt.Errorf("unsupported key type %T", priv)
}

func fits(priv crypto.Signer, alg string) error {
	got, err := AlgorithmFor(priv)
	if err != nil {
		return err
	}
	if got != alg {
		return fmt.Errorf("a %s key cannot sign %s", got, alg)
	}
	if k, ok := priv.(*rsa.PrivateKey); ok && k.N.BitLen() < 2048 {
		return fmt.Errorf("RSA key has %d bits; at least 2048 are required", k.N.BitLen())
	}
	return nil
}

func thumbprint(pub crypto.PublicKey) (string, error) {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// Set is what an endpoint publishes and signs with. Sets are immutable once
// built; a new one replaces the old as a whole.
type Set struct {
	// Signing signs new tokens; it is always among Keys.
	Signing *Key
	// Keys are all published keys, in a stable order (by creation, then kid).
	Keys []*Key
}

// NewSet builds a set; signing must be one of keys.
func NewSet(signing *Key, keys []*Key) (*Set, error) {
	if signing == nil || len(keys) == 0 {
		return nil, errors.New("a key set needs a signing key")
	}
	keys = slices.Clone(keys)
	slices.SortFunc(keys, func(a, b *Key) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	keys = slices.CompactFunc(keys, func(a, b *Key) bool { return a.ID == b.ID })
	if !slices.ContainsFunc(keys, func(k *Key) bool { return k.ID == signing.ID }) {
		return nil, errors.New("the signing key is not in the set")
	}
	return &Set{Signing: signing, Keys: keys}, nil
}

// Same reports whether two sets publish the same keys and sign with the same one.
func (s *Set) Same(o *Set) bool {
	if s == nil || o == nil {
		return s == o
	}
	if s.Signing.ID != o.Signing.ID || len(s.Keys) != len(o.Keys) {
		return false
	}
	for i := range s.Keys {
		if s.Keys[i].ID != o.Keys[i].ID {
			return false
		}
	}
	return true
}

// Algorithms lists the distinct algorithms of the published keys.
func (s *Set) Algorithms() []string {
	var algs []string
	for _, k := range s.Keys {
		if !slices.Contains(algs, k.Algorithm) {
			algs = append(algs, k.Algorithm)
		}
	}
	return algs
}
