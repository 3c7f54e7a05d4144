package soak

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kube-sts/kube-sts/e2e/internal/flow"
	"github.com/kube-sts/kube-sts/e2e/internal/node"
	"github.com/kube-sts/kube-sts/e2e/internal/scenario"
	"github.com/kube-sts/kube-sts/shared/contract"
)

// startTimes measures what kube-sts adds to a Pod's start: the same Pod
// unlabeled; with an empty native sidecar (the floor: the Pod kube-sts's
// webhook makes, volumes and all, with a sidecar that only sleeps and no
// postStart hook); the same with a postStart exec hook that waits for
// nothing (the hook floor: what the kubelet and the runtime charge for
// running any exec hook, which kube-sts's sidecar needs so that later init
// containers start after the first token is on disk); labeled for kube-sts;
// kube-sts's Pod created as the webhook makes it (no webhook call at
// create), without and with the sidecar's readiness probe (its first run,
// a runtime exec as the app container is created, is why it is off by
// default); and labeled with Vault's injector too. n of each, created one
// at a time and interleaved, each round in a shuffled order, so that a
// slow spell of the shared node, or the teardown of the Pod before, falls
// on every kind alike. Each is the time from the create call to the
// application's first log line (the kubelet's nanosecond CRI timestamp).
// The report gives p50 with its 95% confidence interval, p95, and kube-sts
// over each floor at p50 with a bootstrap interval: the goal (≤ +100 ms
// over the empty-sidecar floor) is decided only when the whole interval is
// on one side of it.
func startTimes(ctx context.Context, t *testing.T, s *scenario.Stack, n int) string {
	injected, err := injectedPod(ctx, s)
	if err != nil {
		t.Errorf("the injected Pod: %v", err)
		return err.Error() + "\n"
	}
	floor := emptySidecar(injected)
	withProbe, withoutProbe := withReadinessProbe(injected), withoutReadinessProbe(injected)
	defaultProbe := sidecarOf(injected).ReadinessProbe != nil
	kinds := []*startKind{
		{name: "unlabeled", build: func(i int) *corev1.Pod { return plainPod(fmt.Sprintf("start-plain-%02d", i), false) }},
		{name: "empty native sidecar (floor)", role: roleFloor, build: func(i int) *corev1.Pod {
			p := floor.DeepCopy()
			p.Name = fmt.Sprintf("start-floor-%02d", i)
			return p
		}},
		{name: "the same with an exec postStart hook", role: roleHookFloor, build: func(i int) *corev1.Pod {
			p := floor.DeepCopy()
			p.Name = fmt.Sprintf("start-hook-%02d", i)
			withExecHook(p)
			return p
		}},
		{name: "kube-sts", role: roleOurs, build: func(i int) *corev1.Pod { return plainPod(fmt.Sprintf("start-sts-%02d", i), true) }},
		// The webhook's Pod created as it is (no webhook call at create),
		// without and with the sidecar's readiness probe: the probe's cost,
		// nothing else apart; the one as the shipped default makes it is
		// also kube-sts without the webhook's call at create.
		{name: roleNoProbe, role: roleNoProbe, asOurs: !defaultProbe, build: func(i int) *corev1.Pod {
			p := withoutProbe.DeepCopy()
			p.Name = fmt.Sprintf("start-noprobe-%02d", i)
			return p
		}},
		{name: roleProbe, role: roleProbe, asOurs: defaultProbe, build: func(i int) *corev1.Pod {
			p := withProbe.DeepCopy()
			p.Name = fmt.Sprintf("start-probe-%02d", i)
			return p
		}},
		{name: "kube-sts + Vault's injector", build: func(i int) *corev1.Pod {
			p := flow.ExamplePod(flow.PodOptions{Namespace: ns, Name: fmt.Sprintf("start-vault-%02d", i), Image: node.AppImage,
				PullPolicy: corev1.PullNever, Args: []string{"/etc/secrets/myenv"}, HostNetwork: true, VaultService: s.VaultAddr})
			p.Spec.TerminationGracePeriodSeconds = ptr.To[int64](1)
			return p
		}},
	}
	// Each round in its own shuffled order (a fixed seed): a Pod is deleted
	// as the next is created, and its teardown overlaps the next one's
	// start, so no kind may always follow the same one.
	rng := rand.New(rand.NewPCG(27, 1))
	for i := range n {
		for _, j := range rng.Perm(len(kinds)) {
			k := kinds[j]
			if k.failed {
				continue
			}
			st, err := startOne(ctx, s, k.build(i))
			if err != nil {
				t.Errorf("%s: %v", k.name, err)
				k.failed = true
				continue
			}
			k.took = append(k.took, st.app)
			if !st.sidecar.IsZero() {
				// The floors' sleeper has no token: its app phase counts
				// from the sleeper's start.
				k.toSidecar = append(k.toSidecar, st.sidecar.Sub(st.created))
				from := st.sidecar
				if !st.token.IsZero() {
					k.toToken = append(k.toToken, st.token.Sub(st.sidecar))
					from = st.token
				}
				k.toApp = append(k.toApp, st.created.Add(st.app).Sub(from))
				if !st.hookStart.IsZero() && !st.hookEnd.IsZero() {
					k.toHook = append(k.toHook, st.hookStart.Sub(st.sidecar))
					k.inHook = append(k.inHook, st.hookEnd.Sub(st.hookStart))
					k.hookToApp = append(k.hookToApp, st.created.Add(st.app).Sub(st.hookEnd))
				}
			}
		}
	}
	// Both hooks say in their container's log when they ran (kube-sts's
	// await: "token awaited"; the hook floor's: "hook ran").
	for _, k := range kinds {
		if (k.role == roleOurs || k.role == roleHookFloor || k.role == roleProbe || k.role == roleNoProbe) && len(k.took) > 0 && len(k.toHook) == 0 {
			t.Errorf("%s: no Pod's postStart hook said in its container's log when it ran", k.name)
		}
	}
	return startReport(kinds, n)
}

