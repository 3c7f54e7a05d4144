package scale

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/kube-sts/kube-sts/e2e/internal/scrape"
	"github.com/kube-sts/kube-sts/e2e/internal/stsissuer"
)

// point is one second of the run: the loops' line from loadgen, the API
// server's calls per second since the last scrape, the issuers' resources.
type point struct {
	T         float64 `json:"t"`
	OK        float64 `json:"ok"`
	Transient float64 `json:"transient"`
	Refused   float64 `json:"refused"`
	InFlight  float64 `json:"inflight"`
	Valid     int     `json:"valid"`
	Loops     int     `json:"loops"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	// API calls a second, by kind.
	TokenReviews float64 `json:"tokenreviews_per_s"`
	PodGets      float64 `json:"pod_gets_per_s"`
	SAGets       float64 `json:"sa_gets_per_s"`
	ListWatch    float64 `json:"list_watch_per_s"`
	TooMany      float64 `json:"http_429_per_s"`
	RSSMiB       float64 `json:"issuer_rss_mib"`
}

type band struct {
	Name     string  `json:"band"`
	From, To float64 `json:"-"`
	rec      *recorder
}

func (b *band) end() {
	b.rec.mu.Lock()
	b.To = time.Since(b.rec.start).Seconds()
	b.rec.mu.Unlock()
}

type snapshot struct {
	at        time.Time
	exchanges float64
	api       apiCounts
	cpu, rss  float64
}

// recorder samples the run once a second.
type recorder struct {
	start      time.Time
	r          *run
	res        *result
	loadgenLog string
	offset     int64

	mu      sync.Mutex
	points  []point
	bands   []*band
	issuers []*stsissuer.Issuer
	lastAPI apiCounts
	lastAt  time.Time
}

func (rec *recorder) setIssuers(issuers []*stsissuer.Issuer) {
	rec.mu.Lock()
	rec.issuers = issuers
	rec.mu.Unlock()
}

func (rec *recorder) band(name string) *band {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	b := &band{Name: name, From: time.Since(rec.start).Seconds(), To: -1, rec: rec}
	rec.bands = append(rec.bands, b)
	return b
}

func (rec *recorder) run(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			rec.readLoadgen()
			return
		case <-tick.C:
		}
		rec.readLoadgen()
		n++
		if n%2 == 0 {
			rec.sampleAPI(ctx)
		}
	}
}

// readLoadgen appends the lines loadgen printed since the last call.
func (rec *recorder) readLoadgen() {
	f, err := os.Open(rec.loadgenLog)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.Seek(rec.offset, io.SeekStart); err != nil {
		return
	}
	rd := bufio.NewReader(f)
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			return // a partial line is read again next time
		}
		rec.offset += int64(len(line))
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var s struct {
			T                             int64
			OK, Transient, Refused, Valid int64
			InFlight                      int64 `json:"inflight"`
			Loops                         int
			P50                           float64 `json:"p50_ms"`
			P99                           float64 `json:"p99_ms"`
		}
		if json.Unmarshal([]byte(line), &s) != nil {
			continue
		}
		rec.mu.Lock()
		rec.points = append(rec.points, point{T: time.UnixMilli(s.T).Sub(rec.start).Seconds(), OK: float64(s.OK), Transient: float64(s.Transient),
			Refused: float64(s.Refused), InFlight: float64(s.InFlight), Valid: int(s.Valid), Loops: s.Loops, P50Ms: s.P50, P99Ms: s.P99})
		rec.mu.Unlock()
	}
}

// sampleAPI sets the API calls per second and the issuers' memory on the
// latest point.
func (rec *recorder) sampleAPI(ctx context.Context) {
	a, err := scrapeAPI(ctx, rec.r.cs)
	if err != nil {
		return // the API server is restarting
	}
	_, rss := rec.issuerResources()
	now := time.Now()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	// After an API server restart its counters start again from 0: that
	// sample only sets the new baseline.
	restarted := a.TokenReviews < rec.lastAPI.TokenReviews || a.PodGets < rec.lastAPI.PodGets || a.ListWatch < rec.lastAPI.ListWatch
	if !rec.lastAt.IsZero() && len(rec.points) > 0 && !restarted {
		d := now.Sub(rec.lastAt).Seconds()
		delta := a.minus(rec.lastAPI)
		p := &rec.points[len(rec.points)-1]
		p.TokenReviews, p.PodGets, p.SAGets, p.ListWatch, p.TooMany = delta.TokenReviews/d, delta.PodGets/d, delta.SAGets/d, delta.ListWatch/d, delta.TooMany/d
		p.RSSMiB = rss / (1 << 20)
	}
	rec.lastAPI, rec.lastAt = a, now
}

func (rec *recorder) current() []*stsissuer.Issuer {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.issuers
}

// issuerResources sums the current replicas' CPU seconds and RSS (from
// /proc: nothing is asked of the issuers).
func (rec *recorder) issuerResources() (cpu, rss float64) {
	for _, iss := range rec.current() {
		if r, c, err := procUsage(iss.Proc.Pid()); err == nil {
			rss += float64(r)
			cpu += c
		}
	}
	return cpu, rss
}

// issuerExchanges sums the current replicas' sts_issuer_exchanges_total
// (the steady window's two snapshots only).
func (rec *recorder) issuerExchanges() (exchanges float64) {
	for _, iss := range rec.current() {
		samples, err := scrape.Samples(iss.MetricsURL)
		if err != nil {
			continue
		}
		for series, v := range samples {
			if strings.HasPrefix(series, "sts_issuer_exchanges_total{") {
				exchanges += v
			}
		}
	}
	return exchanges
}

func (rec *recorder) snapshot(ctx context.Context) snapshot {
	a, err := scrapeAPI(ctx, rec.r.cs)
	if err != nil {
		rec.r.t.Fatalf("scrape the API server: %v", err)
	}
	cpu, rss := rec.issuerResources()
	return snapshot{at: time.Now(), exchanges: rec.issuerExchanges(), api: a, cpu: cpu, rss: rss}
}

func (rec *recorder) lastValid() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.points) == 0 {
		return 0
	}
	return rec.points[len(rec.points)-1].Valid
}

// awaitValid waits until every loop holds a valid token (seen in a line
// printed after the call), for at most timeout.
func (rec *recorder) awaitValid(ctx context.Context, timeout time.Duration) (time.Duration, bool) {
	start := time.Now()
	since := start.Sub(rec.start).Seconds()
	for time.Since(start) < timeout && ctx.Err() == nil {
		rec.mu.Lock()
		done := false
		if n := len(rec.points); n > 0 {
			p := rec.points[n-1]
			done = p.T > since && p.Loops > 0 && p.Valid == p.Loops
		}
		rec.mu.Unlock()
		if done {
			return time.Since(start), true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return time.Since(start), false
}

func (rec *recorder) window(from, to float64) []point {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var out []point
	for _, p := range rec.points {
		if p.T >= from && p.T <= to {
			out = append(out, p)
		}
	}
	return out
}

// write saves prefix.jsonl (the points, then the bands) and prefix.svg.
func (rec *recorder) write(prefix string) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var b strings.Builder
	enc := json.NewEncoder(&b)
	for _, p := range rec.points {
		_ = enc.Encode(p)
	}
	for _, bd := range rec.bands {
		_ = enc.Encode(map[string]any{"band": bd.Name, "from": bd.From, "to": bd.To})
	}
	if err := os.WriteFile(prefix+".jsonl", []byte(b.String()), 0o644); err != nil {
		rec.r.t.Error(err)
	}
	title := fmt.Sprintf("review mode %s: %d Pods, %d loops, %v tokens", rec.res.Mode, rec.res.Pods, rec.res.Loops, rec.res.TTL)
	if err := os.WriteFile(prefix+".svg", []byte(plot(title, rec.points, rec.bands)), 0o644); err != nil {
		rec.r.t.Error(err)
	}
}
