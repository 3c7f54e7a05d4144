// Package upgrade upgrades kube-sts on the real node from the previous
// release to this tree and rolls it back, with labeled Pods refreshing
// one-minute tokens throughout: the previous release's chart and images are
// built from its tag's sources (cached), installed with helm, then `helm
// upgrade` brings this tree's chart and images and `helm rollback` the
// previous ones again.
//
// It asserts that no Pod is ever without a valid token (checked every
// second on the node's disk), that every Pod refreshes from the new issuer
// after each step (old sidecars against the new issuer, new sidecars
// against the old one), that every key survives (each token seen before a
// step still verifies against the JWKS after it), that the sidecars' only
// failed exchanges fall inside the upgrade and the rollback, that the
// issuer's discovery document (fetched every 250 ms) goes unanswered only
// then, and that labeled Pod creates are refused for no longer than the
// webhook's replacement takes (measured with server-side dry-run creates
// every 250 ms).
//
// On this node every Pod shares the host's network and each Deployment has
// one replica (two Pods of one Deployment would want one port), so each
// step replaces the only Pod: the gap is what the test measures. On a
// cluster with a Pod network the chart rolls with maxUnavailable 0 and a
// surge behind a PodDisruptionBudget, on the host network one Pod at a time
// with no surge; e2e/manifests checks those settings.
package upgrade

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/flow"
	"github.com/kube-sts/kube-sts/e2e/internal/node"
	"github.com/kube-sts/kube-sts/e2e/internal/scenario"
	"github.com/kube-sts/kube-sts/shared/contract"
)

var cp = &controlplane.Harness{ExtraAPIServerArgs: map[string][]string{"disable-admission-plugins": nil}}

func TestMain(m *testing.M) { os.Exit(cp.Main(m)) }

// The release upgraded from: its tag and the commit the tag names (the
// sources are taken from the commit, so a clone without tags works too).
const (
	previousVersion = "v0.1.0"
	previousCommit  = "92b05947150caa3122f9cc86c46077191f9985a9"
)

const ns = flow.Namespace