// startKind is one kind of Pod startTimes creates, and what it measured.
type startKind struct {
	name                      string
	role                      string // roleFloor, roleHookFloor, roleOurs, roleNoProbe, roleProbe or ""
	asOurs                    bool   // the Pod kube-sts makes, created without the webhook's call
	build                     func(i int) *corev1.Pod
	failed                    bool
	took                      []time.Duration
	toSidecar, toToken, toApp []time.Duration
	// The postStart hook's timing: container start → hook started, the
	// hook's run, hook done → app started.
	toHook, inHook, hookToApp []time.Duration
}

// The kinds startReport compares.
const (
	roleFloor     = "floor"
	roleHookFloor = "hook floor"
	roleOurs      = "kube-sts"
	roleNoProbe   = "created injected, no probe"
	roleProbe     = "created injected, with probe"
)

// withExecHook gives the floor's sidecar a postStart exec hook that exits
// at once (testapp true): the cost of running any exec hook.
func withExecHook(p *corev1.Pod) {
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for i := range cs {
			if cs[i].Name == "sleeper" {
				cs[i].Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"/testapp", "true"}}}}
			}
		}
	}
}

// startReport is startTimes' table and kube-sts's difference to each floor
// at p50.
func startReport(kinds []*startKind, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-40s %8s %19s %8s   %s\n", "Pod (create call → app's first log line)", "p50", "95% CI of p50", "p95", "p50 of: create → sidecar started, → token on disk, → app started")
	for _, k := range kinds {
		if len(k.took) == 0 {
			continue
		}
		phases := ""
		switch {
		case len(k.toToken) > 0:
			phases = fmt.Sprintf("%v, %v, %v", p50(k.toSidecar), p50(k.toToken), p50(k.toApp))
		case len(k.toSidecar) > 0:
			phases = fmt.Sprintf("%v, -, %v", p50(k.toSidecar), p50(k.toApp))
		}
		sorted := slices.Sorted(slices.Values(k.took))
		lo, hi := medianCI(sorted)
		fmt.Fprintf(&b, "%-40s %8v %19s %8v   %s\n", k.name, ms(median(sorted)), fmt.Sprintf("%v..%v", ms(lo), ms(hi)), ms(pct(sorted, 95)), phases)
	}
	fmt.Fprintf(&b, "(n=%d of each, one at a time, interleaved, each round in a shuffled order)\n", n)
	for _, k := range kinds {
		if len(k.toHook) > 0 {
			fmt.Fprintf(&b, "%-40s postStart hook (p50 of %d): started %v after the container's first line, ran %v, app started %v after it\n",
				k.name, len(k.toHook), p50(k.toHook), p50(k.inHook), p50(k.hookToApp))
		}
	}
	role := map[string]*startKind{}
	for _, k := range kinds {
		if k.role != "" && len(k.took) > 0 {
			role[k.role] = k
		}
	}
	ours := role[roleOurs]
	if floor := role[roleFloor]; floor != nil && ours != nil {
		d, lo, hi := medianDiffCI(ours.took, floor.took)
		verdict := "undecided at this n (the interval straddles +100 ms)"
		switch {
		case hi <= startGoal:
			verdict = "goal met"
		case lo > startGoal:
			verdict = "goal missed"
		}
		fmt.Fprintf(&b, "kube-sts over the empty-sidecar floor at p50: %s (95%% bootstrap CI %s..%s); goal ≤ +%v: %s\n",
			signed(d), signed(lo), signed(hi), startGoal, verdict)
	}
	if hook, floor := role[roleHookFloor], role[roleFloor]; hook != nil && floor != nil && ours != nil {
		d, lo, hi := medianDiffCI(hook.took, floor.took)
		fmt.Fprintf(&b, "an exec postStart hook that waits for nothing, over the floor at p50: %s (95%% bootstrap CI %s..%s)\n", signed(d), signed(lo), signed(hi))
		d, lo, hi = medianDiffCI(ours.took, hook.took)
		fmt.Fprintf(&b, "kube-sts over the hook floor at p50 (its exchange, write and await): %s (95%% bootstrap CI %s..%s)\n", signed(d), signed(lo), signed(hi))
	}
	for _, k := range kinds {
		if k.asOurs && len(k.took) > 0 && ours != nil {
			d, lo, hi := medianDiffCI(ours.took, k.took)
			fmt.Fprintf(&b, "kube-sts over its Pod created injected at p50 (the webhook at create): %s (95%% bootstrap CI %s..%s)\n", signed(d), signed(lo), signed(hi))
		}
	}
	if probed, bare := role[roleProbe], role[roleNoProbe]; probed != nil && bare != nil {
		d, lo, hi := medianDiffCI(probed.took, bare.took)
		fmt.Fprintf(&b, "the sidecar's readiness probe over the same Pod without it at p50: %s (95%% bootstrap CI %s..%s)\n", signed(d), signed(lo), signed(hi))
	}
	return b.String()
}

// startGoal is issue #27's bound on what kube-sts may add over the
// empty-sidecar floor at p50.
const startGoal = 100 * time.Millisecond

func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// signed is d in milliseconds with its sign: +30ms, -5ms.
func signed(d time.Duration) string {
	if d = ms(d); d >= 0 {
		return "+" + d.String()
	}
	return d.String()
}

// median of sorted samples (the mean of the middle two for an even count).
func median(sorted []time.Duration) time.Duration {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// medianCI is a distribution-free 95% confidence interval of the median of
// sorted samples: the order statistics at n/2 ∓ 0.98·√n (the normal
// approximation of the binomial; for n = 40, the 13th and 28th of 40). With
// fewer than 6 samples no such interval exists and it is the whole range.
func medianCI(sorted []time.Duration) (lo, hi time.Duration) {
	n := len(sorted)
	if n < 6 {
		return sorted[0], sorted[n-1]
	}
	half := 0.98 * math.Sqrt(float64(n))
	j := int(math.Floor(float64(n)/2 - half))    // 1-based rank
	k := int(math.Ceil(float64(n)/2 + 1 + half)) // 1-based rank
	return sorted[max(j, 1)-1], sorted[min(k, n)-1]
}

// medianDiffCI is median(a) − median(b) with a 95% percentile-bootstrap
// interval (2,000 resamples of each, a fixed seed: the same samples always
// give the same interval).
func medianDiffCI(a, b []time.Duration) (d, lo, hi time.Duration) {
	sa, sb := slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b))
	d = median(sa) - median(sb)
	rng := rand.New(rand.NewPCG(27, 100))
	resample := func(from, into []time.Duration) time.Duration {
		for i := range into {
			into[i] = from[rng.IntN(len(from))]
		}
		slices.Sort(into)
		return median(into)
	}
	const rounds = 2000
	diffs := make([]time.Duration, rounds)
	ra, rb := make([]time.Duration, len(a)), make([]time.Duration, len(b))
	for i := range diffs {
		diffs[i] = resample(sa, ra) - resample(sb, rb)
	}
	slices.Sort(diffs)
	return d, diffs[rounds*25/1000], diffs[rounds*975/1000-1]
}

