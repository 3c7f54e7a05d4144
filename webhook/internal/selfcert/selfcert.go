// Package selfcert keeps sts-webhook's self-managed serving certificate,
// which cert-controller's rotator makes and renews in a Secret: the Secret is
// created when missing (the rotator only updates one), and each version the
// manager's cache delivers is mirrored into memory, where the webhook server
// reads it through GetCertificate, and into a folder: tls.crt and tls.key for
// the rotator's own readiness check, ca.crt for injectors whose caFile points
// there. No replica polls the API server for it.
package selfcert

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// EnsureSecret creates the Secret namespace/name when it is missing. It
// reads it by name first: where the Secret is shipped with the install, the
// webhook needs no right to create Secrets.
func EnsureSecret(ctx context.Context, c client.Reader, w client.Writer, namespace, name string) error {
	err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &corev1.Secret{})
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("read TLS secret %s/%s: %w", namespace, name, err)
	}
	err = w.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{
		"app.kubernetes.io/managed-by": "sts-webhook",
		"app.kubernetes.io/part-of":    "kube-sts",
	}}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create TLS secret %s/%s: %w", namespace, name, err)
	}
	return nil
}

// Mirror holds the current serving pair and writes it to a folder.
type Mirror struct {
	dir  string
	log  logr.Logger
	cert atomic.Pointer[tls.Certificate]

	mu   sync.Mutex
	last []byte
}

// NewMirror mirrors into dir.
func NewMirror(dir string, log logr.Logger) *Mirror { return &Mirror{dir: dir, log: log} }

// GetCertificate serves the current pair; before the first one it fails the
// handshake (and readiness says the certificate is not ready).
func (m *Mirror) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := m.cert.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("the self-managed serving certificate is not ready yet")
}

// Update takes a version of the Secret's data: when it holds a new, valid
// pair, the files are written (key first, each renamed into place) and the
// pair is served from memory. An incomplete Secret (the rotator has not
// filled it yet) is not an error.
func (m *Mirror) Update(data map[string][]byte) error {
	crt, key := data[corev1.TLSCertKey], data[corev1.TLSPrivateKeyKey]
	if len(crt) == 0 || len(key) == 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if bytes.Equal(crt, m.last) {
		return nil
	}
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		return fmt.Errorf("the TLS secret holds no usable pair: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{corev1.TLSPrivateKeyKey, key, 0o600}, {corev1.TLSCertKey, crt, 0o644}, {"ca.crt", data["ca.crt"], 0o644}} {
		if len(f.data) == 0 {
			continue
		}
		if err := writeAtomic(filepath.Join(m.dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	m.cert.Store(&pair)
	m.last = crt
	m.log.Info("serving certificate updated", "dir", m.dir)
	return nil
}

// Informer is what Watch needs of an informer: controller-runtime's cache
// informers and client-go's shared informers both are one.
type Informer interface {
	AddEventHandler(handler toolscache.ResourceEventHandler) (toolscache.ResourceEventHandlerRegistration, error)
}

// Watch feeds Update with every version of namespace/name that informer
// (the manager's cache) delivers.
func (m *Mirror) Watch(informer Informer, namespace, name string) error {
	take := func(obj any) {
		sec, ok := obj.(*corev1.Secret)
		if !ok || sec.Namespace != namespace || sec.Name != name {
			return
		}
		if err := m.Update(sec.Data); err != nil {
			m.log.Error(err, "mirroring the TLS secret failed")
		}
	}
	_, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    take,
		UpdateFunc: func(_, obj any) { take(obj) },
	})
	return err
}

// Dir returns dir when it is (or can be made) a writable folder, else a new
// temporary folder that cleanup removes.
func Dir(dir string) (string, func(), error) {
	if err := os.MkdirAll(dir, 0o700); err == nil {
		if f, err := os.CreateTemp(dir, ".probe-"); err == nil {
			f.Close()
			_ = os.Remove(f.Name())
			return dir, func() {}, nil
		}
	}
	tmp, err := os.MkdirTemp("", "sts-webhook-certs-")
	if err != nil {
		return "", nil, fmt.Errorf("no writable folder for the self-managed certificate (--cert-dir %s): %w", dir, err)
	}
	return tmp, func() { _ = os.RemoveAll(tmp) }, nil
}

// writeAtomic writes data beside path and renames it into place, so a
// reader never sees half a file.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
