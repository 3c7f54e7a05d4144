package admit

import (
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"
)

// caFiles reads the injectors' caFile bundles and re-reads one only when its
// size or modification time changes (cert-manager and --tls-mode=self rewrite
// them on renewal), so admissions do not hit the disk for the whole file.
type caFiles struct {
	mu    sync.Mutex
	files map[string]caEntry
}

type caEntry struct {
	size  int64
	mtime time.Time
	pem   string
}

// read returns the PEM bundle in path, or an error naming the file when it is
// missing, empty or holds no certificate: a sidecar without its CA could not
// reach the issuer, so the Pod is better refused with a reason.
func (c *caFiles) read(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("the issuer's CA bundle (caFile %s) is not readable yet: %w", path, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.files[path]; ok && e.size == st.Size() && e.mtime.Equal(st.ModTime()) {
		return e.pem, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("the issuer's CA bundle (caFile %s): %w", path, err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		return "", fmt.Errorf("the issuer's CA bundle (caFile %s) holds no PEM certificate", path)
	}
	if c.files == nil {
		c.files = map[string]caEntry{}
	}
	c.files[path] = caEntry{size: st.Size(), mtime: st.ModTime(), pem: string(data)}
	return string(data), nil
}