// injectedPod is the Pod kube-sts's webhook makes of plainPod (asked with a
// dry-run create, so the shape is the webhook's own: volumes, mounts, native
// sidecar, hook, probe), without its label and annotations so that the
// webhook leaves it alone when it is created (the issuer does not look at
// either), and without what admission computes again on each create.
func injectedPod(ctx context.Context, s *scenario.Stack) (*corev1.Pod, error) {
	p, err := s.Env.Clientset.CoreV1().Pods(ns).Create(ctx, plainPod("start-injected-shape", true), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		return nil, err
	}
	if sidecarOf(p) == nil {
		return nil, fmt.Errorf("the webhook injected no sidecar into %s", p.Name)
	}
	out := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns}, Spec: p.Spec}
	out.Spec.NodeName, out.Spec.Priority, out.Spec.PreemptionPolicy = "", nil, nil
	return out, nil
}

// sidecarOf is the Pod's kube-sts sidecar: an init container when native, a
// container when classic (Kubernetes before native sidecars).
func sidecarOf(p *corev1.Pod) *corev1.Container {
	isSidecar := func(c corev1.Container) bool { return c.Name == contract.ContainerName }
	if i := slices.IndexFunc(p.Spec.InitContainers, isSidecar); i >= 0 {
		return &p.Spec.InitContainers[i]
	}
	if i := slices.IndexFunc(p.Spec.Containers, isSidecar); i >= 0 {
		return &p.Spec.Containers[i]
	}
	return nil
}

