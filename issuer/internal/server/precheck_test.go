package server

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/kube-sts/kube-sts/shared/exchange"
)

func TestPrecheck(t *testing.T) {
	enc := base64.RawURLEncoding.EncodeToString
	tests := map[string]struct {
		tok    string
		wantIn string
	}{
		"service account token shape": {tok: fakeToken("x")},
		"two segments":                {tok: "a.b", wantIn: "three"},
		"dots only":                   {tok: "..", wantIn: "segment 1 is empty"},
		"empty signature":             {tok: enc([]byte(`{"alg":"RS256"}`)) + ".e30.", wantIn: "segment 3 is empty"},
		"padding":                     {tok: enc([]byte(`{"alg":"RS256"}`)) + ".e30=.c2ln", wantIn: "segment 2 is not base64url"},
		"standard base64":             {tok: enc([]byte(`{"alg":"RS256"}`)) + ".e3+/.c2ln", wantIn: "not base64url"},
		"header not json":             {tok: enc([]byte(`hello`)) + ".e30.c2ln", wantIn: "not a JSON object"},
		"header array":                {tok: enc([]byte(`[1]`)) + ".e30.c2ln", wantIn: "not a JSON object"},
		"no alg":                      {tok: enc([]byte(`{"kid":"k"}`)) + ".e30.c2ln", wantIn: "no signature algorithm"},
		"alg none":                    {tok: enc([]byte(`{"alg":"None"}`)) + ".e30.c2ln", wantIn: "no signature algorithm"},
		"too long":                    {tok: strings.Repeat("a", exchange.MaxSubjectTokenBytes+1), wantIn: "longer than"},
		"spaces":                      {tok: " " + fakeToken("x"), wantIn: "not base64url"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Precheck(tc.tok)
			if tc.wantIn == "" {
				if err != nil {
					t.Fatalf("Precheck: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantIn) {
				t.Fatalf("Precheck = %v, want error containing %q", err, tc.wantIn)
			}
		})
	}
}

// FuzzPrecheck: never panics, and what passes has the shape of a JWS.
func FuzzPrecheck(f *testing.F) {
	f.Add(fakeToken("seed"))
	f.Add("..")
	f.Add(strings.Repeat(".", 1000))
	f.Fuzz(func(t *testing.T, tok string) {
		if _, err := Precheck(tok); err != nil {
			return
		}
		if strings.Count(tok, ".") != 2 || len(tok) > exchange.MaxSubjectTokenBytes {
			t.Fatalf("accepted %q", tok)
		}
	})
}

// FuzzExchangeForm drives whole requests through the handler's parsing and
// pre-checks (the API server is never reached: every token is unknown to it).
func FuzzExchangeForm(f *testing.F) {
	f.Add(exchangeBody(fakeToken("x")))
	f.Add("grant_type=a&grant_type=b")
	f.Add("%")
	srv, _, _, _ := newHarness(f)
	f.Fuzz(func(t *testing.T, body string) {
		w := post(srv, body)
		if w.Code == 200 {
			t.Fatalf("issued a token for %q", body)
		}
		if w.Code != 400 && w.Code != 500 && w.Code != 503 {
			t.Fatalf("status %d for %q", w.Code, body)
		}
	})
}