func TestUpgradeAndRollback(t *testing.T) {
	env := cp.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	c := env.Clientset

	ctrl, err := env.StartControllers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ctrl.Stop)
	cp.OnInterrupt(ctrl.Stop)
	s := scenario.Base(t, cp, env, t.Logf, "sts-issuer", "sts-webhook", "sts-creds-sidecar")

	t.Logf("building %s from commit %s (cached after the first run)", previousVersion, previousCommit[:12])
	prev, err := node.PreviousRelease(ctx, previousVersion, previousCommit)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range prev.Archives {
		if err := s.Node.ImportImage(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	prevImages := []string{"image.issuer.tag=" + prev.Version, "image.webhook.tag=" + prev.Version, "image.sidecar.tag=" + prev.Version}

	t.Logf("helm install %s", prev.Version)
	chart := scenario.InstallChart(ctx, t, s, scenario.ChartOptions{Chart: prev.Chart, ValueFiles: []string{"values.yaml"}, Set: prevImages})
	checkImages(ctx, t, s, prev.Version)
	if err := flow.PrepareNamespace(ctx, c, ns); err != nil {
		t.Fatal(err)
	}
	issuerURL := fmt.Sprintf("https://localhost:%d/vault", chart.IssuerPort)
	https := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: chart.Pool}}}
	jwks := func() []byte {
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
			resp, err := https.Get(issuerURL + "/jwks")
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return b
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no JWKS from %s: %v", issuerURL, err)
			}
		}
	}

	w := &watch{s: s}
	go w.admit(ctx)
	go w.discover(ctx, https, issuerURL+"/.well-known/openid-configuration")
	pods := []*corev1.Pod{}
	addPods := func(prefix string, n int) {
		for i := range n {
			p, err := c.CoreV1().Pods(ns).Create(ctx, labeledPod(fmt.Sprintf("%s-%d", prefix, i)), metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			pods = append(pods, p)
		}
		// Watched from their first token on.
		for _, p := range pods[len(pods)-n:] {
			waitToken(ctx, t, s, p)
			w.add(p)
		}
	}
	t.Logf("three labeled Pods with %s's sidecar", prev.Version)
	addPods("before", 3)
	go w.tokens(ctx)

	// Each step: helm, then every Pod must refresh from the new issuer
	// Pods, and every token seen before must verify against the JWKS.
	step := func(name string, run func() time.Duration, version string) {
		keysBefore := jwks()
		w.settle(ctx, len(pods))
		seenBefore := w.seenTokens()
		start := time.Now()
		took := run()
		w.mark(name, start, time.Now())
		checkImages(ctx, t, s, version)
		replaced := webhookReady(ctx, t, s).Sub(start)
		w.mark(name+" (webhook replaced)", start, start.Add(replaced))
		t.Logf("%s: helm took %v; the new webhook Pod was Ready %v after the start", name, took.Round(time.Second), replaced.Round(time.Second))
		refreshedAfter(ctx, t, s, w, pods, time.Now())
		keysAfter := jwks()
		for _, tok := range seenBefore {
			if err := flow.VerifyJWKS(keysAfter, tok); err != nil {
				t.Errorf("%s: a token issued before it does not verify against the JWKS after it: %v\nbefore: %s\nafter: %s", name, err, keysBefore, keysAfter)
				break
			}
		}
		t.Logf("%s: %d tokens issued before it verify against the JWKS after it", name, len(seenBefore))
	}

	step("upgrade to this tree", func() time.Duration {
		return chart.Upgrade(ctx, t, s, scenario.ChartOptions{ValueFiles: []string{"values.yaml"}})
	}, "e2e")
	t.Log("two labeled Pods with this tree's sidecar")
	addPods("after", 2)
	step("rollback to "+prev.Version, func() time.Duration { return chart.Rollback(ctx, t, s, 1) }, prev.Version)
	w.stop()

	// No Pod was ever without a valid token.
	if lapses := w.lapses(); len(lapses) > 0 {
		t.Errorf("a Pod was without a valid token: %s", strings.Join(lapses, "; "))
	} else {
		t.Logf("%d token checks (every Pod, every second), every one found a valid token", w.checks())
	}

	// Failed exchanges only while the issuer was being replaced.
	for _, p := range pods {
		log, _ := s.Node.ContainerLog(p, contract.ContainerName)
		for _, at := range flow.LogTimes(log, "exchange failed; retrying") {
			if !w.inStep(at, 35*time.Second) { // the sidecar's backoff is at most 30 s
				t.Errorf("%s: an exchange failed at %s, outside the upgrade and the rollback", p.Name, at.Format(time.RFC3339Nano))
			}
		}
		t.Logf("%s: %d refreshes, %d failed exchanges (retried)", p.Name, len(flow.LogTimes(log, "token refreshed")), len(flow.LogTimes(log, "exchange failed; retrying")))
	}

	// The issuer's discovery document: unanswered only during the steps.
	for i, st := range w.steps() {
		if i%2 == 0 {
			longest, failed, total := refusedWithin(w.discoveries(), st)
			t.Logf("%s: the issuer's discovery document unanswered %d of %d times, the longest run %v", st.name, failed, total, longest.Round(time.Millisecond))
		}
	}
	if out := w.refusedOutsideSteps(w.discoveries()); len(out) > 0 {
		t.Errorf("the issuer did not answer outside the upgrade and rollback: %s", strings.Join(out, "; "))
	}

	// Admissions refused no longer than the webhook's replacement took
	// (from the step's start to the new webhook Pod's Ready condition,
	// which has second resolution).
	all := w.steps()
	for i := 0; i+1 < len(all); i += 2 {
		st, replaced := all[i], all[i+1]
		longest, refused, total := refusedWithin(w.admitted(), st)
		t.Logf("%s: %d of %d dry-run creates of a labeled Pod refused, the longest run %v; the webhook was replaced in %v, helm took %v",
			st.name, refused, total, longest.Round(time.Millisecond), replaced.end.Sub(replaced.start).Round(time.Second), st.end.Sub(st.start).Round(time.Second))
		if longest > replaced.end.Sub(replaced.start)+time.Second {
			t.Errorf("%s: labeled Pods refused for %v, longer than the webhook's replacement (%v)", st.name, longest, replaced.end.Sub(replaced.start))
		}
	}
	if refusedOutside := w.refusedOutsideSteps(w.admitted()); len(refusedOutside) > 0 {
		t.Errorf("labeled Pod creates refused outside the upgrade and rollback: %s", strings.Join(refusedOutside, "; "))
	}
	for _, p := range pods {
		got, err := c.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range append(got.Status.InitContainerStatuses, got.Status.ContainerStatuses...) {
			if st.Name == contract.ContainerName && st.RestartCount > 0 {
				t.Errorf("%s: the sidecar restarted %d times", p.Name, st.RestartCount)
			}
		}
		if !scenario.Ready(got) {
			t.Errorf("%s is not Ready: %+v", p.Name, got.Status.Conditions)
		}
	}
}

