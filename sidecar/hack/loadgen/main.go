// Command loadgen runs the sidecar's own refresh loop (package refresh, with
// the sidecar's exchanger and its defaults) once per simulated Pod, all in
// one process, for the scale harness (e2e/scale). The loops watch no files
// (refresh.Config.NoFileWatch): a deleted token file is written again at the
// next refresh, not at once. Each loop has its own
// subject token file and token file, as a Pod has; all share one
// *http.Client, whose transport keeps no connection alive, so every exchange
// opens its own connection and makes its own TLS handshake, as the sidecars
// of separate Pods do.
//
//	loadgen --url https://127.0.0.1:PORT/vault/token --ca-file ca.crt --pods pods.jsonl [--spread 30s]
//
// pods.jsonl has one {"subject": FILE, "out": FILE} per loop. Every second
// it prints one JSON line of what the loops did (exchanges by result,
// latency p50/p99, in flight, loops holding a valid token); on SIGTERM a last
// one, then it exits.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/kube-sts/kube-sts/sidecar/internal/exchanger"
	"github.com/kube-sts/kube-sts/sidecar/internal/options"
	"github.com/kube-sts/kube-sts/sidecar/internal/refresh"
)

type pod struct {
	Subject string `json:"subject"`
	Out     string `json:"out"`
}

// Stats is one second of the loops' work.
type Stats struct {
	UnixMilli int64   `json:"t"`
	OK        int64   `json:"ok"`
	Transient int64   `json:"transient"`
	Refused   int64   `json:"refused"`
	InFlight  int64   `json:"inflight"`
	Valid     int     `json:"valid"`
	Loops     int     `json:"loops"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
}

// counting wraps the sidecar's exchanger: it records each exchange's
// result and latency, and the expiry of each loop's token.
type counting struct {
	ex      *exchanger.Client
	expiry  []atomic.Int64 // per loop, unix ns; 0: none yet
	ok      atomic.Int64
	trans   atomic.Int64
	refused atomic.Int64
	flight  atomic.Int64
	mu      sync.Mutex
	lat     []time.Duration
}

type loopExchanger struct {
	c *counting
	i int
}

func (l loopExchanger) Exchange(ctx context.Context, subject string) (exchanger.Token, error) {
	c := l.c
	c.flight.Add(1)
	start := time.Now()
	tok, err := c.ex.Exchange(ctx, subject)
	d := time.Since(start)
	c.flight.Add(-1)
	var xe *exchanger.Error
	switch {
	case err == nil:
		c.ok.Add(1)
		c.expiry[l.i].Store(tok.Claims.Expiry.UnixNano())
	case errors.As(err, &xe) && xe.Kind == exchanger.Refused:
		c.refused.Add(1)
	default:
		c.trans.Add(1)
	}
	c.mu.Lock()
	c.lat = append(c.lat, d)
	c.mu.Unlock()
	return tok, err
}

// second takes the counters of the last second.
func (c *counting) second(now time.Time) Stats {
	c.mu.Lock()
	lat := c.lat
	c.lat = nil
	c.mu.Unlock()
	s := Stats{UnixMilli: now.UnixMilli(), OK: c.ok.Swap(0), Transient: c.trans.Swap(0), Refused: c.refused.Swap(0),
		InFlight: c.flight.Load(), Loops: len(c.expiry)}
	for i := range c.expiry {
		if c.expiry[i].Load() > now.UnixNano() {
			s.Valid++
		}
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		s.P50Ms = float64(lat[len(lat)/2].Microseconds()) / 1000
		s.P99Ms = float64(lat[len(lat)*99/100].Microseconds()) / 1000
	}
	return s
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run() error {
	url := flag.String("url", "", "the issuer's token endpoint")
	caFile := flag.String("ca-file", "", "CA bundle of the issuer's certificate")
	podsFile := flag.String("pods", "", "JSON lines: one {subject, out} per loop")
	spread := flag.Duration("spread", 0, "start the loops at random moments within this span (Pods do not all start at once)")
	flag.Parse()
	pods, err := readPods(*podsFile)
	if err != nil {
		return err
	}
	// The sidecar's defaults, as newLoops sets them.
	o := options.Defaults()
	httpClient, err := exchanger.NewHTTPClient(*caFile, "", o.HTTPTimeout)
	if err != nil {
		return err
	}
	c := &counting{ex: &exchanger.Client{URL: *url, HTTP: httpClient, Now: time.Now}, expiry: make([]atomic.Int64, len(pods))}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var wg sync.WaitGroup
	for i, p := range pods {
		r := refresh.New(refresh.Config{
			SubjectTokenFile: p.Subject, OutputFile: p.Out, FileMode: o.FileMode,
			Fraction: o.RefreshFraction, Jitter: 0.05, Margin: time.Minute,
			BackoffMin: o.BackoffMin, BackoffMax: o.BackoffMax, RefusedRetry: o.RefusedRetry,
			NoFileWatch: true, // no inotify instance per loop (see refresh.Config)
		}, loopExchanger{c: c, i: i}, zap.NewNop())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if *spread > 0 {
				t := time.NewTimer(time.Duration(rand.Int64N(int64(*spread))))
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
			_ = r.Run(ctx)
		}()
	}

	out := json.NewEncoder(os.Stdout)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return out.Encode(c.second(time.Now()))
		case now := <-tick.C:
			if err := out.Encode(c.second(now)); err != nil {
				return err
			}
		}
	}
}

func readPods(file string) ([]pod, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var pods []pod
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var p pod
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		pods = append(pods, p)
	}
	if len(pods) == 0 {
		return nil, fmt.Errorf("%s lists no pod", file)
	}
	return pods, sc.Err()
}
