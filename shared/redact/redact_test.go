package redact

import (
	"strings"
	"testing"
)

const token = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDpkZWZhdWx0In0.c2lnbmF0dXJlLWJ5dGVzLWhlcmUtMTIzNDU2Nzg5MA"

func TestText(t *testing.T) {
	for name, tc := range map[string]struct{ in, want string }{
		"plain":           {"pod default/app no longer exists", "pod default/app no longer exists"},
		"whole token":     {"invalid token " + token, "invalid token " + Placeholder},
		"header only":     {"bad header eyJhbGciOiJub25lIn0 here", "bad header " + Placeholder + " here"},
		"token in quotes": {`subject_token_type "` + token + `"`, `subject_token_type "` + Placeholder + `"`},
		"non-jwt jws":     {"x abcdefgh.ijklmnop.qrst y", "x " + Placeholder + " y"},
		"dotted names ok": {"kubernetes.default.svc and 10.0.0.1", "kubernetes.default.svc and 10.0.0.1"},
		"glued to text":   {"token=" + token + ";", "token=" + Placeholder + ";"},
		"two tokens":      {token + " and " + token, Placeholder + " and " + Placeholder},
	} {
		t.Run(name, func(t *testing.T) {
			if got := Text(tc.in); got != tc.want {
				t.Fatalf("Text(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestTextBounded(t *testing.T) {
	got := Text(strings.Repeat("é", 400))
	if len(got) > MaxLen+3 || !strings.HasSuffix(got, "...") {
		t.Fatalf("not bounded: %d bytes", len(got))
	}
	if strings.ContainsRune(got, '\uFFFD') {
		t.Fatal("cut in the middle of a rune")
	}
}

func TestLeaks(t *testing.T) {
	secret := "abcdefghijklmnop"
	for text, want := range map[string]bool{
		"nothing here":           false,
		"has eyJ in it":          true,
		"x ijklmnop y":           true,
		"x ijklmno y":            false,
		Text("t " + token + "."): false,
	} {
		if got := Leaks(text, secret); got != want {
			t.Errorf("Leaks(%q) = %v, want %v", text, got, want)
		}
	}
}