// webhookReady is when the webhook's (one) Pod turned Ready.
func webhookReady(ctx context.Context, t *testing.T, s *scenario.Stack) time.Time {
	t.Helper()
	list, err := s.Env.Clientset.CoreV1().Pods(scenario.ReleaseNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=sts-webhook"})
	if err != nil {
		t.Fatal(err)
	}
	var ready time.Time
	for _, p := range list.Items {
		for _, c := range p.Status.Conditions {
			if p.DeletionTimestamp == nil && c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && c.LastTransitionTime.After(ready) {
				ready = c.LastTransitionTime.Time
			}
		}
	}
	if ready.IsZero() {
		t.Fatalf("no Ready webhook Pod\n%s", scenario.PodReport(ctx, s, scenario.ReleaseNS))
	}
	return ready
}

// labeledPod is a Pod for the vault-sts injector whose application only
// sleeps: the test reads the token from the node's disk.
func labeledPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{contract.SelectionLabel(flow.Label): "true"}},
		Spec: corev1.PodSpec{
			HostNetwork: true, ServiceAccountName: flow.ServiceAccount, TerminationGracePeriodSeconds: ptr.To[int64](5),
			Containers: []corev1.Container{{Name: "app", Image: node.PauseImage, ImagePullPolicy: corev1.PullNever}},
		},
	}
}

// checkImages: the issuer's and the webhook's Pods (all of them: the old
// ones are gone after helm --wait) run the images tagged version.
func checkImages(ctx context.Context, t *testing.T, s *scenario.Stack, version string) {
	t.Helper()
	list, err := s.Env.Clientset.CoreV1().Pods(scenario.ReleaseNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, c := range p.Spec.Containers {
			if !strings.HasSuffix(c.Image, ":"+version) {
				t.Fatalf("%s runs %s, want version %s", p.Name, c.Image, version)
			}
		}
	}
}

func readToken(s *scenario.Stack, p *corev1.Pod) (string, map[string]any, error) {
	raw, err := s.Node.ReadPodFile(p, "kubernetes.io~empty-dir", contract.VolumeName, contract.TokenFileName)
	if err != nil {
		return "", nil, err
	}
	claims, err := scenario.Claims(raw)
	return raw, claims, err
}

func waitToken(ctx context.Context, t *testing.T, s *scenario.Stack, p *corev1.Pod) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		if _, _, err := readToken(s, p); err == nil {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("%s: no token 2m after the create\n%s", p.Name, scenario.PodReport(ctx, s, ns))
		}
	}
}

// refreshedAfter waits until every Pod's token was issued after since (a
// one-minute token is refreshed at most 48 s after its issue).
func refreshedAfter(ctx context.Context, t *testing.T, s *scenario.Stack, w *watch, pods []*corev1.Pod, since time.Time) {
	t.Helper()
	for _, p := range pods {
		for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
			if _, claims, err := readToken(s, p); err == nil {
				if iat, ok := claims["iat"].(float64); ok && time.Unix(int64(iat), 0).After(since.Add(-time.Second)) {
					break
				}
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				log, _ := s.Node.ContainerLog(p, contract.ContainerName)
				t.Fatalf("%s: no token issued after %s\nsidecar:\n%s", p.Name, since.Format(time.RFC3339), flow.Tail(log, 2000))
			}
		}
	}
}

// probe is one dry-run create of a labeled Pod.
type probe struct {
	at      time.Time
	refused string // "" when admitted with the sidecar
}

type step struct {
	name       string
	start, end time.Time
}

// watch records, in the background, admissions and every Pod's token.
type watch struct {
	s *scenario.Stack

	mu         sync.Mutex
	admissions []probe
	discovery  []probe
	pods       []*corev1.Pod
	seen       map[string]string // jti -> token
	gaps       []string
	nChecks    int
	rounds     int // complete rounds of the token loop
	lastRound  int // Pods the last round checked
	stepList   []step
	done       chan struct{}
	stopOnce   sync.Once
}

func (w *watch) add(p *corev1.Pod) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pods = append(w.pods, p)
}

func (w *watch) mark(name string, start, end time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stepList = append(w.stepList, step{name, start, end})
}

func (w *watch) steps() []step {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]step(nil), w.stepList...)
}

func (w *watch) channel() chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done == nil {
		w.done = make(chan struct{})
	}
	return w.done
}

func (w *watch) stopped() <-chan struct{} { return w.channel() }

func (w *watch) stop() {
	ch := w.channel()
	w.stopOnce.Do(func() { close(ch) })
	time.Sleep(1500 * time.Millisecond) // the loops' last round
}

