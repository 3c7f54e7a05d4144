package certs

import (
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
)

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
	// Key first, then certificate, each renamed into place, as a Secret volume update does.
	for name, block := range map[string]*pem.Block{"tls.key": {Type: "PRIVATE KEY", Bytes: kder}, "tls.crt": {Type: "CERTIFICATE", Bytes: der}} {
		tmp := filepath.Join(dir, name+".tmp")
		if err := os.WriteFile(tmp, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func cn(t *testing.T, r *Reloader) string {
	t.Helper()
	c, err := r.GetCertificate(nil)
	if err != nil || c == nil {
		t.Fatalf("GetCertificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.Subject.CommonName
}

func TestReloader(t *testing.T) {
	dir := t.TempDir()
	writePair(t, dir, "first")
	var errs []error
	r, err := NewReloader(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), 0, func(err error) { errs = append(errs, err) })
	if err != nil {
		t.Fatal(err)
	}
	if got := cn(t, r); got != "first" {
		t.Fatalf("CN %q", got)
	}
	time.Sleep(10 * time.Millisecond) // a distinct mtime
	writePair(t, dir, "renewed")
	if got := cn(t, r); got != "renewed" {
		t.Fatalf("after renewal CN %q, want renewed", got)
	}
	// A broken certificate keeps the previous one serving.
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := cn(t, r); got != "renewed" || len(errs) == 0 {
		t.Fatalf("after a broken write CN %q, errors %v", got, errs)
	}
	if _, err := NewReloader(filepath.Join(dir, "missing.crt"), filepath.Join(dir, "tls.key"), time.Second, nil); err == nil {
		t.Fatal("a missing certificate was accepted at start")
	}
}
