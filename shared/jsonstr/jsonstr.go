// Package jsonstr appends a string as JSON, byte for byte as encoding/json
// writes it, without reflection in the common case: the issuer writes a
// token's claims and its response on every exchange, and their strings
// (names, base64url, URLs) almost never need escaping.
package jsonstr

import "encoding/json"

// Append appends s as a JSON string to dst: quoted, and escaped exactly as
// encoding/json escapes it (including its HTML-safe escapes of <, > and &).
func Append(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			// Rare: let encoding/json escape it (it cannot fail on a string).
			b, _ := json.Marshal(s)
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
