package issuer

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/kube-sts/kube-sts/e2e/internal/kube"
	"github.com/kube-sts/kube-sts/e2e/internal/scrape"
	"github.com/kube-sts/kube-sts/e2e/internal/stsissuer"
	"github.com/kube-sts/kube-sts/shared/exchange"
)

// Stalled requests against the real sts-issuer: a client sends the headers
// of a token POST and most of its body, then nothing, over HTTP/1.1 (one
// request per connection) and HTTP/2 (many streams per connection), as the
// outside audit did (3,000 such requests took the issuer from 33 to 510 MiB
// RSS). The issuer must bound what it holds before it reads a body, and the
// Pods that are not attacking must keep getting their tokens.

const (
	// stallBound is what the attack may add to the issuer's resident memory.
	stallBound = 64 << 20
	// stallDeclared and stallSent: a body the issuer accepts by its
	// declared size (under exchange.MaxRequestBytes), sent all but 1,000 bytes.
	stallDeclared = 16000
	stallSent     = 15000
)

// attack is one stalling client's tally: requests attempted, HTTP/2
// streams still unanswered, and the connections to close at the end.
type attack struct {
	attempted, held atomic.Int64
	close           []func()
	mu              sync.Mutex
}

func (a *attack) keep(f func()) {
	a.mu.Lock()
	a.close = append(a.close, f)
	a.mu.Unlock()
}

func (a *attack) stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, f := range a.close {
		f()
	}
	a.close = nil
}

func dialFrom(src string, addr string, roots *x509.CertPool, proto string) (*tls.Conn, error) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: roots, NextProtos: []string{proto}, MinVersion: tls.VersionTLS12})
}

// stallHTTP1 opens n connections from the source addresses, each with one
// stalled POST; it returns once every attempt has been made.
func stallHTTP1(a *attack, addr, path string, roots *x509.CertPool, srcs []string, n int) {
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", path, addr, exchange.ContentTypeForm, stallDeclared)
	req := append([]byte(head), bytes.Repeat([]byte("a"), stallSent)...)
	var wg sync.WaitGroup
	work := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				a.attempted.Add(1)
				c, err := dialFrom(srcs[i%len(srcs)], addr, roots, "http/1.1")
				if err != nil {
					continue
				}
				_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
				if _, err := c.Write(req); err != nil {
					c.Close()
					continue
				}
				a.keep(func() { c.Close() })
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
}

// h2conn is one HTTP/2 connection of stalled streams. It honours flow
// control (a server would close a connection that did not), and notes which
// streams the server answered or reset.
type h2conn struct {
	c  *tls.Conn
	fr *http2.Framer

	mu       sync.Mutex
	wmu      sync.Mutex
	connWin  int64
	initWin  int64
	streamW  map[uint32]int64
	answered map[uint32]bool
	dead     bool
	settled  chan struct{}
}

func (h *h2conn) read() {
	once := sync.Once{}
	defer once.Do(func() { close(h.settled) })
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.mu.Lock()
			h.dead = true
			h.mu.Unlock()
			return
		}
		h.mu.Lock()
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
					h.initWin = int64(v)
				}
				h.wmu.Lock()
				_ = h.fr.WriteSettingsAck()
				h.wmu.Unlock()
				once.Do(func() { close(h.settled) })
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				h.connWin += int64(f.Increment)
			} else {
				h.streamW[f.StreamID] += int64(f.Increment)
			}
		case *http2.HeadersFrame:
			h.answered[f.StreamID] = true
		case *http2.RSTStreamFrame:
			h.answered[f.StreamID] = true
		case *http2.GoAwayFrame:
			h.dead = true
		}
		h.mu.Unlock()
	}
}

