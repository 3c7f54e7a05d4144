// Package scale runs many simulated Pods against two sts-issuer replicas on
// the real API server and measures what they cost it, in each review mode.
//
// The API server holds SCALE_PODS Pod objects (default 2,000) spread over
// namespaces (1,000 Pods each, 10 ServiceAccounts each) and bound to fake
// Nodes (100 Pods each), each with a Pod-bound token for the issuer's
// audience (TokenRequest). One load-generator process (sidecar/hack/loadgen)
// runs the sidecar's own refresh loop once per Pod (or for SCALE_LOOPS of
// them, spread evenly: the API server and the issuers' caches hold every
// Pod while the exchange rate is that of fewer), its exchanges through a
// loopback load balancer to two issuer replicas, each exchange on its own
// connection (the sidecar keeps none alive). Time is compressed by the
// token lifetime SCALE_TTL (default 1m; the shipped one is 15m): a loop
// refreshes at min(80%, lifetime - min(60 s, lifetime/2)) minus jitter, so
// L loops with 1-minute tokens make L/30 exchanges a second, what
// L x 24 Pods with 15-minute tokens (refreshed every 12 minutes) make.
//
// Per review mode (SCALE_MODES; make scale runs "tokenreview,watch", make
// test's short run "watch" only: the mode whose bounds this suite asserts,
// while mode tokenreview's 2 API calls per exchange and refusals are asserted
// by e2e/issuer's TestReviewModes), with the same
// Pods: loops started over one refresh interval; a steady window
// (SCALE_STEADY, default 30 s) with churn (1% of the Pods a minute deleted
// and recreated under the same name; each deleted Pod's token presented
// every 250 ms until refused: the refusal latency under load); then the faults of SCALE_FAULTS (default
// "outage": every issuer down for 5/3 of the refresh margin, as 5 minutes is
// to the 3 minutes 15-minute tokens have left at their refresh, so that
// tokens expire and the whole herd returns; then started again; "apiserver": the API server
// restarted; "replica": one issuer replica killed for 30 s). It writes
// dist/scale/summary.txt, <mode>.jsonl and <mode>.svg (SCALE_OUT).
//
// It asserts: no token issued to a deleted Pod later than
// flow.DeletedPodBound after its delete; in mode watch every simulated Pod
// valid again within the sidecar's backoff maximum + 15 s after the issuers
// are back (mode tokenreview's recovery is reported); API calls per exchange
// 2 in mode tokenreview and at most 0.01 in mode watch.
package scale

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kube-sts/kube-sts/e2e/internal/balancer"
	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/flow"
	"github.com/kube-sts/kube-sts/e2e/internal/procs"
	"github.com/kube-sts/kube-sts/e2e/internal/scrape"
	"github.com/kube-sts/kube-sts/e2e/internal/stsissuer"
	"github.com/kube-sts/kube-sts/e2e/internal/testca"
)

var cp = controlplane.New()

func TestMain(m *testing.M) { os.Exit(cp.Main(m)) }

// backoffMax is the sidecar's default --backoff-max.
const backoffMax = 30 * time.Second

type settings struct {
	pods, loops    int
	ttl, steady    time.Duration
	modes, faults  []string
	out            string
	churnPerMinute float64
}

