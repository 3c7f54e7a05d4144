// Command floorsidecar is the floor of the sidecar's resource benchmark
// (hack/bench-sidecar.sh): the least a Go program doing the sidecar's job
// costs. It reads the subject token, POSTs the token-exchange form with
// net/http's default client, decodes the JSON answer, writes the token
// atomically (a temporary file renamed over the old), sleeps until the
// refresh point and starts again; it collects at GOGC=25 as the sidecar
// does. It has no logging, metrics, backoff, file watch, probe, flags or
// status file: what it costs is the Go runtime, net/http (which links
// crypto/tls whether or not a request uses it) and encoding/json, which
// any Go sidecar pays. The sidecar's own environment names configure it.
package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/kube-sts/kube-sts/shared/exchange"
)

func main() {
	debug.SetGCPercent(25)
	url, subject, out := os.Getenv("STS_EXCHANGE_URL"), os.Getenv("STS_SUBJECT_TOKEN_FILE"), os.Getenv("STS_OUTPUT_FILE")
	for {
		wait, err := once(url, subject, out)
		if err != nil {
			fmt.Fprintln(os.Stderr, "floorsidecar:", err)
			wait = 5 * time.Second
		}
		time.Sleep(wait)
	}
}

// once exchanges and writes one token, and says how long until the next.
func once(url, subject, out string) (time.Duration, error) {
	sa, err := os.ReadFile(subject)
	if err != nil {
		return 0, err
	}
	resp, err := http.Post(url, "application/x-www-form-urlencoded", strings.NewReader(exchange.NewRequest(strings.TrimSpace(string(sa))).Encode()))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r exchange.Response
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d: %v", resp.StatusCode, err)
	}
	tmp := filepath.Join(filepath.Dir(out), ".floor.tmp")
	if err := os.WriteFile(tmp, []byte(r.AccessToken), 0o644); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp, out); err != nil {
		return 0, err
	}
	life := time.Duration(r.ExpiresIn) * time.Second
	return life - min(time.Minute, life/2), nil
}