// stallHTTP2 opens conns connections from the source addresses with
// streams stalled POSTs each.
func stallHTTP2(a *attack, addr, path string, roots *x509.CertPool, srcs []string, conns, streams int) []*h2conn {
	var out []*h2conn
	var omu sync.Mutex
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dialFrom(srcs[i%len(srcs)], addr, roots, "h2")
			if err != nil || c.ConnectionState().NegotiatedProtocol != "h2" {
				a.attempted.Add(int64(streams))
				if c != nil {
					c.Close()
				}
				return
			}
			h := &h2conn{c: c, fr: http2.NewFramer(c, c), connWin: 65535, initWin: 65535,
				streamW: map[uint32]int64{}, answered: map[uint32]bool{}, settled: make(chan struct{})}
			_, _ = c.Write([]byte(http2.ClientPreface))
			_ = h.fr.WriteSettings()
			go h.read()
			select {
			case <-h.settled:
			case <-time.After(5 * time.Second):
			}
			a.keep(func() { c.Close() })
			var hb bytes.Buffer
			enc := hpack.NewEncoder(&hb)
			payload := bytes.Repeat([]byte("a"), stallSent)
			for s := range streams {
				id := uint32(2*s + 1)
				a.attempted.Add(1)
				hb.Reset()
				for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", addr}, {":path", path},
					{"content-type", exchange.ContentTypeForm}, {"content-length", strconv.Itoa(stallDeclared)}} {
					_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
				}
				h.wmu.Lock()
				err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true})
				h.wmu.Unlock()
				if err != nil {
					break
				}
				// As much of the body as the windows allow, in frames of at
				// most 16 KiB; waiting a little for window updates.
				sent := 0
				for try := 0; sent < stallSent && try < 20; try++ {
					h.mu.Lock()
					n := min(int64(stallSent-sent), h.connWin, h.initWin+h.streamW[id], 16<<10)
					if n > 0 {
						h.connWin -= n
						h.streamW[id] -= n
					}
					dead := h.dead || h.answered[id]
					h.mu.Unlock()
					if dead {
						break
					}
					if n <= 0 {
						time.Sleep(10 * time.Millisecond)
						continue
					}
					h.wmu.Lock()
					err = h.fr.WriteData(id, false, payload[:n])
					h.wmu.Unlock()
					if err != nil {
						break
					}
					sent += int(n)
				}
			}
			omu.Lock()
			out = append(out, h)
			omu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// tallyHTTP2 counts the streams the issuer has neither answered nor reset.
func tallyHTTP2(a *attack, hs []*h2conn, streams int) {
	for _, h := range hs {
		h.mu.Lock()
		for s := range streams {
			id := uint32(2*s + 1)
			if !h.dead && !h.answered[id] {
				a.held.Add(1)
			}
		}
		h.mu.Unlock()
	}
}

// drained waits until the issuer holds no request and few connections:
// the stalled bodies of a phase have timed out (5 s) or been dropped.
func drained(t testing.TB, f *fixture) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		pending, conns := metricOf(t, f, "sts_issuer_requests_pending"), metricOf(t, f, `sts_issuer_connections{server="api"}`)
		if pending == 0 && conns <= 4 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the issuer still holds %v requests and %v connections 20 s after the attack", pending, conns)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// metricOf reads one series of the issuer's metrics (0 when the issuer
// has no such series).
func metricOf(t testing.TB, f *fixture, series string) float64 {
	t.Helper()
	samples, err := scrape.Samples(f.iss.MetricsURL)
	if err != nil {
		t.Fatalf("scrape the issuer: %v", err)
	}
	return samples[series]
}

// rss reads a process's resident memory.
func rss(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read the issuer's memory: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}

// legitLoad runs exchanges as sidecars make them (a new connection each,
// from their own address) until ctx ends: ok and failed counts.
func legitLoad(ctx context.Context, f *fixture, src string, subjects []string, every time.Duration) (ok, failed *atomic.Int64, done chan struct{}, why *sync.Map) {
	ok, failed, done, why = &atomic.Int64{}, &atomic.Int64{}, make(chan struct{}), &sync.Map{}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: d.DialContext, DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{RootCAs: f.iss.CA.Pool(), MinVersion: tls.VersionTLS12},
	}}
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			status, _, err := stsissuer.Post(ctx, client, f.files+"/token", subjects[i%len(subjects)])
			switch {
			case err == nil && status == http.StatusOK:
				ok.Add(1)
			case ctx.Err() == nil:
				failed.Add(1)
				reason := fmt.Sprintf("HTTP %d", status)
				if err != nil {
					reason = err.Error()
					if i := strings.LastIndex(reason, ": "); i >= 0 {
						reason = reason[i+2:]
					}
				}
				n, _ := why.LoadOrStore(reason, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
		}
	}()
	return ok, failed, done, why
}

