package soak

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-sts/kube-sts/e2e/internal/scenario"
)

// --- logs: kept while Pods come and go ---

type logCollector struct {
	s    *scenario.Stack
	mu   sync.Mutex
	logs map[string]string // namespace/pod/uid/container → everything it wrote so far
}

func newLogCollector(s *scenario.Stack) *logCollector {
	return &logCollector{s: s, logs: map[string]string{}}
}

func (l *logCollector) run(ctx context.Context) {
	for {
		l.collect(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

func (l *logCollector) collect(ctx context.Context) {
	for _, namespace := range []string{scenario.ReleaseNS, ns} {
		pods, err := l.s.Env.Clientset.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			continue // the API server may be down: a fault
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
				text, err := l.s.Node.ContainerLog(p, c.Name)
				if err != nil || text == "" {
					continue
				}
				key := strings.Join([]string{p.Namespace, p.Name, string(p.UID), c.Name}, "/")
				l.mu.Lock()
				if len(text) >= len(l.logs[key]) {
					l.logs[key] = text
				}
				l.mu.Unlock()
			}
		}
	}
}

// lines returns every collected line of containers named container.
func (l *logCollector) lines(container string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for k, v := range l.logs {
		if container == "" || strings.HasSuffix(k, "/"+container) {
			out = append(out, strings.Split(v, "\n")...)
		}
	}
	return out
}

// criTime is the time the kubelet gave a log line (CRI format: "<RFC3339Nano> stdout F <line>").
func criTime(line string) (time.Time, bool) {
	ts, _, ok := strings.Cut(line, " ")
	if !ok {
		return time.Time{}, false
	}
	at, err := time.Parse(time.RFC3339Nano, ts)
	return at, err == nil
}

// firstAfter is when msg was first logged after after (zero: never).
func firstAfter(log, msg string, after time.Time) time.Time {
	for _, line := range strings.Split(log, "\n") {
		if at, ok := criTime(line); ok && at.After(after) && strings.Contains(line, msg) {
			return at
		}
	}
	return time.Time{}
}

// --- resources ---

type resources struct {
	at                                  time.Time
	issuerRSS, issuerGoroutines, issFDs float64
	sidecars                            map[int]proc // pid → process
}

// proc is one sidecar process: RSS in all and its anonymous part (heap and
// stacks; the rest is the binary's pages, which grow as new code paths run
// once, e.g. the first failure of each kind), in KiB.
type proc struct{ rss, anon, fds, threads int }

func sample(ctx context.Context, t *testing.T, s *scenario.Stack, metricsPort int) resources {
	r := resources{at: time.Now(), sidecars: map[int]proc{}}
	m, err := metrics(ctx, metricsPort)
	if err != nil {
		t.Logf("issuer metrics: %v", err)
	}
	r.issuerRSS, r.issuerGoroutines, r.issFDs = m["process_resident_memory_bytes"], m["go_goroutines"], m["process_open_fds"]
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink("/proc/" + e.Name() + "/exe"); err != nil || filepath.Base(exe) != "sts-creds-sidecar" {
			continue
		}
		status, _ := os.ReadFile("/proc/" + e.Name() + "/status")
		var p proc
		for _, line := range strings.Split(string(status), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "VmRSS:" {
				p.rss, _ = strconv.Atoi(f[1])
			}
			if len(f) >= 2 && f[0] == "RssAnon:" {
				p.anon, _ = strconv.Atoi(f[1])
			}
			if len(f) >= 2 && f[0] == "Threads:" {
				p.threads, _ = strconv.Atoi(f[1])
			}
		}
		fds, _ := os.ReadDir("/proc/" + e.Name() + "/fd")
		p.fds = len(fds)
		r.sidecars[pid] = p
	}
	return r
}