// admit dry-run creates a labeled Pod every 250 ms: the API server calls the
// mutating webhooks for a dry run as for a create (sideEffects: None).
func (w *watch) admit(ctx context.Context) {
	pods := w.s.Env.Clientset.CoreV1().Pods(ns)
	w.every(ctx, 250*time.Millisecond, func(i int) {
		at := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		got, err := pods.Create(rctx, labeledPod(fmt.Sprintf("dry-run-%d", i)), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		cancel()
		pr := probe{at: at}
		switch {
		case err != nil:
			pr.refused = err.Error()
		case got.Annotations[contract.InjectedAnnotation] != flow.Label:
			pr.refused = "admitted without the sidecar"
		}
		w.mu.Lock()
		w.admissions = append(w.admissions, pr)
		w.mu.Unlock()
	})
}

// every runs f (with the round's number) every period until the watch stops.
func (w *watch) every(ctx context.Context, period time.Duration, f func(int)) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-w.stopped():
			return
		case <-tick.C:
		}
		f(i)
	}
}

// discover fetches the issuer's discovery document every 250 ms.
func (w *watch) discover(ctx context.Context, client *http.Client, url string) {
	w.every(ctx, 250*time.Millisecond, func(int) {
		pr := probe{at: time.Now()}
		resp, err := client.Get(url)
		switch {
		case err != nil:
			pr.refused = err.Error()
		default:
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				pr.refused = resp.Status
			}
		}
		w.mu.Lock()
		w.discovery = append(w.discovery, pr)
		w.mu.Unlock()
	})
}

// tokens checks every Pod's token file every second: it must hold a token
// that has not expired.
func (w *watch) tokens(ctx context.Context) {
	w.every(ctx, time.Second, func(int) {
		w.mu.Lock()
		pods := append([]*corev1.Pod(nil), w.pods...)
		w.mu.Unlock()
		for _, p := range pods {
			raw, claims, err := readToken(w.s, p)
			now := time.Now()
			w.mu.Lock()
			w.nChecks++
			if w.seen == nil {
				w.seen = map[string]string{}
			}
			switch exp, _ := claims["exp"].(float64); {
			case err != nil:
				w.gaps = append(w.gaps, fmt.Sprintf("%s at %s: %v", p.Name, now.Format(time.RFC3339Nano), err))
			case !time.Unix(int64(exp), 0).After(now):
				w.gaps = append(w.gaps, fmt.Sprintf("%s at %s: the token expired at %s", p.Name, now.Format(time.RFC3339Nano), time.Unix(int64(exp), 0).Format(time.RFC3339)))
			default:
				jti, _ := claims["jti"].(string)
				w.seen[jti] = raw
			}
			w.mu.Unlock()
		}
		w.mu.Lock()
		w.rounds++
		w.lastRound = len(pods)
		w.mu.Unlock()
	})
}

// settle waits for a round of the token loop that started after the call
// and covered n Pods, so that seenTokens holds every Pod's current token.
func (w *watch) settle(ctx context.Context, n int) {
	w.mu.Lock()
	start := w.rounds
	w.mu.Unlock()
	for ctx.Err() == nil {
		w.mu.Lock()
		done := w.rounds > start+1 && w.lastRound >= n
		w.mu.Unlock()
		if done {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (w *watch) seenTokens() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.seen))
	for _, tok := range w.seen {
		out = append(out, tok)
	}
	return out
}

func (w *watch) lapses() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.gaps...)
}

func (w *watch) checks() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nChecks
}

// inStep says whether at falls in a step or within slack after its end.
func (w *watch) inStep(at time.Time, slack time.Duration) bool {
	for _, st := range w.steps() {
		if !at.Before(st.start) && !at.After(st.end.Add(slack)) {
			return true
		}
	}
	return false
}

func (w *watch) admitted() []probe {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]probe(nil), w.admissions...)
}

func (w *watch) discoveries() []probe {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]probe(nil), w.discovery...)
}

// refusedWithin is the longest run of failed probes in st (from the first
// failed probe to the next good one), how many failed and how many ran.
func refusedWithin(probes []probe, st step) (time.Duration, int, int) {
	var longest time.Duration
	var runStart time.Time
	failed, total := 0, 0
	for _, a := range probes {
		if a.at.Before(st.start) || a.at.After(st.end) {
			continue
		}
		total++
		switch {
		case a.refused != "":
			failed++
			if runStart.IsZero() {
				runStart = a.at
			}
		case !runStart.IsZero():
			longest = max(longest, a.at.Sub(runStart))
			runStart = time.Time{}
		}
	}
	if !runStart.IsZero() {
		longest = max(longest, st.end.Sub(runStart))
	}
	return longest, failed, total
}

// refusedOutsideSteps are the failed probes outside every step.
func (w *watch) refusedOutsideSteps(probes []probe) []string {
	var out []string
	for _, a := range probes {
		if a.refused != "" && !w.inStep(a.at, 0) {
			out = append(out, a.at.Format(time.RFC3339Nano)+": "+a.refused)
		}
	}
	sort.Strings(out)
	return out
}
