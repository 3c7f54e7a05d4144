// Package nginx runs Debian's nginx on loopback over TLS as a static web
// host: the kind of server relying parties that cannot reach the issuer
// read published discovery documents from.
package nginx

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kube-sts/kube-sts/e2e/internal/procs"
	"github.com/kube-sts/kube-sts/e2e/internal/testca"
)

// Server is a running nginx.
type Server struct {
	*procs.Proc
	// Base is https://127.0.0.1:<port>.
	Base string
}

// Ensure installs nginx from Debian's packages when it is missing (root only).
func Ensure() error {
	if _, err := exec.LookPath("nginx"); err == nil {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("nginx is missing and this is not root: install it with apt-get install nginx")
	}
	for _, args := range [][]string{{"update", "-qq"}, {"install", "-y", "-qq", "--no-install-recommends", "nginx"}} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// Config is the server block docs/relying-parties.md's "Publishing discovery" section shows:
// files without an extension are JSON, and Cache-Control is set here because
// a directory cannot carry it.
func Config(port int, certFile, keyFile, root, cacheControl string) string {
	return fmt.Sprintf(`server {
    listen 127.0.0.1:%d ssl;
    ssl_certificate     %s;
    ssl_certificate_key %s;
    root %s;
    location / {
        default_type application/json;
        add_header Cache-Control "%s" always;
    }
}
`, port, certFile, keyFile, root, cacheControl)
}

// Start serves root on a free loopback port with a certificate of ca, every
// response carrying cacheControl. It stops at test cleanup.
func Start(t testing.TB, ca *testca.CA, root, cacheControl string) *Server {
	t.Helper()
	if err := Ensure(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile, err := ca.Serving(dir)
	if err != nil {
		t.Fatal(err)
	}
	port := procs.FreePort(t)
	// The workers run as root: the test's directories are root's and 0700.
	conf := fmt.Sprintf(`user root;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 64; }
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
%[2]s}
`, dir, Config(port, certFile, keyFile, root, cacheControl))
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := procs.Start(t, "nginx", dir, "nginx", "-c", confFile, "-p", dir, "-g", "daemon off;")
	s := &Server{Proc: p, Base: fmt.Sprintf("https://127.0.0.1:%d", port)}
	// Any answer means it is listening; the root may still be empty (404).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := procs.TLSClient(ca.Pool())
	for {
		resp, err := client.Get(s.Base + "/")
		if err == nil {
			resp.Body.Close()
			return s
		}
		if ctx.Err() != nil {
			t.Fatalf("nginx did not answer on %s: %v\n%s", s.Base, err, p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
