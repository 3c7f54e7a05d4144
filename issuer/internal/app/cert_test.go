package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

// writePair writes a key and a certificate for cn into dir, each renamed
// into place, as a Secret volume update does.
func writePair(t *testing.T, dir, cn string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	for _, f := range []struct {
		name  string
		block *pem.Block
	}{{"tls.key", &pem.Block{Type: "PRIVATE KEY", Bytes: kder}}, {"tls.crt", &pem.Block{Type: "CERTIFICATE", Bytes: der}}} {
		tmp := filepath.Join(dir, f.name+".tmp")
		if err := os.WriteFile(tmp, pem.EncodeToMemory(f.block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, f.name)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestServingCertificateRenewed: a renewed pair is served without a
// restart, a broken write keeps the current pair, and a missing pair stops
// the start.
func TestServingCertificateRenewed(t *testing.T) {
	dir := t.TempDir()
	writePair(t, dir, "first")
	ctx, cancel := context.WithCancel(context.Background())
	var g errgroup.Group
	defer func() {
		cancel()
		if err := g.Wait(); err != nil {
			t.Error(err)
		}
	}()
	get, err := servingCertificate(ctx, &g, filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	cn := func() string {
		c, err := get(nil)
		if err != nil || c == nil {
			t.Fatalf("GetCertificate: %v", err)
		}
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf.Subject.CommonName
	}
	waitCN := func(want string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for cn() != want {
			if time.Now().After(deadline) {
				t.Fatalf("serving %q, want %q", cn(), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitCN("first")
	time.Sleep(50 * time.Millisecond) // the watches are in place
	writePair(t, dir, "renewed")
	waitCN("renewed")
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if got := cn(); got != "renewed" {
		t.Fatalf("after a broken write: serving %q", got)
	}
	var g2 errgroup.Group
	if _, err := servingCertificate(ctx, &g2, filepath.Join(dir, "missing.crt"), filepath.Join(dir, "tls.key")); err == nil {
		t.Fatal("a missing certificate was accepted at start")
	}
}