func readSettings(t *testing.T) settings {
	s := settings{pods: 2000, ttl: time.Minute, steady: 30 * time.Second, modes: []string{"watch"},
		faults: []string{"outage"}, out: filepath.Join(procs.RepoRoot(), "dist", "scale"), churnPerMinute: 0.01}
	if v := os.Getenv("SCALE_PODS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 10 {
			t.Fatalf("SCALE_PODS=%q: a number of at least 10", v)
		}
		s.pods = n
	}
	s.loops = s.pods
	if v := os.Getenv("SCALE_LOOPS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 10 || n > s.pods {
			t.Fatalf("SCALE_LOOPS=%q: a number from 10 to SCALE_PODS (%d)", v, s.pods)
		}
		s.loops = n
	}
	for name, into := range map[string]*time.Duration{"SCALE_TTL": &s.ttl, "SCALE_STEADY": &s.steady} {
		if v := os.Getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Minute && name == "SCALE_TTL" || d <= 0 {
				t.Fatalf("%s=%q: a duration (SCALE_TTL at least 1m, the issuer's least)", name, v)
			}
			*into = d
		}
	}
	if v := os.Getenv("SCALE_MODES"); v != "" {
		s.modes = strings.Split(v, ",")
	}
	if v, ok := os.LookupEnv("SCALE_FAULTS"); ok {
		s.faults = strings.FieldsFunc(v, func(r rune) bool { return r == ',' })
	}
	if v := os.Getenv("SCALE_OUT"); v != "" {
		s.out = v
	}
	return s
}

// refreshEvery is when the sidecar refreshes a token of lifetime ttl
// (before jitter): refresh.NextRefresh with fraction 0.8 and margin 60 s.
func refreshEvery(ttl time.Duration) time.Duration {
	return min(time.Duration(0.8*float64(ttl)), ttl-min(time.Minute, ttl/2))
}

// outageFor is how long every issuer is down: as 5 minutes is to the
// shipped 15-minute tokens' refresh margin (3 minutes), 5/3 of the margin,
// so that tokens expire and the whole herd comes back (50 s for 1-minute
// tokens, whose margin is 30 s).
func outageFor(ttl time.Duration) time.Duration {
	return (ttl - refreshEvery(ttl)) * 5 / 3
}

func TestScale(t *testing.T) {
	if testing.Short() {
		t.Skip("the scale run takes minutes on the real API server (make test runs its short version)")
	}
	s := readSettings(t)
	env := cp.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel()
	cs := fastClient(t, env.Config)
	lb := balancer.New(t)
	issuerURL := fmt.Sprintf("https://127.0.0.1:%d/vault", lb.Port)
	dir := workDir(t)
	c := build(ctx, t, cs, s.pods, s.loops, issuerURL, dir)
	podsFile := c.podsFile(t)

	ca, err := testca.New("kube-sts scale")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.crt")
	keyFile := filepath.Join(dir, "signing.key")
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalECPrivateKey(ec)
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(s.out, 0o755); err != nil {
		t.Fatal(err)
	}
	r := &run{t: t, env: env, cs: cs, c: c, lb: lb, s: s, ca: ca, caFile: caFile, keyFile: keyFile, podsFile: podsFile, issuerURL: issuerURL}
	var results []*result
	for _, mode := range s.modes {
		t.Run(mode, func(t *testing.T) {
			r.t = t
			res := r.mode(ctx, mode)
			results = append(results, res)
			res.check(t, s)
		})
	}
	writeSummary(t, s, results)
}