// emptySidecar is the injected Pod with its sidecar replaced by one that
// only sleeps (testapp printing /dev/null once a second), with the same
// volume mounts and security context, and no probes or postStart hook.
func emptySidecar(injected *corev1.Pod) *corev1.Pod {
	p := injected.DeepCopy()
	c := sidecarOf(p)
	*c = corev1.Container{Name: "sleeper", Image: node.AppImage, ImagePullPolicy: corev1.PullNever, Args: []string{"/dev/null"},
		RestartPolicy: c.RestartPolicy, VolumeMounts: c.VolumeMounts, SecurityContext: c.SecurityContext, Resources: c.Resources}
	return p
}

// withoutReadinessProbe is the injected Pod without the sidecar's readiness
// probe (readinessProbe: false, the default).
func withoutReadinessProbe(injected *corev1.Pod) *corev1.Pod {
	p := injected.DeepCopy()
	sidecarOf(p).ReadinessProbe = nil
	return p
}

// withReadinessProbe is the injected Pod with the readiness probe the
// webhook gives the sidecar under readinessProbe: true (as
// webhook/internal/inject's readinessProbe makes it; TestReadinessProbe
// there pins the command and period).
func withReadinessProbe(injected *corev1.Pod) *corev1.Pod {
	p := injected.DeepCopy()
	sidecarOf(p).ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{contract.SidecarBinary, contract.ModeProbe}}},
		PeriodSeconds: 10, TimeoutSeconds: 5, SuccessThreshold: 1, FailureThreshold: 1,
	}
	return p
}