type stallResult struct {
	name                 string
	idle, peak           int64
	attempted            int64
	legitOK, legitFailed int64
	h2Held               int64
	connections, pending float64
	failures             []string
}

// stallPhase runs the two stalling attacks at once from srcs beside the
// legitimate load, holds them for hold, and measures the issuer.
func stallPhase(t *testing.T, f *fixture, name string, idle int64, srcs []string, h1 int, h2Conns, h2Streams int, hold time.Duration, subjects []string) stallResult {
	t.Helper()
	addr := strings.TrimPrefix(f.iss.Base, "https://")
	pid := f.iss.Pid()
	res := stallResult{name: name, idle: idle}
	var peak atomic.Int64
	peak.Store(res.idle)
	sctx, stopSampling := context.WithCancel(context.Background())
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for sctx.Err() == nil {
			if v := rss(t, pid); v > peak.Load() {
				peak.Store(v)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	lctx, stopLegit := context.WithCancel(context.Background())
	ok, failed, legitDone, why := legitLoad(lctx, f, "127.0.0.2", subjects, 50*time.Millisecond)

	var a1, a2 attack
	var wg sync.WaitGroup
	var hs []*h2conn
	wg.Add(2)
	go func() { defer wg.Done(); stallHTTP1(&a1, addr, "/files/token", f.iss.CA.Pool(), srcs, h1) }()
	go func() {
		defer wg.Done()
		hs = stallHTTP2(&a2, addr, "/files/token", f.iss.CA.Pool(), srcs, h2Conns, h2Streams)
	}()
	wg.Wait()
	// Held: what the issuer still has unanswered after the attack is in
	// place (its body deadline is 5 s, so hold stays below it).
	time.Sleep(hold)
	tallyHTTP2(&a2, hs, h2Streams)
	a1.mu.Lock()
	n1 := len(a1.close)
	a1.mu.Unlock()
	res.connections, res.pending = metricOf(t, f, `sts_issuer_connections{server="api"}`), metricOf(t, f, "sts_issuer_requests_pending")
	stopLegit()
	<-legitDone
	stopSampling()
	<-sampled
	a1.stop()
	a2.stop()
	res.peak = peak.Load()
	res.h2Held = a2.held.Load()
	res.attempted = a1.attempted.Load() + a2.attempted.Load()
	res.legitOK, res.legitFailed = ok.Load(), failed.Load()
	why.Range(func(k, v any) bool {
		res.failures = append(res.failures, fmt.Sprintf("%s ×%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	t.Logf("%s: %d stalled requests attempted (%d HTTP/1.1, %d HTTP/2 streams over %d connections) from %d address(es); "+
		"HTTP/1.1 handshakes completed %d, HTTP/2 streams unanswered %d; the issuer reports %.0f connections open, %.0f requests pending; issuer RSS %.1f MiB idle, %.1f MiB peak (+%.1f MiB); legitimate exchanges %d ok, %d failed %v",
		name, res.attempted, h1, h2Conns*h2Streams, h2Conns, len(srcs), n1, res.h2Held, res.connections, res.pending,
		float64(res.idle)/(1<<20), float64(res.peak)/(1<<20), float64(res.peak-res.idle)/(1<<20), res.legitOK, res.legitFailed, res.failures)
	return res
}

// TestStalledRequestsBounded: 5,000 stalled HTTP/1.1 POSTs and 5,000
// stalled HTTP/2 streams (20 connections of 250, as the audit sent), first
// from one address (one Pod), then from 64 (several Pods, enough to reach
// the issuer's total bounds). The issuer's RSS may grow by at most 64 MiB in
// either; the single Pod's attack may not cost another Pod one exchange.
func TestStalledRequestsBounded(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	pod := kube.Workload(ctx, t, f.env.Clientset, "test-vault", "for-vault", "stall-legit")
	subjects := make([]string, 32)
	for i := range subjects {
		subjects[i] = kube.PodToken(ctx, t, f.env.Clientset, pod, f.files)
	}
	// Warm the issuer (its first exchanges allocate caches) before the idle reading.
	warm, stopWarm := context.WithTimeout(ctx, 2*time.Second)
	ok, failed, done, _ := legitLoad(warm, f, "127.0.0.2", subjects, 20*time.Millisecond)
	<-done
	stopWarm()
	if failed.Load() > 0 || ok.Load() == 0 {
		t.Fatalf("warm-up: %d ok, %d failed", ok.Load(), failed.Load())
	}
	// Every phase compares with the RSS before the first: Go returns freed
	// memory to the system slowly, so a reading between them would hide
	// what the first phase left behind.
	idle := rss(t, f.iss.Pid())
	var many []string
	for i := range 64 {
		many = append(many, fmt.Sprintf("127.0.1.%d", i+1))
	}
	phases := []struct {
		name             string
		srcs             []string
		h1, h2c, h2s     int
		legitMustNotFail bool
	}{
		{"one address, HTTP/1.1", []string{"127.0.0.3"}, 5000, 0, 0, true},
		{"one address, HTTP/2", []string{"127.0.0.4"}, 0, 20, 250, true},
		{"64 addresses, both", many, 5000, 20, 250, false},
	}
	for i, p := range phases {
		if i > 0 {
			drained(t, f) // the stalled requests of the phase before are gone
		}
		r := stallPhase(t, f, p.name, idle, p.srcs, p.h1, p.h2c, p.h2s, 3*time.Second, subjects)
		if grew := r.peak - r.idle; grew > stallBound {
			t.Errorf("%s: the issuer's RSS grew by %.1f MiB under the attack (bound %d MiB)", r.name, float64(grew)/(1<<20), stallBound>>20)
		}
		// One Pod's attack may not cost another Pod an exchange. Several
		// Pods together can hold every pending slot (then the answer is 503
		// with Retry-After); they cannot take the memory.
		if p.legitMustNotFail && r.legitFailed > 0 {
			t.Errorf("%s: %d of %d legitimate exchanges from another address failed: %v", r.name, r.legitFailed, r.legitOK+r.legitFailed, r.failures)
		}
	}
	// /metrics: 2,000 connections that send nothing (they all stayed open
	// before); the server keeps at most its bound and still answers.
	maddr := strings.TrimSuffix(strings.TrimPrefix(f.iss.MetricsURL, "http://"), "/metrics")
	var idleConns []net.Conn
	for i := range 2000 {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("127.0.2.%d", i%200+1))}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", maddr)
		if err != nil {
			continue
		}
		idleConns = append(idleConns, c)
	}
	time.Sleep(1500 * time.Millisecond)
	if _, err := scrape.Samples(f.iss.MetricsURL); err != nil {
		t.Errorf("/metrics does not answer beside 2,000 idle connections: %v", err)
	}
	// A connection the issuer still holds times out on a read; one it
	// closed reads EOF at once.
	var open atomic.Int64
	var wg sync.WaitGroup
	for _, c := range idleConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, err := c.Read(make([]byte, 1)); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					open.Add(1)
				}
			}
			c.Close()
		}()
	}
	wg.Wait()
	t.Logf("/metrics: %d idle connections opened; the issuer kept %d open and answered a scrape", len(idleConns), open.Load())
	if open.Load() > 64 {
		t.Errorf("/metrics holds %d connections after 2,000 idle ones (bound 64)", open.Load())
	}
	if peak := rss(t, f.iss.Pid()); peak-idle > stallBound {
		t.Errorf("after the /metrics connections the issuer's RSS is %.1f MiB above idle", float64(peak-idle)/(1<<20))
	}

	// After the attack the issuer answers as before.
	if res, err := f.iss.Exchange(ctx, f.files, subjects[0]); err != nil || res.Status != http.StatusOK {
		t.Fatalf("exchange after the attack: %v %+v", err, res)
	}
}
