// Package redact makes text that came from elsewhere (an API server's error,
// an issuer's error_description) safe to quote in a response or a log: every
// JWT-like run is replaced and the text is bounded. It is the one place that
// does so; values that a client sent are never quoted at all.
package redact

import (
	"regexp"
	"strings"
)

// Placeholder replaces what looked like a token.
const Placeholder = "[redacted]"

// MaxLen bounds quoted text.
const MaxLen = 256

// jwtLike matches a base64url run that holds the encoding of '{"' (every
// JWS header and JWT payload starts so), and any three dot-separated
// base64url segments (a compact JWS whatever its header).
var jwtLike = regexp.MustCompile(`[A-Za-z0-9_-]*eyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){0,2}|[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+`)

// Text returns s with JWT-like runs replaced, cut to MaxLen bytes.
func Text(s string) string {
	s = jwtLike.ReplaceAllString(s, Placeholder)
	if len(s) > MaxLen {
		s = strings.ToValidUTF8(s[:MaxLen], "") + "..."
	}
	return s
}

// Leaks reports whether text holds "eyJ" or any 8-byte run of secret: the
// check the tests of every refusal path apply to responses and log lines.
func Leaks(text, secret string) bool {
	if strings.Contains(text, "eyJ") {
		return true
	}
	for i := 0; i+8 <= len(secret); i++ {
		if strings.Contains(text, secret[i:i+8]) {
			return true
		}
	}
	return false
}
