// Package jwtinfo reads the timing claims of a JWT without verifying it. The
// sidecar trusts the issuer over TLS; it only needs exp/iat/jti to schedule
// refreshes, to log which token it holds, and to never serve an expired one.
package jwtinfo

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MaxLen bounds the tokens accepted; issued tokens are about 1 KiB.
const MaxLen = 64 << 10

// Claims are the claims the sidecar schedules by.
type Claims struct {
	ID        string
	IssuedAt  time.Time // zero when absent
	NotBefore time.Time // zero when absent
	Expiry    time.Time
}

type payload struct {
	ID  string          `json:"jti"`
	Iat json.RawMessage `json:"iat"`
	Nbf json.RawMessage `json:"nbf"`
	Exp json.RawMessage `json:"exp"`
}

// Parse decodes a compact JWS and returns its claims. It requires three
// base64url segments, a JSON object payload and a numeric exp.
func Parse(token string) (Claims, error) {
	if len(token) > MaxLen {
		return Claims{}, fmt.Errorf("token is longer than %d bytes", MaxLen)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return Claims{}, fmt.Errorf("token has %d segments, a JWT has 3", len(parts))
	}
	for i, p := range parts[:2] {
		if p == "" {
			return Claims{}, fmt.Errorf("token segment %d is empty", i+1)
		}
	}
	if parts[2] == "" {
		return Claims{}, errors.New("token has no signature")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return Claims{}, fmt.Errorf("token payload is not base64url: %w", err)
	}
	var p payload
	if err := json.Unmarshal(raw, &p); err != nil {
		return Claims{}, fmt.Errorf("token payload is not a JSON object: %w", err)
	}
	if p.Exp == nil {
		return Claims{}, errors.New("token has no exp claim")
	}
	c := Claims{ID: p.ID}
	if c.Expiry, err = numericDate("exp", p.Exp); err != nil {
		return Claims{}, err
	}
	if p.Iat != nil {
		if c.IssuedAt, err = numericDate("iat", p.Iat); err != nil {
			return Claims{}, err
		}
	}
	if p.Nbf != nil {
		if c.NotBefore, err = numericDate("nbf", p.Nbf); err != nil {
			return Claims{}, err
		}
	}
	return c, nil
}

// numericDate parses an RFC 7519 NumericDate: a JSON number of seconds,
// possibly fractional; a quoted number is not one.
func numericDate(name string, raw json.RawMessage) (time.Time, error) {
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f < 0 || f > 1<<40 {
		return time.Time{}, fmt.Errorf("token %s claim %.32q is not a valid time", name, raw)
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9)), nil
}
