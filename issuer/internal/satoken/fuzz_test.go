package satoken

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzVerify feeds the network-facing token screen arbitrary subject tokens:
// it never panics, refuses everything that the cluster key did not sign, and
// never quotes the input in its error.
func FuzzVerify(f *testing.F) {
	f.Add("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ4In0.c2ln")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
	f.Add(strings.Repeat(".", 100))
	f.Add("eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.e30.AAAA")
	c := &cluster{}
	c.publish(rsaKey(f, "k1"))
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	v := New(Options{Get: c.get, MinRefresh: time.Hour, Now: clk.now})
	f.Fuzz(func(t *testing.T, token string) {
		_, err := v.Verify(context.Background(), token, aud)
		if err == nil {
			t.Fatalf("accepted a token the cluster did not sign: %q", token)
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("error is %T, want *Error", err)
		}
		if len(token) >= 12 && strings.Contains(e.Description, token) {
			t.Fatalf("the error quotes the token: %q", e.Description)
		}
	})
}

// FuzzDecodeHeader: DecodeHeader reads every header as json.Unmarshal into
// Header does, whether its fast path or encoding/json reads it.
func FuzzDecodeHeader(f *testing.F) {
	for _, h := range []string{`{"alg":"RS256","kid":"ktXTkqV5Z0bIvAfJJF7EUWK3tbGGuE2FYFDzUOPJ5Bo"}`, `{"alg":"ES256","kid":""}`,
		`{"kid":"k","alg":"RS256"}`, `{"alg":"RS256","kid":"k","typ":"JWT"}`, `{"alg":"RS\u0032","kid":"k"}`, `{"ALG":"RS256","kid":"k"}`,
		`{"alg":"RS256","kid":"k"} `, `{"alg":"RS256","kid":"\xff"}`, `null`, `[]`, `{"alg":1}`, `{"alg":"RS256","alg":"none","kid":"k"}`} {
		f.Add([]byte(h))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var want Header
		wantOK := json.Unmarshal(raw, &want) == nil
		if !wantOK {
			want = Header{}
		}
		got, ok := DecodeHeader(raw)
		if ok != wantOK || got != want {
			t.Fatalf("DecodeHeader(%q) = %+v, %v; json.Unmarshal: %+v, %v", raw, got, ok, want, wantOK)
		}
	})
}
