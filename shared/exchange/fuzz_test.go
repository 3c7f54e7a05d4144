package exchange

import (
	"reflect"
	"strings"
	"testing"
)

// FuzzParseRequest checks that the network-facing parser never panics, that
// whatever it accepts is within the limits, and that accepted requests survive
// an encode/parse round trip unchanged.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(NewRequest(tok).Encode()))
	f.Add([]byte("grant_type=" + GrantTypeTokenExchange + "&subject_token=a&subject_token=b"))
	f.Add([]byte("%zz"))
	f.Add([]byte(strings.Repeat(".", 1000)))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseRequest(body)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error is %T, want *Error", err)
			}
			return
		}
		if r.SubjectToken == "" || len(r.SubjectToken) > MaxSubjectTokenBytes || r.SubjectTokenType != TokenTypeJWT {
			t.Fatalf("accepted a request outside the rules: %+v", r)
		}
		again, err := ParseRequest([]byte(r.Encode()))
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, r)
		}
	})
}
