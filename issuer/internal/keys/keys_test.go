package keys

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

func TestGenerateSignVerify(t *testing.T) {
	for _, alg := range []string{RS256, ES256, EdDSA} {
		t.Run(alg, func(t *testing.T) {
			k, err := Generate(alg, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			jws, err := k.Sign([]byte(`{"sub":"x"}`))
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := jose.ParseSignedCompact(jws, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
			if err != nil {
				t.Fatal(err)
			}
			if h := parsed.Signatures[0].Header; h.KeyID != k.ID || h.ExtraHeaders["typ"] != "JWT" || h.Algorithm != alg {
				t.Fatalf("header %+v", h)
			}
			pub := k.Public()
			if _, err := parsed.Verify(&pub); err != nil {
				t.Fatalf("verify: %v", err)
			}
			// The kid is the thumbprint, so the PEM round trip keeps it.
			pemBytes, err := k.MarshalPEM()
			if err != nil {
				t.Fatal(err)
			}
			priv, err := ParsePEM(pemBytes)
			if err != nil {
				t.Fatal(err)
			}
			again, err := New(priv, alg, time.Now())
			if err != nil || again.ID != k.ID {
				t.Fatalf("kid after round trip %q, want %q (%v)", again.ID, k.ID, err)
			}
		})
	}
}

// TestSignCompactForm pins what Sign writes besides what go-jose checks
// above: exactly three parts, a header with alg, kid and typ and nothing
// else, the payload's bytes unchanged, and a signature of the size RFC 7518
// gives (ES256: R||S, 64 bytes, not ASN.1), for a 4096-bit RSA key too.
func TestSignCompactForm(t *testing.T) {
	priv4096, err := rsa.GenerateKey(rand.Reader, 4096)
	if err != nil {
		t.Fatal(err)
	}
	rsa4096, err := New(priv4096, RS256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte(`{"sub":"c:ns:sa","exp":1768237089,"x":"\u003c/>"}`)
	for name, want := range map[string]int{RS256: 256, ES256: 64, EdDSA: 64, "RS256-4096": 512} {
		t.Run(name, func(t *testing.T) {
			k := rsa4096
			if name != "RS256-4096" {
				if k, err = Generate(name, time.Now()); err != nil {
					t.Fatal(err)
				}
			}
			jws, err := k.Sign(payload)
			if err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(jws, ".")
			if len(parts) != 3 {
				t.Fatalf("%d parts", len(parts))
			}
			dec := func(s string) []byte {
				b, err := base64.RawURLEncoding.DecodeString(s)
				if err != nil {
					t.Fatalf("part %q: %v", s, err)
				}
				return b
			}
			if got, want := string(dec(parts[0])), `{"alg":"`+k.Algorithm+`","kid":"`+k.ID+`","typ":"JWT"}`; got != want {
				t.Errorf("header %s, want %s", got, want)
			}
			if got := dec(parts[1]); !bytes.Equal(got, payload) {
				t.Errorf("payload %s, want %s", got, payload)
			}
			if got := len(dec(parts[2])); got != want {
				t.Errorf("signature of %d bytes, want %d", got, want)
			}
			parsed, err := jose.ParseSignedCompact(jws, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(k.Algorithm)})
			if err != nil {
				t.Fatal(err)
			}
			pub := k.Public()
			if _, err := parsed.Verify(&pub); err != nil {
				t.Fatalf("verify: %v", err)
			}
		})
	}
}

func TestKeyTypeMustFit(t *testing.T) {
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for name, tc := range map[string]struct {
		err error
	}{
		"1024-bit RSA": {err: func() error { _, err := New(small, RS256, time.Now()); return err }()},
		"P-384":        {err: func() error { _, err := New(p384, ES256, time.Now()); return err }()},
		"EC for RS256": {err: func() error { _, err := New(ec, RS256, time.Now()); return err }()},
	} {
		if tc.err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestPlanThroughTime walks a managed key set through several rotations and
// checks the promises at every step: the JWKS is never empty, a key is
// published for PublishAhead before it signs, and a superseded key stays
// published until every token it signed has expired.
func TestPlanThroughTime(t *testing.T) {
	s := Schedule{Algorithm: ES256, RotateEvery: 10 * time.Hour, PublishAhead: time.Hour, RetireAfter: 20 * time.Minute}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	gen := func(now time.Time) func(time.Time) (Record, error) {
		return func(activeAt time.Time) (Record, error) { return NewRecord(ES256, now, activeAt) }
	}
	var recs []Record
	firstSeen := map[string]time.Time{}
	lastSigned := map[string]time.Time{}
	var prevSigning string
	creations := 0
	for now := t0; now.Before(t0.Add(50 * time.Hour)); now = now.Add(5 * time.Minute) {
		next, changed, err := Plan(recs, now, s, gen(now))
		if err != nil {
			t.Fatal(err)
		}
		if changed {
			for _, r := range next {
				if _, ok := firstSeen[r.ID]; !ok {
					firstSeen[r.ID] = now
					creations++
				}
			}
		}
		recs = next
		set, err := SetOf(recs, now)
		if err != nil {
			t.Fatalf("%v: %v", now.Sub(t0), err)
		}
		if len(set.Keys) == 0 {
			t.Fatal("empty key set")
		}
		sid := set.Signing.ID
		lastSigned[sid] = now
		if sid != prevSigning && prevSigning != "" {
			if published := now.Sub(firstSeen[sid]); published < s.PublishAhead {
				t.Fatalf("%v: key %s signs after being published for only %v", now.Sub(t0), sid[:8], published)
			}
		}
		prevSigning = sid
		// Every key that signed within RetireAfter must still be published.
		for id, last := range lastSigned {
			if now.Sub(last) < s.RetireAfter && !has(set, id) {
				t.Fatalf("%v: key %s was retired %v after it last signed", now.Sub(t0), id[:8], now.Sub(last))
			}
		}
		if len(set.Keys) > 3 {
			t.Fatalf("%v: %d keys published; old keys are not retired", now.Sub(t0), len(set.Keys))
		}
	}
	if creations < 5 {
		t.Fatalf("only %d keys in 50h with a 10h rotation", creations)
	}
}

func has(s *Set, id string) bool {
	for _, k := range s.Keys {
		if k.ID == id {
			return true
		}
	}
	return false
}

func TestPlanAlgorithmChange(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r, err := NewRecord(RS256, t0, t0)
	if err != nil {
		t.Fatal(err)
	}
	s := Schedule{Algorithm: ES256, RotateEvery: 10 * time.Hour, PublishAhead: time.Hour, RetireAfter: 20 * time.Minute}
	next, changed, err := Plan([]Record{r}, t0.Add(time.Minute), s, func(at time.Time) (Record, error) { return NewRecord(ES256, t0, at) })
	if err != nil || !changed || len(next) != 2 || next[1].Algorithm != ES256 || !next[1].ActiveAt.Equal(t0.Add(time.Minute+time.Hour)) {
		t.Fatalf("algorithm change: %v %v %+v", err, changed, next)
	}
}