// sampler samples resources every 10 s. A Go process's RSS climbs with
// garbage until its heap reaches the collector's goal (4 MB at least, and a
// collection is forced every 2 minutes), so one sample says little; window
// sums up the samples since its last call as each process's lowest RSS (after
// a collection), the sidecars' highest descriptors and threads, and the
// issuer's lowest goroutines and descriptors.
type sampler struct {
	mu  sync.Mutex
	cur []resources
}

func (sm *sampler) run(ctx context.Context, t *testing.T, s *scenario.Stack, port int) {
	for {
		r := sample(ctx, t, s, port)
		sm.mu.Lock()
		sm.cur = append(sm.cur, r)
		sm.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
}

func (sm *sampler) window() resources {
	sm.mu.Lock()
	cur := sm.cur
	sm.cur = nil
	sm.mu.Unlock()
	w := resources{at: time.Now(), sidecars: map[int]proc{}}
	for _, r := range cur {
		if r.issuerRSS > 0 && (w.issuerRSS == 0 || r.issuerRSS < w.issuerRSS) {
			w.issuerRSS = r.issuerRSS
		}
		// The issuer's lowest goroutines and descriptors: what it holds
		// between requests. Its highest is whatever share of the sidecars'
		// retry herd after an outage a sample happened to meet (two
		// goroutines and a descriptor per connection); a leak raises the
		// floor.
		w.issuerGoroutines, w.issFDs = lowest(w.issuerGoroutines, r.issuerGoroutines), lowest(w.issFDs, r.issFDs)
		for pid, p := range r.sidecars {
			q, seen := w.sidecars[pid]
			if !seen || p.rss < q.rss {
				q.rss = p.rss
			}
			if !seen || p.anon < q.anon {
				q.anon = p.anon
			}
			q.fds, q.threads = max(q.fds, p.fds), max(q.threads, p.threads)
			w.sidecars[pid] = q
		}
	}
	return w
}

// lowest is the smaller of two readings, 0 (no reading: the issuer was
// down) counting as none.
func lowest(a, b float64) float64 {
	switch {
	case a == 0:
		return b
	case b == 0:
		return a
	}
	return min(a, b)
}

// metrics reads the unlabeled samples of an issuer's /metrics.
func metrics(ctx context.Context, port int) (map[string]float64, error) {
	out := map[string]float64{}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/metrics", port), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, _ := strings.Cut(sc.Text(), " ")
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// metric is one of them (0 when it cannot be read).
func metric(ctx context.Context, port int, name string) float64 {
	m, _ := metrics(ctx, port)
	return m[name]
}

// --- analysis ---

type window struct {
	name     string
	from, to time.Time // to: when the fault ended plus the sidecar's backoff maximum
	ended    time.Time
}

type podReport struct {
	name            string
	mode            string
	from, to        time.Time
	gap             time.Duration // red while the issuer and API server were reachable
	red             time.Duration // red in all
	reads, bad      int
	absent, expired int
	nokeys          int      // reads the consumer could not verify: the JWKS was unreachable
	jtis            []string // distinct tokens the application saw
	segments        []segment
	whyBad          []string // what the bad reads said, and when (from the start), distinct, the first few
}

type segment struct {
	from, to time.Time
	state    string
}

type report struct {
	start, end  time.Time
	pods        []*podReport
	faults      []window
	longest     map[string]time.Duration
	issued      int
	deadIssued  []string
	leaks       []string
	recoveredIn time.Duration
	resources   []resources
	deletions   map[string]time.Time
	fill        string // what the /tokens-full consumer saw when it filled the volume
}

var issuedLine = regexp.MustCompile(`"msg":"token issued".*"pod":"([^"]*)"`)

func analyze(rec *recorder, logs *logCollector, pods *podSet, start, end time.Time) *report {
	events := rec.snapshot()
	sort.SliceStable(events, func(i, j int) bool { return events[i].At < events[j].At })
	rep := &report{start: start, end: end, longest: map[string]time.Duration{}}
	pods.mu.Lock()
	rep.deletions = maps.Clone(pods.deleted)
	special := maps.Clone(pods.special)
	created := maps.Clone(pods.created)
	pods.mu.Unlock()

	var issuerReady time.Time
	for _, e := range events {
		if e.Kind == "issuer-ready" {
			issuerReady = time.UnixMilli(e.At)
		}
	}
	for _, e := range events {
		if e.Kind != "fault" {
			continue
		}
		w := window{name: e.Name, from: time.UnixMilli(e.At), ended: time.UnixMilli(e.Until)}
		switch {
		case strings.HasPrefix(e.Name, "every issuer"):
			w.to = issuerReady.Add(backoffMax)
		case strings.HasPrefix(e.Name, "API server"), strings.HasPrefix(e.Name, "etcd"):
			w.to = w.ended.Add(backoffMax)
		default:
			w.to = w.from // the issuer stays reachable: nothing is excused
		}
		rep.faults = append(rep.faults, w)
	}
	for _, e := range events {
		if e.Kind == "recovered" && !issuerReady.IsZero() {
			rep.recoveredIn = time.UnixMilli(e.At).Sub(issuerReady)
		}
	}

	byPod := map[string]*podReport{}
	var fills = map[string][2]time.Time{}
	for _, e := range events {
		if e.Pod == "" || e.Kind == "delete" {
			continue
		}
		p := byPod[e.Pod]
		if p == nil {
			p = &podReport{name: e.Pod, mode: special[e.Pod], from: created[e.Pod]}
			byPod[e.Pod] = p
			rep.pods = append(rep.pods, p)
		}
		at := time.UnixMilli(e.At)
		switch e.Kind {
		case "count":
			p.reads, p.bad, p.absent, p.expired, p.nokeys = e.Reads, e.Bad, e.Absent, e.Expired, e.NoKeys
		case "fill":
			f := fills[e.Pod]
			if e.Detail == "freed" {
				f[1] = at
			} else {
				f[0] = at
				rep.fill = e.Detail
			}
			fills[e.Pod] = f
		case "state":
			if n := len(p.segments); n > 0 {
				p.segments[n-1].to = at
			}
			p.segments = append(p.segments, segment{from: at, state: e.State})
			if e.State == "invalid" && e.Detail != "expired" && len(p.whyBad) < 5 {
				p.whyBad = append(p.whyBad, fmt.Sprintf("%q at +%v", e.Detail, at.Sub(start).Round(100*time.Millisecond)))
			}
			if e.JTI != "" && !slices.Contains(p.jtis, e.JTI) {
				p.jtis = append(p.jtis, e.JTI)
			}
		}
	}
	for _, p := range rep.pods {
		p.to = end
		if d, ok := rep.deletions[p.name]; ok {
			p.to = d
		}
		if n := len(p.segments); n > 0 && p.segments[n-1].to.IsZero() {
			p.segments[n-1].to = p.to
		}
		// The Pod's life counts from its first valid token.
		first := slices.IndexFunc(p.segments, func(s segment) bool { return s.state == "valid" })
		if first < 0 {
			continue
		}
		excused := slices.Clone(rep.faults)
		if f, ok := fills[p.name]; ok && !f[0].IsZero() {
			to := f[1]
			if to.IsZero() {
				to = end
			}
			excused = append(excused, window{name: "/tokens full", from: f[0], to: to.Add(backoffMax)})
		}
		for _, s := range p.segments[first:] {
			if s.state == "valid" || s.state == "stale" || !s.from.Before(p.to) {
				continue
			}
			to := earlier(s.to, p.to)
			d := to.Sub(s.from)
			p.red += d
			if p.mode == "remove-after-read" {
				continue // the file is gone after each read by design
			}
			unexcused := d
			for _, w := range excused {
				if o := overlap(s.from, to, w.from, w.to); o > 0 {
					unexcused -= o
					if o > rep.longest[w.name] {
						rep.longest[w.name] = o
					}
				}
			}
			if unexcused > 0 {
				p.gap += unexcused
			}
		}
	}

	// Tokens issued to Pods after their delete call returned (1 s for a
	// request already past its Pod check).
	for _, line := range logs.lines("sts-issuer") {
		m := issuedLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		rep.issued++
		at, ok := criTime(line)
		if d, gone := rep.deletions[m[1]]; ok && gone && at.After(d.Add(time.Second)) {
			rep.deadIssued = append(rep.deadIssued, fmt.Sprintf("%s at %s (deleted %s)", m[1], at.Format(time.StampMilli), d.Format(time.StampMilli)))
		}
	}
	for _, line := range logs.lines("") {
		if tokenLooking.MatchString(line) {
			rep.leaks = append(rep.leaks, flowTail(line))
		}
	}
	return rep
}

// tokenLooking matches base64url JSON of 30 characters or more: any JWT's
// header or claims (`{"` is `eyJ`), a whole token or a piece of one. Not a
// jti, which may contain `eyJ` by chance (22 characters in all; the long
// soak once logged `yghJleyJBCAY_CTcAGZFyQ`).
var tokenLooking = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{30,}`)

func flowTail(s string) string {
	if len(s) > 160 {
		return s[:160] + "..."
	}
	return s
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func overlap(a0, a1, b0, b1 time.Time) time.Duration {
	from, to := a0, a1
	if b0.After(from) {
		from = b0
	}
	if b1.Before(to) {
		to = b1
	}
	if to.After(from) {
		return to.Sub(from)
	}
	return 0
}

// redSpans lists when the Pod's application had no valid token.
func (p *podReport) redSpans() string {
	var out []string
	for _, s := range p.segments {
		if s.state != "valid" && s.state != "stale" {
			out = append(out, fmt.Sprintf("%s %s–%s", s.state, s.from.UTC().Format("15:04:05.0"), s.to.UTC().Format("15:04:05.0")))
		}
	}
	return strings.Join(out, ", ")
}

func (r *report) summary() string {
	var b strings.Builder
	var reads, bad, nokeys, gapPods int
	var gap, red time.Duration
	for _, p := range r.pods {
		reads += p.reads
		bad += p.bad
		nokeys += p.nokeys
		gap += p.gap
		red += p.red
		if p.gap > 0 {
			gapPods++
		}
	}
	fmt.Fprintf(&b, "soak: %v, %d Pods over the run (%d deleted by churn), %d tokens issued\n",
		r.end.Sub(r.start).Round(time.Second), len(r.pods), len(r.deletions), r.issued)
	fmt.Fprintf(&b, "%-44s %s\n", "tokens issued to deleted Pods", strconv.Itoa(len(r.deadIssued)))
	fmt.Fprintf(&b, "%-44s %.1f s (%d Pods)\n", "Pod-seconds without a valid token, reachable", gap.Seconds(), gapPods)
	fmt.Fprintf(&b, "%-44s %.1f s (all causes, incl. outages and remove-after-read)\n", "Pod-seconds without a valid token, in all", red.Seconds())
	fmt.Fprintf(&b, "%-44s %d of %d\n", "reads of a partial or unverifiable file", bad, reads)
	fmt.Fprintf(&b, "%-44s %d (JWKS unreachable: every issuer down)\n", "reads that could not be verified", nokeys)
	fmt.Fprintf(&b, "%-44s %d\n", "token-looking strings in our logs", len(r.leaks))
	fmt.Fprintf(&b, "\n%-40s %-6s %-12s %-14s\n", "fault", "times", "lasted (max)", "longest gap")
	var names []string
	times, lasted := map[string]int{}, map[string]time.Duration{}
	for _, f := range r.faults {
		if times[f.name] == 0 {
			names = append(names, f.name)
		}
		times[f.name]++
		lasted[f.name] = max(lasted[f.name], f.ended.Sub(f.from))
	}
	for _, n := range names {
		fmt.Fprintf(&b, "%-40s %-6d %-12v %-14v\n", n, times[n], lasted[n].Round(100*time.Millisecond), r.longest[n].Round(100*time.Millisecond))
	}
	if l, ok := r.longest["/tokens full"]; ok {
		fmt.Fprintf(&b, "%-40s %-6d %-12s %-14v %s\n", "/tokens full (one Pod)", 1, "30s", l.Round(100*time.Millisecond), r.fill)
	}
	fmt.Fprintf(&b, "recovery after every issuer was down: every Pod valid %v after the replicas were Ready (goal: within the backoff maximum, %v)\n",
		r.recoveredIn.Round(100*time.Millisecond), backoffMax)
	if a, z, bound, ok := r.flatness(); ok {
		fmt.Fprintf(&b, "\nresources (%s, %v apart; bound +%.0f%%):\n", r.flatWhat(), z.at.Sub(a.at).Round(time.Second), (bound-1)*100)
		fmt.Fprintf(&b, "  issuer replica A: RSS %.1f → %.1f MiB, goroutines %.0f → %.0f, fds %.0f → %.0f (the lowest of each window; each outage replaces the process)\n",
			a.issuerRSS/(1<<20), z.issuerRSS/(1<<20), a.issuerGoroutines, z.issuerGoroutines, a.issFDs, z.issFDs)
		was, is, n := sidecarSums(a, z)
		each := func(kib int) float64 { return float64(kib) / 1024 / float64(max(n, 1)) }
		fmt.Fprintf(&b, "  sidecars alive in both (%d): anonymous memory (heap, stacks) %.2f → %.2f MiB each; RSS %.2f → %.2f MiB each (the rest is the binary's pages); fds %d → %d, threads %d → %d in all (no goroutine count: the sidecar serves no metrics)\n",
			n, each(was.anon), each(is.anon), each(was.rss), each(is.rss), was.fds, is.fds, was.threads, is.threads)
	}
	if mib, n := r.anonTrajectory(); n > 0 {
		fmt.Fprintf(&b, "  sidecars alive throughout (%d): anonymous memory by window (warm-up, then each cycle), MiB each:", n)
		for _, m := range mib {
			fmt.Fprintf(&b, " %.2f", m)
		}
		fmt.Fprintf(&b, " (ceiling %d MiB)\n", sidecarAnonCeiling>>10)
	}
	return b.String()
}

// sidecarSums adds up the sidecars alive in both windows (by pid).
func sidecarSums(a, z resources) (was, is proc, n int) {
	return sidecarSumsOf(a, z, nil)
}

// sidecarSumsOf is sidecarSums over the pids in only (all when nil).
func sidecarSumsOf(a, z resources, only map[int]bool) (was, is proc, n int) {
	for pid, p := range a.sidecars {
		q, ok := z.sidecars[pid]
		if !ok || (only != nil && !only[pid]) {
			continue
		}
		n++
		was = proc{was.rss + p.rss, was.anon + p.anon, was.fds + p.fds, was.threads + p.threads}
		is = proc{is.rss + q.rss, is.anon + q.anon, is.fds + q.fds, is.threads + q.threads}
	}
	return was, is, n
}

// flatness picks the windows to compare. With two fault cycles or more:
// the middle of the run and its end, within 10% (for memory: the sidecars
// alive since the start). A sidecar's anonymous memory climbs for its first
// minutes, until the heap and the runtime's own
// structures reach their steady size (measured: about 8 minutes at one
// refresh every 45 s, then flat around 3.7 MiB while the live heap stays
// under 1 MB), so the first cycles are its warm-up. With one cycle (make
// test's short soak): the warm-up's and the cycle's, within 25%, for
// descriptors and the issuer; the sidecars' memory is held to
// sidecarAnonCeiling there.
func (r *report) flatness() (a, z resources, bound float64, ok bool) {
	switch n := len(r.resources); {
	case n >= 3:
		return r.resources[n/2], r.resources[n-1], 1.10, true
	case n == 2:
		return r.resources[0], r.resources[1], 1.25, true
	}
	return a, z, 0, false
}

// sidecarAnonCeiling bounds each sidecar's anonymous memory (its lowest in
// each window) in every window: the steady size measured, with room.
const sidecarAnonCeiling = 6 << 10 // KiB

func (r *report) flatWhat() string {
	if len(r.resources) >= 3 {
		return "middle of the run → its end; lowest memory, highest fds and threads of each"
	}
	return "warm-up → the cycle; lowest memory, highest fds and threads of each"
}

// throughout are the sidecars alive in every window: the ones past their
// warm-up by the middle of the run.
func (r *report) throughout() map[int]bool {
	out := map[int]bool{}
	if len(r.resources) == 0 {
		return out
	}
	for pid := range r.resources[0].sidecars {
		all := true
		for _, w := range r.resources[1:] {
			_, ok := w.sidecars[pid]
			all = all && ok
		}
		if all {
			out[pid] = true
		}
	}
	return out
}

// anonTrajectory is the mean anonymous memory (MiB) of the sidecars alive
// in every window, window by window.
func (r *report) anonTrajectory() (mib []float64, n int) {
	pids := slices.Sorted(maps.Keys(r.throughout()))
	if len(pids) == 0 {
		return nil, 0
	}
	for _, w := range r.resources {
		sum := 0
		for _, pid := range pids {
			sum += w.sidecars[pid].anon
		}
		mib = append(mib, float64(sum)/1024/float64(len(pids)))
	}
	return mib, len(pids)
}

// problems are the soak's failed claims, one sentence each.
func (r *report) problems() []string {
	var out []string
	bad := func(f string, a ...any) { out = append(out, fmt.Sprintf(f, a...)) }
	if len(r.deadIssued) > 0 {
		bad("tokens issued to deleted Pods: %v", r.deadIssued)
	}
	for _, p := range r.pods {
		if p.gap > 0 {
			bad("%s was without a valid token for %v while the issuer and the API server were reachable (%s)", p.name, p.gap, p.redSpans())
		}
		if p.bad > 0 {
			bad("%s: %d reads saw a partial or unverifiable file: %s", p.name, p.bad, strings.Join(p.whyBad, ", "))
		}
		if p.mode == "remove-after-read" && len(p.jtis) < 3 {
			bad("%s deletes the file after each read: only %d tokens were seen (the sidecar must write each refresh anew)", p.name, len(p.jtis))
		}
	}
	for i, w := range r.resources {
		for pid, p := range w.sidecars {
			if p.anon > sidecarAnonCeiling {
				bad("window %d: sidecar %d holds %.2f MiB of anonymous memory, above the %d MiB ceiling", i, pid, float64(p.anon)/1024, sidecarAnonCeiling>>10)
			}
		}
	}
	if !strings.HasPrefix(r.fill, "full after") {
		bad("the /tokens-full Pod did not fill its volume: %q", r.fill)
	}
	if len(r.leaks) > 0 {
		bad("token-looking strings in logs: %v", r.leaks)
	}
	if r.recoveredIn > backoffMax+5*time.Second {
		bad("every Pod held a valid token again only %v after the issuers were Ready (goal: within the backoff maximum %v)", r.recoveredIn, backoffMax)
	}
	if a, z, bound, ok := r.flatness(); ok {
		was, is, n := sidecarSums(a, z)
		if n == 0 {
			bad("no sidecar process lived through the soak")
		} else if is.fds > was.fds+n {
			bad("sidecars grew (%s): fds %d → %d (%d processes)", r.flatWhat(), was.fds, is.fds, n)
		}
		// Memory: only sidecars alive since the start, past their warm-up by
		// the middle of the run (younger ones, started by churn or restarted
		// during an outage, are still warming up; the ceiling holds them).
		if len(r.resources) >= 3 {
			if was, is, n := sidecarSumsOf(a, z, r.throughout()); n == 0 {
				bad("no sidecar lived through the whole soak")
			} else if float64(is.anon) > float64(was.anon)*bound {
				bad("sidecars alive throughout grew (%s): anonymous memory %d → %d KiB (%d processes; bound +%.0f%%)", r.flatWhat(), was.anon, is.anon, n, (bound-1)*100)
			}
		}
		// The issuer only in the long soak: in a one-cycle run the warm-up
		// and the cycle see different processes (the outage of every
		// replica replaces them) holding different shares of the sidecars'
		// connections, two goroutines each.
		if len(r.resources) >= 3 && (z.issuerGoroutines > a.issuerGoroutines*bound+5 || z.issFDs > a.issFDs*bound+5) {
			bad("issuer grew (%s): goroutines %v → %v, fds %v → %v", r.flatWhat(), a.issuerGoroutines, z.issuerGoroutines, a.issFDs, z.issFDs)
		}
	}
	return out
}

// --- outputs ---

func writeOutputs(dir string, rec *recorder, r *report, summary string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var lines strings.Builder
	for _, e := range rec.snapshot() {
		b, _ := json.Marshal(e)
		lines.Write(b)
		lines.WriteByte('\n')
	}
	return errors.Join(
		os.WriteFile(filepath.Join(dir, "events.jsonl"), []byte(lines.String()), 0o644),
		os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(summary), 0o644),
		os.WriteFile(filepath.Join(dir, "timeline.svg"), []byte(r.svg()), 0o644),
	)
}

var colors = map[string]string{"valid": "#2e9e44", "stale": "#e0a020", "absent": "#d03030", "invalid": "#d03030", "nokeys": "#8a6fd1"}

// svg draws one row per Pod, coloured by what its application read (green
// valid, amber past its refresh point, red absent or invalid), each fault
// as a band, and deletions as black ticks. A band is labelled with its
// fault's number, listed with the names above the picture; labels that would
// touch go to rows below each other (faultLabels).
func (r *report) svg() string {
	const left, rowH, width = 150.0, 12.0, 1000.0
	from := r.start.Add(-30 * time.Second)
	for _, p := range r.pods {
		if len(p.segments) > 0 && p.segments[0].from.Before(from) {
			from = p.segments[0].from
		}
	}
	span := r.end.Sub(from).Seconds()
	x := func(t time.Time) float64 { return left + width*t.Sub(from).Seconds()/span }

	// The faults' names, numbered in order of first appearance, as lines of
	// "n name" entries no wider than the picture; then the bands' labels.
	number := map[string]int{}
	var kinds []string
	for _, f := range r.faults {
		if number[f.name] == 0 {
			kinds = append(kinds, f.name)
			number[f.name] = len(kinds)
		}
	}
	var legendLines [][]string
	lineW := width + left
	for i, k := range kinds {
		entry := fmt.Sprintf("%d %s", i+1, k)
		if n := len(legendLines); n == 0 || lineW+textWidth(entry)+16 > width+left-8 {
			legendLines = append(legendLines, nil)
			lineW = 4
		}
		legendLines[len(legendLines)-1] = append(legendLines[len(legendLines)-1], entry)
		lineW += textWidth(entry) + 16
	}
	labelTop := 34 + labelRowH*float64(len(legendLines))
	xs, texts := make([]float64, len(r.faults)), make([]string, len(r.faults))
	for i, f := range r.faults {
		xs[i], texts[i] = x(f.from)+2, strconv.Itoa(number[f.name])
	}
	rows := faultLabels(xs, texts)
	nRows := 0
	for _, row := range rows {
		nRows = max(nRows, row+1)
	}
	top := labelTop + labelRowH*float64(nRows) + 8

	bottom := top + rowH*float64(len(r.pods))
	h := bottom + 50
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="10">`+"\n", left+width+20, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="4" y="14" font-size="12">kube-sts soak, %s UTC, %v: a row per Pod, coloured by what its application read every 100 ms</text>`+"\n",
		r.start.UTC().Format("2006-01-02 15:04"), r.end.Sub(r.start).Round(time.Second))
	bands := []string{"#3b5bdb", "#9c36b5"}
	for l, line := range legendLines {
		lx := 4.0
		for _, entry := range line {
			fmt.Fprintf(&b, `<text class="fault-name" x="%.1f" y="%.0f" fill="#333">%s</text>`+"\n", lx, 30+labelRowH*float64(l), html.EscapeString(entry))
			lx += textWidth(entry) + 16
		}
	}
	for i, f := range r.faults {
		c := bands[i%2]
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.0f" width="%.1f" height="%.0f" fill="%s" fill-opacity="0.13" stroke="%s" stroke-opacity="0.5"/>`+"\n",
			x(f.from), top-4, max(x(f.ended)-x(f.from), 1), bottom-top+8, c, c)
		fmt.Fprintf(&b, `<text class="fault" x="%.1f" y="%.0f" fill="%s">%s</text>`+"\n", xs[i], labelTop+labelRowH*float64(rows[i]), c, texts[i])
	}
	for i, p := range r.pods {
		y := top + rowH*float64(i)
		fmt.Fprintf(&b, `<text class="pod" x="4" y="%.1f">%s %s</text>`+"\n", y+9, p.name, p.mode)
		for _, s := range p.segments {
			if !s.from.Before(p.to) {
				continue
			}
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.2f" height="%.0f" fill="%s"/>`+"\n", x(s.from), y, max(x(earlier(s.to, p.to))-x(s.from), 0.3), rowH-2, colors[s.state])
		}
		if d, ok := r.deletions[p.name]; ok {
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="2" height="%.0f" fill="black"/>`+"\n", x(d), y-1, rowH)
		}
	}
	step := max(30, 30*int(span/300)) // about ten labels, on 30-second marks
	for sec := 0; float64(sec) <= span; sec += step {
		t := from.Add(time.Duration(sec) * time.Second)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" fill="#555">%s</text>`+"\n", x(t), bottom+16, t.UTC().Format("15:04:05"))
	}
	legend := []struct{ color, what string }{{colors["valid"], "valid token"}, {colors["stale"], "valid, past its refresh point"},
		{colors["absent"], "no valid token (absent, expired or unreadable)"}, {colors["nokeys"], "not verifiable: JWKS unreachable"}, {"black", "Pod deleted"}, {bands[0], "fault (its number: the names above)"}}
	lx := left
	for _, l := range legend {
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="10" height="10" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`+"\n", lx, bottom+28, l.color, lx+14, bottom+37, html.EscapeString(l.what))
		lx += 30 + 6*float64(len(l.what))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// labelRowH is the height of a row of fault labels (10 px text).
const labelRowH = 12.0

// textWidth is a generous estimate of a 10 px sans-serif text's width (the
// widest common glyphs are about 6.5 px; digits 5.6).
func textWidth(s string) float64 { return 7 * float64(len([]rune(s))) }

// faultLabels gives each label (left edge xs[i], text texts[i]) the first
// row in which its box touches no label placed before it, so that no two
// labels' boxes intersect however close the bands are.
func faultLabels(xs []float64, texts []string) []int {
	type span struct{ from, to float64 }
	rows := make([]int, len(xs))
	var placed [][]span // per row
	for i := range xs {
		me := span{xs[i] - 2, xs[i] + textWidth(texts[i]) + 2}
		row := 0
		for ; row < len(placed); row++ {
			if !slices.ContainsFunc(placed[row], func(o span) bool { return me.from < o.to && o.from < me.to }) {
				break
			}
		}
		if row == len(placed) {
			placed = append(placed, nil)
		}
		placed[row] = append(placed[row], me)
		rows[i] = row
	}
	return rows
}