// p50 is the median of unsorted samples, as the table's p50 column reckons it.
func p50(d []time.Duration) time.Duration {
	return ms(median(slices.Sorted(slices.Values(d))))
}

// started is when a Pod's parts started, from the kubelet's CRI log
// timestamps: the sidecar's (or the floors' sleeper's) first line, its
// first "token refreshed", its postStart hook's (await's "token awaited"
// line: its started field and the line's time; the hook floor's "hook ran"
// line), and the app's first line (app: since the create call).
type started struct {
	created            time.Time
	sidecar, token     time.Time
	hookStart, hookEnd time.Time
	app                time.Duration
}

var awaitedLine = regexp.MustCompile(`^(\S+) .*"msg":"token awaited".*"started":"([^"]+)"`)

// awaited is when the sidecar's await hook started and ended, from its
// "token awaited" line (zero: no such line).
func awaited(log string) (start, end time.Time) {
	for _, line := range strings.Split(log, "\n") {
		if m := awaitedLine.FindStringSubmatch(line); m != nil {
			e, err1 := time.Parse(time.RFC3339Nano, m[1])
			s, err2 := time.Parse("2006-01-02T15:04:05.000Z0700", m[2])
			if err1 == nil && err2 == nil {
				return s, e
			}
		}
	}
	return time.Time{}, time.Time{}
}

func pct(sorted []time.Duration, p int) time.Duration {
	return sorted[min(len(sorted)-1, (len(sorted)*p+99)/100-1)]
}

func plainPod(name string, labeled bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			HostNetwork: true, RestartPolicy: corev1.RestartPolicyNever, ServiceAccountName: flow.ServiceAccount,
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers:                    []corev1.Container{{Name: flow.AppContainer, Image: node.AppImage, ImagePullPolicy: corev1.PullNever, Args: []string{"/etc/hostname"}}},
		},
	}
	if labeled {
		p.Labels = map[string]string{"tremolo.io/" + flow.Label: "true"}
	}
	return p
}

