package soak

import (
	"fmt"
	"html"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAnalyze: the soak's verdicts on a made-up run, so that a soak that
// passes means what it says. A red stretch inside an outage (plus the
// backoff maximum) is excused, one outside is a gap; a token logged as
// issued after its Pod's deletion is counted; the remove-after-read Pod's
// absences are not gaps; the picture has a row per Pod.
func TestAnalyze(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	at := func(s float64) int64 { return t0.Add(time.Duration(s * float64(time.Second))).UnixMilli() }
	rec := &recorder{state: map[string]string{}}
	for _, e := range []Event{
		{Kind: "fault", Name: "etcd stopped for 20s", At: at(10), Until: at(30)},
		{Pod: "a", Kind: "state", State: "valid", JTI: "1", At: at(0)},
		{Pod: "a", Kind: "state", State: "invalid", Detail: "expired", At: at(25)}, // inside etcd + backoff: excused
		{Pod: "a", Kind: "state", State: "valid", JTI: "2", At: at(40)},
		{Pod: "a", Kind: "state", State: "absent", At: at(100)}, // reachable: a gap of 2 s
		{Pod: "a", Kind: "state", State: "valid", JTI: "3", At: at(102)},
		{Pod: "a", Kind: "count", Reads: 1000, Bad: 0, At: at(119)},
		{Pod: "r", Kind: "state", State: "valid", JTI: "1", At: at(0)},
		{Pod: "r", Kind: "state", State: "absent", At: at(0.1)},
		{Pod: "r", Kind: "state", State: "valid", JTI: "2", At: at(50)},
		{Pod: "r", Kind: "state", State: "absent", At: at(50.1)},
		{Pod: "r", Kind: "state", State: "valid", JTI: "3", At: at(100)},
		{Pod: "r", Kind: "state", State: "absent", At: at(100.1)},
		{Pod: "d", Kind: "state", State: "valid", JTI: "1", At: at(0)},
		{Pod: "f", Kind: "fill", Detail: "full after 1048576 bytes (no space left on device)", At: at(70)},
		{Pod: "f", Kind: "fill", Detail: "freed", At: at(100)},
		{Pod: "d", Kind: "state", State: "invalid", Detail: "unknown kid k2: signed by a key the issuer does not publish", At: at(4)},
		{Pod: "d", Kind: "state", State: "valid", JTI: "1", At: at(4.1)},
		{Pod: "d", Kind: "count", Reads: 10, Bad: 1, At: at(5)},
		{Pod: "a", Kind: "state", State: "nokeys", At: at(110)}, // the JWKS unreachable, inside no outage: a gap of 1 s
		{Pod: "a", Kind: "state", State: "valid", JTI: "3", At: at(111)},
	} {
		rec.add(e)
	}
	pods := &podSet{deleted: map[string]time.Time{"d": t0.Add(60 * time.Second)}, special: map[string]string{"r": "remove-after-read"},
		created: map[string]time.Time{"a": t0, "r": t0, "d": t0, "f": t0}}
	logs := &logCollector{logs: map[string]string{"kube-sts/iss/u/sts-issuer": strings.Join([]string{
		t0.Add(30*time.Second).Format(time.RFC3339Nano) + ` stdout F {"msg":"token issued","pod":"d"}`,
		t0.Add(62*time.Second).Format(time.RFC3339Nano) + ` stdout F {"msg":"token issued","pod":"d"}`,
	}, "\n")}}
	rep := analyze(rec, logs, pods, t0, t0.Add(120*time.Second))

	got := map[string]*podReport{}
	for _, p := range rep.pods {
		got[p.name] = p
	}
	if g := got["a"].gap; g != 3*time.Second {
		t.Errorf("a: gap %v, want 3s (absent 2 s, unverifiable 1 s; the 15 s inside the etcd fault are excused)", g)
	}
	if l := rep.longest["etcd stopped for 20s"]; l != 15*time.Second {
		t.Errorf("longest gap in the etcd fault %v, want 15s", l)
	}
	if g := got["r"].gap; g != 0 || len(got["r"].jtis) != 3 {
		t.Errorf("remove-after-read: gap %v, %d tokens; want 0 and 3", g, len(got["r"].jtis))
	}
	if got["d"].bad != 1 {
		t.Errorf("d: bad reads %d, want 1", got["d"].bad)
	}
	if rep.issued != 2 || len(rep.deadIssued) != 1 {
		t.Errorf("issued %d, to deleted Pods %v; want 2 and one", rep.issued, rep.deadIssued)
	}
	if p := rep.problems(); len(p) != 4 || !strings.Contains(strings.Join(p, "\n"), `d: 1 reads saw a partial or unverifiable file: "unknown kid k2: signed by a key the issuer does not publish" at +4s`) {
		t.Errorf("problems %q; want four: a's gap, d's gap and bad read (saying what it saw and when), the token for a deleted Pod", p)
	}
	svg := rep.svg()
	if n := strings.Count(svg, `<text class="pod"`); n != 4 || !strings.Contains(svg, "etcd stopped") {
		t.Errorf("the picture has %d rows (want 4) or lacks the fault band:\n%s", n, svg)
	}
	if !strings.Contains(rep.summary(), "tokens issued to deleted Pods                1\n") {
		t.Errorf("summary:\n%s", rep.summary())
	}
}

// TestSamplerWindow: a window keeps each process's lowest RSS (after a
// collection), the sidecars' highest descriptors and threads, the issuer's
// lowest goroutines and descriptors, and starts anew.
func TestSamplerWindow(t *testing.T) {
	sm := &sampler{cur: []resources{
		{issuerRSS: 30, issuerGoroutines: 20, issFDs: 9, sidecars: map[int]proc{7: {rss: 9000, anon: 3000, fds: 8, threads: 7}}},
		{issuerRSS: 25, issuerGoroutines: 26, issFDs: 8, sidecars: map[int]proc{7: {rss: 7000, anon: 3500, fds: 9, threads: 6}, 8: {rss: 100}}},
		{issuerRSS: 0, issuerGoroutines: 22, issFDs: 10, sidecars: map[int]proc{7: {rss: 8000, anon: 2000, fds: 8, threads: 8}}},
	}}
	w := sm.window()
	if w.issuerRSS != 25 || w.issuerGoroutines != 20 || w.issFDs != 8 {
		t.Errorf("issuer: RSS %v goroutines %v fds %v; want the lowest read of each: 25, 20, 8", w.issuerRSS, w.issuerGoroutines, w.issFDs)
	}
	if p := w.sidecars[7]; p != (proc{rss: 7000, anon: 2000, fds: 9, threads: 8}) || w.sidecars[8].rss != 100 {
		t.Errorf("sidecars %+v", w.sidecars)
	}
	if next := sm.window(); len(next.sidecars) != 0 || next.issuerRSS != 0 {
		t.Errorf("the next window holds old samples: %+v", next)
	}
}

func TestSidecarMemoryChecks(t *testing.T) {
	win := func(anon ...int) resources {
		r := resources{sidecars: map[int]proc{}}
		for pid, a := range anon {
			r.sidecars[pid+1] = proc{rss: a + 6000, anon: a, fds: 8, threads: 7}
		}
		return r
	}
	sidecarProblems := func(ws ...resources) []string {
		r := &report{resources: ws, fill: "full after 1s"}
		var out []string
		for _, p := range r.problems() {
			if strings.Contains(p, "sidecar") {
				out = append(out, p)
			}
		}
		return out
	}
	// Warm-up growth in the first cycles, then flat: passes.
	if p := sidecarProblems(win(2400, 2400), win(2900, 2900), win(3300, 3300), win(3600, 3600), win(3700, 3650), win(3750, 3700)); len(p) > 0 {
		t.Errorf("warm-up then flat: %v", p)
	}
	// Still climbing in the second half: a leak.
	if p := sidecarProblems(win(2400, 2400), win(2900, 2900), win(3300, 3300), win(3600, 3600), win(4200, 4200), win(4800, 4800)); len(p) != 1 || !strings.Contains(p[0], "sidecars alive throughout grew") {
		t.Errorf("growth in the second half: %v", p)
	}
	// A sidecar that started in the middle (churn) warms up in the second
	// half; the ones alive throughout are flat: passes.
	young := func(w resources, anon int) resources {
		w.sidecars[99] = proc{rss: anon + 6000, anon: anon, fds: 8, threads: 7}
		return w
	}
	if p := sidecarProblems(win(2400, 2400), win(2900, 2900), win(3300, 3300), young(win(3600, 3600), 2000), young(win(3650, 3600), 2900), young(win(3700, 3650), 3500)); len(p) > 0 {
		t.Errorf("a young sidecar warming up: %v", p)
	}
	// Above the ceiling in any window.
	if p := sidecarProblems(win(2400), win(7000)); len(p) != 1 || !strings.Contains(p[0], "above the 6 MiB ceiling") {
		t.Errorf("over the ceiling: %v", p)
	}
	// The short soak: no relative bound on memory, the ceiling only.
	if p := sidecarProblems(win(2400), win(3400)); len(p) > 0 {
		t.Errorf("short soak within the ceiling: %v", p)
	}
}

// TestTokenLooking: the log check finds a token or a piece of one, and not
// a jti that happens to contain eyJ.
func TestTokenLooking(t *testing.T) {
	jwt := "eyJhbGciOiJSUzI1NiIsImtpZCI6ImFiYyJ9.eyJzdWIiOiJvcGVudW5pc29uLWNwOnRlc3QtdmF1bHQ6Zm9yLXZhdWx0In0.c2ln"
	for line, want := range map[string]bool{
		`{"msg":"token refreshed","jti":"yghJleyJBCAY_CTcAGZFyQ"}`: false,
		`{"msg":"token issued","jti":"eyJeyJeyJeyJeyJeyJeyJe"}`:    false,
		`{"msg":"oops","token":"` + jwt + `"}`:                     true,
		`{"msg":"oops","claims":"` + jwt[37:97] + `"}`:             true,
		`{"msg":"exchange failed; retrying","error":"HTTP 503"}`:   false,
	} {
		if got := tokenLooking.MatchString(line); got != want {
			t.Errorf("%s: token-looking %v, want %v", line, got, want)
		}
	}
}

// TestTimelineLabelsLegible: the picture of a 15-minute soak (five cycles of
// every fault, bands seconds apart) labels every band with its fault's
// number, lists every fault's name once, and no two labels' boxes (as wide
// as textWidth estimates) intersect; the labels sit above the Pods' rows.
func TestTimelineLabelsLegible(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	rec := &recorder{state: map[string]string{}}
	cycle := 3 * time.Minute
	var names []string
	for c := range 5 {
		for _, f := range faultCycle() {
			from := t0.Add(time.Duration(c)*cycle + f.at)
			rec.add(Event{Kind: "fault", Name: f.name, At: from.UnixMilli(), Until: from.Add(20 * time.Second).UnixMilli()})
			if c == 0 {
				names = append(names, f.name)
			}
		}
	}
	// Two bands a second apart, the closest the labels can meet.
	rec.add(Event{Kind: "fault", Name: "one issuer replica killed", At: t0.Add(15 * time.Minute).UnixMilli(), Until: t0.Add(15*time.Minute + time.Second).UnixMilli()})
	rec.add(Event{Kind: "fault", Name: "webhook down for 30s", At: t0.Add(15*time.Minute + time.Second).UnixMilli(), Until: t0.Add(16 * time.Minute).UnixMilli()})
	rec.add(Event{Pod: "a", Kind: "state", State: "valid", JTI: "1", At: t0.UnixMilli()})
	rep := analyze(rec, &logCollector{logs: map[string]string{}}, &podSet{created: map[string]time.Time{"a": t0}}, t0, t0.Add(17*time.Minute))
	svg := rep.svg()

	type box struct {
		text       string
		x0, y0, x1 float64
		y1         float64
	}
	var labels, all []box
	re := regexp.MustCompile(`<text class="(fault|fault-name)" x="([0-9.]+)" y="([0-9.]+)"[^>]*>([^<]*)</text>`)
	for _, m := range re.FindAllStringSubmatch(svg, -1) {
		x, _ := strconv.ParseFloat(m[2], 64)
		y, _ := strconv.ParseFloat(m[3], 64)
		b := box{text: html.UnescapeString(m[4]), x0: x, y0: y - 10, x1: x + textWidth(html.UnescapeString(m[4])), y1: y + 2}
		all = append(all, b)
		if m[1] == "fault" {
			labels = append(labels, b)
		}
	}
	if len(labels) != 27 {
		t.Fatalf("%d band labels, want 27:\n%s", len(labels), svg)
	}
	for i, name := range names {
		if n := strings.Count(svg, ">"+html.EscapeString(fmt.Sprintf("%d %s", i+1, name))+"<"); n != 1 {
			t.Errorf("the fault %q is listed %d times as number %d, want once", name, n, i+1)
		}
	}
	for i, a := range all {
		for _, b := range all[i+1:] {
			if a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1 {
				t.Errorf("labels %q at (%.0f, %.0f) and %q at (%.0f, %.0f) overlap", a.text, a.x0, a.y1, b.text, b.x0, b.y1)
			}
		}
	}
	firstRow := regexp.MustCompile(`<text class="pod" x="4" y="([0-9.]+)"`).FindStringSubmatch(svg)
	rowY, _ := strconv.ParseFloat(firstRow[1], 64)
	for _, l := range labels {
		if l.y1 > rowY-9 {
			t.Errorf("label %q (bottom %.0f) reaches into the Pods' rows (first at %.0f)", l.text, l.y1, rowY-9)
		}
	}
}
