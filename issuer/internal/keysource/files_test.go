package keysource

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/kube-sts/kube-sts/issuer/internal/keys"
)

func writeKey(t *testing.T, path string, pemType string, der []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestFileSourceReload(t *testing.T) {
	dir := t.TempDir()
	cur, prev := filepath.Join(dir, "current.key"), filepath.Join(dir, "previous.key")
	k1, _ := rsa.GenerateKey(rand.Reader, 2048)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	writeKey(t, cur, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k1))
	der2, _ := x509.MarshalECPrivateKey(k2)
	writeKey(t, prev, "EC PRIVATE KEY", der2)

	var sets []*keys.Set
	src := NewFileSource([]string{cur, prev}, cur, keys.RS256, time.Second, keys.FilePolicy{}, zap.NewNop(), func(s *keys.Set) { sets = append(sets, s) })
	if err := src.Load(); err != nil {
		t.Fatal(err)
	}
	if len(sets) != 1 || len(sets[0].Keys) != 2 || sets[0].Signing.Algorithm != keys.RS256 {
		t.Fatalf("first load: %+v", sets)
	}
	first := sets[0].Signing.ID

	// Unchanged files: no new set.
	if err := src.Load(); err != nil || len(sets) != 1 {
		t.Fatalf("reload of unchanged files made a new set (%v)", err)
	}
	// A broken file: the error is reported and the old set stays.
	if err := os.WriteFile(cur, []byte("-----BEGIN RSA PRIVATE KEY-----\nnope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := src.Load(); err == nil || len(sets) != 1 {
		t.Fatalf("broken file: err %v, sets %d", err, len(sets))
	}
	// A renewed key: a new set signing with it, the other still published.
	k3, _ := rsa.GenerateKey(rand.Reader, 2048)
	der3, _ := x509.MarshalPKCS8PrivateKey(k3)
	writeKey(t, cur, "PRIVATE KEY", der3)
	if err := src.Load(); err != nil {
		t.Fatal(err)
	}
	if len(sets) != 2 || sets[1].Signing.ID == first || len(sets[1].Keys) != 2 {
		t.Fatalf("after renewal: %d sets", len(sets))
	}
	// The signing file must hold the endpoint's algorithm.
	bad := NewFileSource([]string{prev}, prev, keys.RS256, time.Second, keys.FilePolicy{}, zap.NewNop(), func(*keys.Set) {})
	if err := bad.Load(); err == nil || !strings.Contains(err.Error(), "holds a ES256 key, but the endpoint signs RS256") {
		t.Fatalf("mismatched algorithm: %v", err)
	}
}

// TestFileSourceStartsDuringRotation: the signing file's modification time
// tells a starting replica that its key is still being published ahead.
func TestFileSourceStartsDuringRotation(t *testing.T) {
	dir := t.TempDir()
	cur, prev := filepath.Join(dir, "current.key"), filepath.Join(dir, "previous.key")
	for _, f := range []string{cur, prev} {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.MarshalECPrivateKey(k)
		writeKey(t, f, "EC PRIVATE KEY", der)
	}
	policy := keys.FilePolicy{PublishAhead: 10 * time.Minute, RetireAfter: time.Hour}
	signer := func(changedAgo time.Duration) string {
		t.Helper()
		mt := time.Now().Add(-changedAgo)
		if err := os.Chtimes(cur, mt, mt); err != nil {
			t.Fatal(err)
		}
		var set *keys.Set
		src := NewFileSource([]string{cur, prev}, cur, keys.ES256, time.Second, policy, zap.NewNop(), func(s *keys.Set) { set = s })
		if err := src.Load(); err != nil || set == nil {
			t.Fatalf("load: %v", err)
		}
		for i, k := range set.Keys {
			if k.ID == set.Signing.ID {
				return []string{"current", "previous"}[i]
			}
		}
		return ""
	}
	if got := signer(time.Minute); got != "previous" {
		t.Errorf("signing file changed a minute ago: %s signs, want previous until the new key's turn", got)
	}
	if got := signer(time.Hour); got != "current" {
		t.Errorf("signing file changed an hour ago: %s signs, want current", got)
	}
}
