package exchange

import (
	"maps"
	"net/url"
	"reflect"
	"slices"
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
	f.Add([]byte(Request{SubjectToken: tok, SubjectTokenType: TokenTypeJWT, Lifetime: 600e9}.Encode()))
	f.Add([]byte(strings.Repeat(".", 1000)))
	f.Fuzz(func(t *testing.T, body []byte) {
		// The form reads as url.ParseQuery reads it.
		if len(body) <= MaxRequestBytes {
			got, ok := parseForm(string(body))
			want, wantOK := referenceForm(string(body))
			if ok != wantOK || !reflect.DeepEqual(got, want) {
				t.Fatalf("parseForm(%q) = %+v, %v; url.ParseQuery: %+v, %v", body, got, ok, want, wantOK)
			}
		}
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

// referenceForm reads body with url.ParseQuery (what ParseRequest did
// before parseForm) into params: the fuzz test holds the two equal.
func referenceForm(body string) (params, bool) {
	q, err := url.ParseQuery(body)
	if err != nil {
		return params{}, false
	}
	var f params
	for _, name := range slices.Sorted(maps.Keys(q)) {
		values := slices.DeleteFunc(q[name], func(v string) bool { return v == "" })
		if len(values) == 0 {
			continue
		}
		switch name {
		case ParamAudience:
			f.audiences = values
		case ParamResource:
			f.resources = values
		case ParamActorToken, ParamActorTokenType:
			if f.actor != ParamActorToken {
				f.actor = name
			}
		default:
			if n := slices.Index(singleParams[:], name); n >= 0 {
				f.count[n], f.value[n] = len(values), values[0]
			}
		}
	}
	return f, true
}
