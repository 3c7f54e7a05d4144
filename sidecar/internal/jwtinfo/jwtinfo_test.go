package jwtinfo

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

func jwt(payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","kid":"k1"}`)) + "." + enc([]byte(payload)) + ".c2ln"
}

func TestParse(t *testing.T) {
	tests := map[string]struct {
		token  string
		want   Claims
		wantIn string
	}{
		"reference claims": {
			token: jwt(`{"iss":"https://vault-sts.example","exp":1768237089,"nbf":1768236129,"iat":1768236189,"jti":"ZAnw_QfexOtJPQ_v1ZNoSA"}`),
			want:  Claims{ID: "ZAnw_QfexOtJPQ_v1ZNoSA", Expiry: time.Unix(1768237089, 0), NotBefore: time.Unix(1768236129, 0), IssuedAt: time.Unix(1768236189, 0)},
		},
		"exp only":        {token: jwt(`{"exp":100}`), want: Claims{Expiry: time.Unix(100, 0)}},
		"fractional exp":  {token: jwt(`{"exp":100.5}`), want: Claims{Expiry: time.Unix(100, 5e8)}},
		"no exp":          {token: jwt(`{"iat":100}`), wantIn: "no exp"},
		"string exp":      {token: jwt(`{"exp":"100"}`), wantIn: "not a valid time"},
		"negative exp":    {token: jwt(`{"exp":-1}`), wantIn: "not a valid time"},
		"huge exp":        {token: jwt(`{"exp":1e300}`), wantIn: "not a valid time"},
		"array payload":   {token: jwt(`[1,2]`), wantIn: "not a JSON object"},
		"null exp":        {token: jwt(`{"exp":null}`), wantIn: "not a valid time"},
		"two segments":    {token: "a.b", wantIn: "2 segments"},
		"four segments":   {token: "a.b.c.d", wantIn: "4 segments"},
		"only dots":       {token: strings.Repeat(".", 100000), wantIn: "longer than"},
		"empty":           {token: "", wantIn: "1 segments"},
		"no signature":    {token: strings.TrimSuffix(jwt(`{"exp":1}`), "c2ln"), wantIn: "no signature"},
		"empty header":    {token: ".e30.c2ln", wantIn: "segment 1 is empty"},
		"bad base64":      {token: "e30.!!!.c2ln", wantIn: "not base64url"},
		"padded base64":   {token: "e30.e30=.c2ln", wantIn: "not base64url"},
		"html error page": {token: "<html>502</html>", wantIn: "1 segments"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := Parse(tc.token)
			if tc.wantIn != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantIn) {
					t.Fatalf("Parse = %+v, %v; want error containing %q", got, err, tc.wantIn)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got.ID != tc.want.ID || !got.Expiry.Equal(tc.want.Expiry) || !got.IssuedAt.Equal(tc.want.IssuedAt) || !got.NotBefore.Equal(tc.want.NotBefore) {
				t.Fatalf("Parse = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add(jwt(`{"exp":100,"iat":50,"jti":"x"}`))
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(s)
		if err == nil && c.Expiry.IsZero() {
			t.Fatalf("accepted %q without an expiry", s)
		}
	})
}