// workDir holds one folder per simulated Pod (its subject token and token
// files): in memory when /dev/shm is there, as the Pods' volumes are.
func workDir(t *testing.T) string {
	t.Helper()
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	d, err := os.MkdirTemp(base, "kube-sts-scale-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

type run struct {
	t                                    *testing.T
	env                                  *controlplane.Env
	cs                                   kubernetes.Interface
	c                                    *cluster
	lb                                   *balancer.Balancer
	s                                    settings
	ca                                   *testca.CA
	caFile, keyFile, podsFile, issuerURL string
}

// startIssuers starts the two replicas of mode and points the balancer at them.
func (r *run) startIssuers(mode string) []*stsissuer.Issuer {
	issuers := []*stsissuer.Issuer{r.startIssuer(mode), r.startIssuer(mode)}
	r.balance(issuers)
	return issuers
}

// balance points the balancer at issuers.
func (r *run) balance(issuers []*stsissuer.Issuer) {
	var ports []int
	for _, iss := range issuers {
		u, err := url.Parse(iss.Base)
		if err != nil {
			r.t.Fatal(err)
		}
		port, _ := strconv.Atoi(u.Port())
		ports = append(ports, port)
	}
	r.lb.Set(ports...)
}

// startIssuer starts one replica of mode; it returns once it is ready.
func (r *run) startIssuer(mode string) *stsissuer.Issuer {
	return stsissuer.Start(r.t, r.env, r.ca, func(string) string {
		return fmt.Sprintf(`
cluster: scale
endpoints:
- name: vault
  issuer: %s
  audience: https://vault.scale.test
  algorithm: ES256
  ttl: %s
  keys: {files: [%s]}
  allow: [{namespace: "scale-*"}]
`, r.issuerURL, r.s.ttl, r.keyFile)
	}, "--review="+mode, "--log-level=warn", "--max-connections-per-address=0", "--max-pending-requests-per-address=0")
}

// mode runs the loops against mode's issuers through the phases and faults.
func (r *run) mode(ctx context.Context, mode string) *result {
	t := r.t
	for _, i := range r.c.looped {
		_ = os.Remove(r.c.slots[i].Out)
	}
	res := &result{Mode: mode, Pods: r.s.pods, Loops: r.s.loops, TTL: r.s.ttl, Refresh: refreshEvery(r.s.ttl)}
	procs.Build(t, "issuer", "./cmd/sts-issuer") // built before the clock starts
	started := time.Now()
	issuers := r.startIssuers(mode)
	res.IssuerStart = time.Since(started)
	if mode == "watch" {
		res.CacheSync = waitWatchCurrent(t, issuers)
	}
	rec := &recorder{start: time.Now(), r: r, res: res}
	rec.setIssuers(issuers)
	loadgen := procs.Build(t, "sidecar", "./hack/loadgen")
	lg := procs.Start(t, "loadgen-"+mode, r.c.dir, loadgen, "--url", r.issuerURL+"/token", "--ca-file", r.caFile,
		"--pods", r.podsFile, "--spread", res.Refresh.String())
	rec.loadgenLog = lg.LogFile
	recCtx, stopRec := context.WithCancel(ctx)
	recDone := make(chan struct{})
	go func() { rec.run(recCtx); close(recDone) }()

	// Warm-up: every loop holds a token.
	warm := rec.band("warm-up")
	if took, ok := rec.awaitValid(ctx, res.Refresh+backoffMax+time.Minute); !ok {
		t.Fatalf("after %v only %d of %d loops hold a valid token", took, rec.lastValid(), r.s.loops)
	}
	warm.end()

	// Steady, with churn.
	churnCtx, stopChurn := context.WithCancel(ctx)
	churnDone := make(chan struct{})
	go func() { r.churn(churnCtx, res); close(churnDone) }()
	steady := rec.band("steady")
	before := rec.snapshot(ctx)
	time.Sleep(r.s.steady)
	after := rec.snapshot(ctx)
	steady.end()
	// Refusal latency is a steady-state figure: a Pod deleted while every
	// issuer is down is refused only when one is back.
	stopChurn()
	<-churnDone
	res.steady(before, after, rec.window(steady.From, steady.To))

	for _, fault := range r.s.faults {
		switch fault {
		case "outage":
			down := outageFor(r.s.ttl)
			b := rec.band("all issuers down")
			for _, iss := range issuers {
				iss.Proc.Stop()
			}
			time.Sleep(down)
			b.end()
			back := time.Now()
			issuers = r.startIssuers(mode)
			rec.setIssuers(issuers)
			ready := time.Since(back)
			rb := rec.band("recovery")
			_, ok := rec.awaitValid(ctx, 5*time.Minute)
			rb.end()
			res.OutageDown, res.Recovered, res.RecoveredOK = down, time.Since(back), ok
			t.Logf("%s: all issuers down %v; every simulated Pod valid again %v after they were started again (ready after %v), %v after the outage began",
				mode, down, res.Recovered.Round(time.Millisecond), ready.Round(time.Millisecond), (res.Recovered + down).Round(time.Second))
		case "apiserver":
			b := rec.band("API server restarted")
			took, err := r.env.RestartAPIServer(ctx)
			b.end()
			if err != nil {
				t.Fatalf("restart the API server: %v", err)
			}
			t.Logf("%s: API server restarted in %v", mode, took.Round(time.Millisecond))
			_, _ = rec.awaitValid(ctx, 2*time.Minute)
		case "replica":
			b := rec.band("one replica killed")
			issuers[0].Proc.Stop()
			time.Sleep(30 * time.Second)
			b.end()
			issuers = []*stsissuer.Issuer{r.startIssuer(mode), issuers[1]}
			r.balance(issuers)
			rec.setIssuers(issuers)
			_, _ = rec.awaitValid(ctx, 2*time.Minute)
		default:
			t.Fatalf("SCALE_FAULTS: unknown fault %q (known: outage, apiserver, replica)", fault)
		}
	}
	lg.Stop()
	stopRec()
	<-recDone
	rec.write(filepath.Join(r.s.out, mode))
	for _, iss := range issuers {
		iss.Proc.Stop()
	}
	return res
}

// waitWatchCurrent waits until both replicas' caches are current and says
// how long that took after they were ready.
func waitWatchCurrent(t *testing.T, issuers []*stsissuer.Issuer) time.Duration {
	start := time.Now()
	for _, iss := range issuers {
		for {
			samples, err := scrape.Samples(iss.MetricsURL)
			if err == nil && samples["sts_issuer_watch_current"] == 1 {
				break
			}
			if time.Since(start) > 5*time.Minute {
				t.Fatalf("the caches of %s are not current after %v", iss.Base, time.Since(start))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return time.Since(start)
}

// churn deletes and recreates 1% of the Pods a minute, each under the same
// name (a new UID), and presents each deleted Pod's token every 250 ms
// until the issuer refuses it.
func (r *run) churn(ctx context.Context, res *result) {
	// 1% of the Pods a minute, among those with a loop (their tokens are
	// the ones presented).
	every := time.Duration(float64(time.Minute) / (r.s.churnPerMinute * float64(r.s.pods)))
	tick := time.NewTicker(every)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	client := procs.TLSClient(r.ca.Pool())
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		i := r.c.looped[mrand.IntN(len(r.c.looped))]
		sl := r.c.slots[i]
		old, err := os.ReadFile(sl.Subject)
		if err != nil {
			r.t.Errorf("churn: %v", err)
			continue
		}
		if err := r.cs.CoreV1().Pods(sl.Namespace).Delete(ctx, sl.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
			if ctx.Err() == nil {
				r.t.Errorf("churn: delete %s/%s: %v", sl.Namespace, sl.Name, err)
			}
			continue
		}
		deleted := time.Now()
		wg.Add(1)
		go func() {
			defer wg.Done()
			latency, late := probeDeleted(client, r.issuerURL+"/token", string(old), deleted)
			res.refusal(latency, late)
		}()
		// Recreated even when the churn is being stopped: a deleted Pod
		// left behind would refuse its loop for the rest of the run.
		if err := r.c.create(context.WithoutCancel(ctx), i, fmt.Sprintf("scale-node-%d", i/podsPerNode)); err != nil {
			r.t.Errorf("recreate %s/%s: %v", sl.Namespace, sl.Name, err)
		}
	}
}

// probeDeleted presents a deleted Pod's token every 250 ms (under the
// per-token limit) until the issuer refuses it, for at most 10 s. It returns
// how long after the delete the refusal came (-1: none), and how many tokens
// were issued for requests sent later than flow.DeletedPodBound after it.
func probeDeleted(client *http.Client, tokenURL, subject string, deleted time.Time) (time.Duration, int) {
	late := 0
	for time.Since(deleted) < 10*time.Second {
		sent := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		status, _, err := stsissuer.Post(ctx, client, tokenURL, subject)
		cancel()
		switch {
		case err == nil && status >= 400 && status < 500 && status != http.StatusTooManyRequests:
			return time.Since(deleted), late
		case err == nil && status == http.StatusOK && sent.Sub(deleted) > flow.DeletedPodBound:
			late++
		}
		time.Sleep(250 * time.Millisecond)
	}
	return -1, late
}

// result is one review mode's measurements.
type result struct {
	Mode        string        `json:"mode"`
	Pods        int           `json:"pods"`
	Loops       int           `json:"loops"`
	TTL         time.Duration `json:"ttl"`
	Refresh     time.Duration `json:"refresh"`
	IssuerStart time.Duration `json:"issuer_start"`
	CacheSync   time.Duration `json:"cache_sync"`

	ExchangesPerSec  float64   `json:"exchanges_per_s"`
	P50              float64   `json:"p50_ms"`
	P99              float64   `json:"p99_ms"`
	CallsPerExchange float64   `json:"api_calls_per_exchange"`
	Calls            apiCounts `json:"api_calls"`
	CPUPer1000       float64   `json:"issuer_cpu_s_per_s_per_1000_pods"`
	RSSMiB           float64   `json:"issuer_rss_mib"`

	OutageDown  time.Duration `json:"outage"`
	Recovered   time.Duration `json:"recovered_after_restart"`
	RecoveredOK bool          `json:"recovered"`

	mu              sync.Mutex
	RefusalsMs      []float64 `json:"-"`
	Unrefused       int       `json:"unrefused"`
	IssuedToDeleted int       `json:"issued_to_deleted"`
}

func (res *result) refusal(latency time.Duration, late int) {
	res.mu.Lock()
	defer res.mu.Unlock()
	res.IssuedToDeleted += late
	if latency < 0 {
		res.Unrefused++
		return
	}
	res.RefusalsMs = append(res.RefusalsMs, float64(latency.Microseconds())/1000)
}

func (res *result) refusalPercentiles() (n int, p50, p99 float64) {
	res.mu.Lock()
	defer res.mu.Unlock()
	v := slices.Clone(res.RefusalsMs)
	slices.Sort(v)
	if len(v) == 0 {
		return 0, math.NaN(), math.NaN()
	}
	return len(v), v[len(v)/2], v[min(len(v)-1, int(math.Ceil(float64(len(v))*0.99))-1)]
}

// steady fills the steady window's figures from the snapshots around it.
func (res *result) steady(before, after snapshot, points []point) {
	d := after.at.Sub(before.at).Seconds()
	exchanges := after.exchanges - before.exchanges
	res.ExchangesPerSec = exchanges / d
	res.Calls = after.api.minus(before.api)
	if exchanges > 0 {
		res.CallsPerExchange = res.Calls.issuerCalls() / exchanges
	}
	res.CPUPer1000 = (after.cpu - before.cpu) / d / float64(res.Pods) * 1000 // per 1,000 Pods held (the caches), not loops
	res.RSSMiB = max(before.rss, after.rss) / (1 << 20)
	var p50s, p99s []float64
	for _, p := range points {
		if p.OK > 0 {
			p50s, p99s = append(p50s, p.P50Ms), append(p99s, p.P99Ms)
		}
	}
	slices.Sort(p50s)
	slices.Sort(p99s)
	if len(p50s) > 0 {
		res.P50, res.P99 = p50s[len(p50s)/2], p99s[len(p99s)*9/10]
	}
}

func (res *result) check(t *testing.T, s settings) {
	if res.IssuedToDeleted != 0 {
		t.Errorf("%s: %d tokens issued to deleted Pods later than %v after their delete", res.Mode, res.IssuedToDeleted, flow.DeletedPodBound)
	}
	if res.Unrefused != 0 {
		t.Errorf("%s: %d deleted Pods' tokens were still exchanged 10 s after the delete", res.Mode, res.Unrefused)
	}
	// The recovery bound is review mode watch's goal; mode tokenreview's
	// recovery is reported beside it (on 2 cores it stops recovering
	// somewhere between 2,000 and 10,000 loops: the point of the comparison).
	if slices.Contains(s.faults, "outage") && res.Mode == "watch" {
		if bound := backoffMax + 15*time.Second; !res.RecoveredOK || res.Recovered > bound {
			t.Errorf("%s: every simulated Pod valid again %v after the issuers were back (recovered: %v); want within %v", res.Mode, res.Recovered, res.RecoveredOK, bound)
		}
	}
	switch res.Mode {
	case "tokenreview":
		if res.CallsPerExchange < 1.9 || res.CallsPerExchange > 2.1 {
			t.Errorf("tokenreview: %.3f API calls per exchange, want 2", res.CallsPerExchange)
		}
	case "watch":
		if res.CallsPerExchange > 0.01 {
			t.Errorf("watch: %.3f API calls per exchange, want at most 0.01", res.CallsPerExchange)
		}
	}
	if res.ExchangesPerSec <= 0 {
		t.Errorf("%s: no exchange in the steady window", res.Mode)
	}
}

func writeSummary(t *testing.T, s settings, results []*result) {
	var b strings.Builder
	equiv := float64(s.loops) * float64(refreshEvery(15*time.Minute)) / float64(refreshEvery(s.ttl))
	fmt.Fprintf(&b, "kube-sts scale run, %s\n%d Pods on the real API server, %d of them with a sidecar refresh loop, two issuer replicas behind a loopback balancer; tokens of %v refreshed every %v: the exchange rate of %.0f Pods with the shipped 15-minute tokens. Churn %.0f%%/min of the Pods. Faults: %v.\n\n",
		time.Now().UTC().Format(time.RFC3339), s.pods, s.loops, s.ttl, refreshEvery(s.ttl), equiv, s.churnPerMinute*100, s.faults)
	for _, r := range results {
		n, p50, p99 := r.refusalPercentiles()
		fmt.Fprintf(&b, "review mode %s\n", r.Mode)
		fmt.Fprintf(&b, "  steady: %.1f exchanges/s, latency p50 %.1f ms p99 %.1f ms (per-second percentiles: median p50, 90th-percentile p99)\n", r.ExchangesPerSec, r.P50, r.P99)
		fmt.Fprintf(&b, "  API calls per exchange: %.3f (TokenReviews %.0f, Pod GETs %.0f, ServiceAccount GETs %.0f; list/watch %.0f; 429s %.0f; APF rejections %.0f)\n",
			r.CallsPerExchange, r.Calls.TokenReviews, r.Calls.PodGets, r.Calls.SAGets, r.Calls.ListWatch, r.Calls.TooMany, r.Calls.Rejected)
		fmt.Fprintf(&b, "  issuers: %.3f CPU-seconds per second per 1,000 Pods (both replicas), RSS %.0f MiB (both replicas); start to ready %v", r.CPUPer1000, r.RSSMiB, r.IssuerStart.Round(time.Millisecond))
		if r.Mode == "watch" {
			fmt.Fprintf(&b, ", caches current %v after ready", r.CacheSync.Round(time.Millisecond))
		}
		fmt.Fprintln(&b)
		if r.OutageDown > 0 {
			fmt.Fprintf(&b, "  every issuer down %v: every simulated Pod valid again %v after they were back (%v)\n", r.OutageDown, r.Recovered.Round(time.Millisecond), map[bool]string{true: "recovered", false: "NOT recovered"}[r.RecoveredOK])
		}
		fmt.Fprintf(&b, "  deleted Pods: %d refused, p50 %.0f ms p99 %.0f ms after the delete; %d not refused within 10 s; %d tokens issued later than %v after a delete\n\n",
			n, p50, p99, r.Unrefused, r.IssuedToDeleted, flow.DeletedPodBound)
	}
	t.Log("\n" + b.String())
	if err := os.WriteFile(filepath.Join(s.out, "summary.txt"), []byte(b.String()), 0o644); err != nil {
		t.Error(err)
	}
	data, _ := json.MarshalIndent(results, "", "  ")
	if err := os.WriteFile(filepath.Join(s.out, "results.json"), data, 0o644); err != nil {
		t.Error(err)
	}
}
