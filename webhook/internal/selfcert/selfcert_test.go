package selfcert

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

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// pair makes a self-signed serving pair for cn.
func pair(t *testing.T, cn string) (crt, key []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func served(t *testing.T, m *Mirror) string {
	t.Helper()
	c, err := m.GetCertificate(nil)
	if err != nil {
		return ""
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.Subject.CommonName
}

// TestMirrorUpdate: nothing is served before the rotator filled the Secret;
// a pair is then written (key 0600, certificate and CA 0644) and served from
// memory; a renewal replaces both; a broken pair keeps the last good one.
func TestMirrorUpdate(t *testing.T) {
	dir := t.TempDir()
	m := NewMirror(dir, logr.Discard())
	if err := m.Update(map[string][]byte{}); err != nil || served(t, m) != "" {
		t.Fatalf("empty Secret: %v, serving %q", err, served(t, m))
	}
	crt, key := pair(t, "first.kube-sts.svc")
	if err := m.Update(map[string][]byte{"tls.crt": crt, "tls.key": key, "ca.crt": crt}); err != nil {
		t.Fatal(err)
	}
	if got := served(t, m); got != "first.kube-sts.svc" {
		t.Fatalf("serving %q", got)
	}
	for name, mode := range map[string]os.FileMode{"tls.key": 0o600, "tls.crt": 0o644, "ca.crt": 0o644} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != mode {
			t.Fatalf("%s: %v mode %v, want %v", name, err, st.Mode().Perm(), mode)
		}
	}
	crt2, key2 := pair(t, "renewed.kube-sts.svc")
	if err := m.Update(map[string][]byte{"tls.crt": crt2, "tls.key": key2}); err != nil {
		t.Fatal(err)
	}
	if got := served(t, m); got != "renewed.kube-sts.svc" {
		t.Fatalf("after renewal serving %q", got)
	}
	if onDisk, _ := os.ReadFile(filepath.Join(dir, "tls.crt")); string(onDisk) != string(crt2) {
		t.Fatal("the renewed certificate is not on disk")
	}
	if err := m.Update(map[string][]byte{"tls.crt": crt, "tls.key": key2}); err == nil {
		t.Fatal("a mismatched pair was accepted")
	}
	if got := served(t, m); got != "renewed.kube-sts.svc" {
		t.Fatalf("a broken pair replaced the good one: serving %q", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 3 {
		t.Fatalf("leftover files: %v", entries)
	}
}

// TestWatch: versions of the one Secret reach the mirror through an
// informer; other Secrets do not.
func TestWatch(t *testing.T) {
	crt, key := pair(t, "watched.kube-sts.svc")
	other, otherKey := pair(t, "other")
	cs := k8sfake.NewClientset(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-sts", Name: "tls"}, Data: map[string][]byte{"tls.crt": crt, "tls.key": key}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-sts", Name: "unrelated"}, Data: map[string][]byte{"tls.crt": other, "tls.key": otherKey}},
	)
	factory := informers.NewSharedInformerFactory(cs, 0)
	inf := factory.Core().V1().Secrets().Informer()
	m := NewMirror(t.TempDir(), logr.Discard())
	if err := m.Watch(inf, "kube-sts", "tls"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	factory.Start(ctx.Done())
	deadline := time.Now().Add(10 * time.Second)
	for served(t, m) != "watched.kube-sts.svc" {
		if time.Now().After(deadline) {
			t.Fatalf("serving %q", served(t, m))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// noCreate fails the test on any write: a Secret that exists is only read.
type noCreate struct {
	client.Writer
	t *testing.T
}

func (n noCreate) Create(context.Context, client.Object, ...client.CreateOption) error {
	n.t.Fatal("EnsureSecret created a Secret that exists")
	return nil
}

// TestEnsureSecret: created once, with our labels; an existing one is only
// read (the webhook may have no right to create Secrets).
func TestEnsureSecret(t *testing.T) {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	c := fake.NewClientBuilder().WithScheme(s).Build()
	if err := EnsureSecret(context.Background(), c, c, "kube-sts", "tls"); err != nil {
		t.Fatal(err)
	}
	if err := EnsureSecret(context.Background(), c, noCreate{t: t}, "kube-sts", "tls"); err != nil {
		t.Fatal(err)
	}
	var sec corev1.Secret
	if err := c.Get(context.Background(), types.NamespacedName{Namespace: "kube-sts", Name: "tls"}, &sec); err != nil {
		t.Fatal(err)
	}
	if sec.Labels["app.kubernetes.io/managed-by"] != "sts-webhook" {
		t.Fatalf("labels %v", sec.Labels)
	}
}

// TestDir: a writable --cert-dir is used; an unwritable one falls back to a
// private temporary folder that cleanup removes.
func TestDir(t *testing.T) {
	want := filepath.Join(t.TempDir(), "certs")
	got, cleanup, err := Dir(want)
	if err != nil || got != want {
		t.Fatalf("Dir = %q, %v", got, err)
	}
	cleanup()
	if _, err := os.Stat(want); err != nil {
		t.Fatalf("cleanup removed the configured folder: %v", err)
	}
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got, cleanup, err = Dir(filepath.Join(file, "below-a-file"))
	if err != nil || got == "" {
		t.Fatalf("fallback: %q, %v", got, err)
	}
	cleanup()
	if _, err := os.Stat(got); !os.IsNotExist(err) {
		t.Fatalf("the temporary folder survived cleanup: %v", err)
	}
}
