package events

import (
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
)

// TestRefusedThenIssuedOnce: a refusal is a Warning naming the endpoint and
// the error with the token redacted; the next token is one Normal
// TokenIssued, and further tokens none; a Pod never refused gets none.
func TestRefusedThenIssuedOnce(t *testing.T) {
	fake := record.NewFakeRecorder(10)
	r := NewWith(fake)
	p := Pod{Namespace: "ns", Name: "web-0", UID: "u-1"}
	r.Issued(p, "vault") // never refused: nothing
	r.Refused(p, "vault", "invalid_request", "ServiceAccount ns/sa may not use endpoint vault; token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl")
	r.Issued(p, "vault")
	r.Issued(p, "vault")
	r.Refused(Pod{Namespace: "ns"}, "vault", "invalid_request", "no Pod known") // no Pod: nothing
	close(fake.Events)
	var got []string
	for e := range fake.Events {
		got = append(got, e)
	}
	if len(got) != 2 {
		t.Fatalf("events %q, want a refusal and one issuance", got)
	}
	if want := "Warning TokenRefused endpoint vault refused the token exchange: invalid_request: ServiceAccount ns/sa may not use endpoint vault; token "; !strings.HasPrefix(got[0], want) || strings.Contains(got[0], "eyJ") {
		t.Errorf("refusal %q, want it to start with %q and hold no token", got[0], want)
	}
	if got[1] != "Normal TokenIssued endpoint vault issued a token after refusing earlier exchanges" {
		t.Errorf("issuance %q", got[1])
	}
}

// TestRememberedBounded: the Pods remembered for TokenIssued are bounded.
func TestRememberedBounded(t *testing.T) {
	r := NewWith(&record.FakeRecorder{}) // no channel: events are dropped
	for i := range maxRemembered + 100 {
		r.Refused(Pod{Namespace: "ns", Name: "p", UID: types.UID(strconv.Itoa(i))}, "vault", "invalid_request", "")
	}
	if n := len(r.refused); n > maxRemembered {
		t.Fatalf("%d Pods remembered, want at most %d", n, maxRemembered)
	}
}
