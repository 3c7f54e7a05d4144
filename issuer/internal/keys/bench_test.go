package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"testing"
	"time"
)

// BenchmarkSign compares Sign (a compact JWS: header, base64, signature)
// with its floor, the bare signature over an input of the same size: what
// Sign adds to the cryptography is its cost to us.
func BenchmarkSign(b *testing.B) {
	payload := []byte(`{"iss":"https://sts.kube-sts.test/vault","aud":"https://vault.kube-sts.test/","exp":1768237089,"nbf":1768236129,"iat":1768236189,"jti":"ZAnw_QfexOtJPQ_v1ZNoSA","sub":"openunison-cp:test-vault:for-vault","cluster":"openunison-cp","namespace":"test-vault","saname":"for-vault"}`)
	for _, alg := range []string{RS256, ES256, EdDSA} {
		k, err := Generate(alg, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		input := make([]byte, len(k.header)+1+base64.RawURLEncoding.EncodedLen(len(payload)))
		b.Run(alg+"/jws", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := k.Sign(payload); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(alg+"/primitive", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var err error
				switch priv := k.private.(type) {
				case ed25519.PrivateKey:
					_ = ed25519.Sign(priv, input)
				case *rsa.PrivateKey:
					h := sha256.Sum256(input)
					_, err = rsa.SignPKCS1v15(nil, priv, crypto.SHA256, h[:])
				case *ecdsa.PrivateKey:
					h := sha256.Sum256(input)
					_, err = ecdsa.SignASN1(rand.Reader, priv, h[:])
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
