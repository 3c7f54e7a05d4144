package server

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/kube-sts/kube-sts/issuer/internal/satoken"
	"github.com/kube-sts/kube-sts/shared/exchange"
)

// Precheck rejects subject tokens that cannot be ServiceAccount tokens before
// the API server is bothered with them: a compact JWS of three base64url
// segments whose header is a JSON object naming a real signature algorithm.
// It does not verify anything (the TokenReview and the Verifier do); it
// returns the header it decoded, so that the Verifier need not decode it again.
func Precheck(tok string) (satoken.Header, error) {
	var h satoken.Header
	if len(tok) > exchange.MaxSubjectTokenBytes {
		return h, fmt.Errorf("longer than %d bytes", exchange.MaxSubjectTokenBytes)
	}
	if strings.Count(tok, ".") != 2 {
		return h, errors.New("a JWT has three dot-separated segments")
	}
	rest, first := tok, ""
	for i := range 3 {
		seg, after, _ := strings.Cut(rest, ".")
		if seg == "" {
			return h, fmt.Errorf("segment %d is empty", i+1)
		}
		for j := 0; j < len(seg); j++ {
			if !isB64URL(seg[j]) {
				return h, fmt.Errorf("segment %d is not base64url", i+1)
			}
		}
		if i == 0 {
			first = seg
		}
		rest = after
	}
	raw, err := base64.RawURLEncoding.DecodeString(first)
	if err != nil {
		return h, errors.New("header is not base64url")
	}
	h, ok := satoken.DecodeHeader(raw)
	if !ok {
		return h, errors.New("header is not a JSON object")
	}
	if h.Algorithm == "" || strings.EqualFold(h.Algorithm, "none") {
		return h, errors.New("header names no signature algorithm")
	}
	return h, nil
}

func isB64URL(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}