// startOne creates the Pod, waits for its app's first log line and deletes it.
func startOne(ctx context.Context, s *scenario.Stack, pod *corev1.Pod) (started, error) {
	pods := s.Env.Clientset.CoreV1().Pods(ns)
	st := started{created: time.Now()}
	p, err := pods.Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return st, err
	}
	defer func() { _ = pods.Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}) }()
	deadline := st.created.Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if log, _ := s.Node.ContainerLog(p, flow.AppContainer); log != "" {
			if at, ok := criTime(log); ok {
				st.app = at.Sub(st.created)
				// Ours, or the floors' sleeper (whose first line is its start).
				if side, _ := s.Node.ContainerLog(p, contract.ContainerName); side != "" {
					st.sidecar, _ = criTime(side)
					st.token = firstAfter(side, `"msg":"token refreshed"`, st.created)
					st.hookStart, st.hookEnd = awaited(side)
				} else if side, _ := s.Node.ContainerLog(p, "sleeper"); side != "" {
					st.sidecar, _ = criTime(side)
					st.hookEnd = firstAfter(side, " hook ran", st.created)
					st.hookStart = st.hookEnd // it exits at once
				}
				return st, nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return st, fmt.Errorf("%s: the app wrote nothing within 2m", p.Name)
}

func TestMedianCI(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 40; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if lo, hi := medianCI(d); lo != 13*time.Millisecond || hi != 28*time.Millisecond {
		t.Errorf("n=40: CI %v..%v, want the 13th and 28th (13ms..28ms)", lo, hi)
	}
	if m := median(d); m != 20500*time.Microsecond {
		t.Errorf("median of 1..40 ms = %v, want 20.5ms", m)
	}
	if lo, hi := medianCI(d[:5]); lo != time.Millisecond || hi != 5*time.Millisecond {
		t.Errorf("n=5: CI %v..%v, want the whole range", lo, hi)
	}
}

func TestStartReportDecides(t *testing.T) {
	// n samples around base, spread ±spread (deterministic).
	around := func(base, spread time.Duration, n int) []time.Duration {
		var d []time.Duration
		for i := range n {
			d = append(d, base+spread*time.Duration(i%9-4)/4)
		}
		return d
	}
	for _, tc := range []struct {
		name          string
		floor, ours   []time.Duration
		verdict, diff string
	}{
		{"close to the floor", around(800*time.Millisecond, 20*time.Millisecond, 40), around(830*time.Millisecond, 20*time.Millisecond, 40), "goal met", "+30ms"},
		{"far above", around(800*time.Millisecond, 20*time.Millisecond, 40), around(1100*time.Millisecond, 20*time.Millisecond, 40), "goal missed", "+300ms"},
		{"too noisy to say", around(800*time.Millisecond, 400*time.Millisecond, 8), around(900*time.Millisecond, 400*time.Millisecond, 8), "undecided", "+100ms"},
	} {
		kinds := []*startKind{
			{name: "unlabeled", took: tc.floor},
			{name: "floor", role: roleFloor, took: tc.floor},
			{name: "hook floor", role: roleHookFloor, took: tc.floor},
			{name: "kube-sts", role: roleOurs, took: tc.ours},
			{name: "injected", role: roleNoProbe, asOurs: true, took: tc.floor},
			{name: "probed", role: roleProbe, took: tc.floor},
		}
		out := startReport(kinds, len(tc.ours))
		if !strings.Contains(out, tc.verdict) || !strings.Contains(out, "empty-sidecar floor at p50: "+tc.diff+" ") ||
			!strings.Contains(out, "hook floor at p50 (its exchange, write and await): "+tc.diff+" ") ||
			!strings.Contains(out, "waits for nothing, over the floor at p50: +0s ") ||
			!strings.Contains(out, "over its Pod created injected at p50 (the webhook at create): "+tc.diff+" ") ||
			!strings.Contains(out, "readiness probe over the same Pod without it at p50: +0s ") {
			t.Errorf("%s: want %q and %s in\n%s", tc.name, tc.verdict, tc.diff, out)
		}
	}
}

func TestAwaited(t *testing.T) {
	log := `2026-12-05T01:00:00.100000000Z stderr F {"level":"info","ts":"2026-12-05T01:00:00.090Z","msg":"token refreshed"}
2026-12-05T01:00:00.300000000Z stderr F {"level":"info","ts":"2026-12-05T01:00:00.299Z","msg":"token awaited","started":"2026-12-05T01:00:00.050Z","waited":0.249}
`
	start, end := awaited(log)
	if !start.Equal(time.Date(2026, 12, 5, 1, 0, 0, 50e6, time.UTC)) || !end.Equal(time.Date(2026, 12, 5, 1, 0, 0, 300e6, time.UTC)) {
		t.Errorf("awaited = %v, %v", start, end)
	}
	if s, e := awaited("2026-12-05T01:00:00.1Z stderr F no await here\n"); !s.IsZero() || !e.IsZero() {
		t.Errorf("awaited without the line = %v, %v", s, e)
	}
}
