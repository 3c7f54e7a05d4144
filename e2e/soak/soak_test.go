// Package soak runs kube-sts on the real node for a while with faults around
// it: the chart installed as users install it (two issuer replicas behind a
// loopback load balancer, managed keys rotating every 90 s, one-minute
// tokens), labeled Pods whose application verifies its token every 100 ms,
// Pods created and deleted all along, and in cycles the API server
// restarted, etcd frozen, an issuer replica killed, the webhook down, every
// issuer down for longer than a token lives; beside them a consumer that
// deletes the file after each read and a Pod whose /tokens fills up.
//
// It asserts that no token is issued to a deleted Pod, that no live Pod is
// without a valid token while the issuer and the API server are reachable,
// that no read sees a partial or unverifiable file, that the sidecars' and
// the issuer's resources stay flat and that no token reaches a log; it
// writes dist/soak/events.jsonl, dist/soak/timeline.svg and a summary, and
// measures what kube-sts adds to a Pod's start.
//
// `make test` runs one 3-minute cycle (SOAK_DURATION) with 20 Pods
// (SOAK_PODS) and 3 start-time samples per kind of Pod (SOAK_START_SAMPLES:
// enough to prove that each kind starts and the report is made; deciding
// the start-time goal takes the long soak's 40); `make soak` 15 minutes
// (five cycles), 30 Pods and 40 samples.
package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kube-sts/kube-sts/e2e/internal/balancer"
	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/flow"
	"github.com/kube-sts/kube-sts/e2e/internal/node"
	"github.com/kube-sts/kube-sts/e2e/internal/procs"
	"github.com/kube-sts/kube-sts/e2e/internal/scenario"
	"github.com/kube-sts/kube-sts/shared/contract"
)

var cp = &controlplane.Harness{ExtraAPIServerArgs: map[string][]string{"disable-admission-plugins": nil}}

func TestMain(m *testing.M) { os.Exit(cp.Main(m)) }

const (
	ns         = flow.Namespace
	backoffMax = 30 * time.Second // the sidecar's default --backoff-max
	ttl        = time.Minute
)

func settings(t *testing.T) (time.Duration, int, string, int) {
	d, pods, out, starts := 3*time.Minute, 20, filepath.Join(procs.RepoRoot(), "dist", "soak"), 3
	num := func(name string, least int, into *int) {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < least {
				t.Fatalf("%s=%q: a number of at least %d", name, v, least)
			}
			*into = n
		}
	}
	num("SOAK_PODS", 5, &pods)
	num("SOAK_START_SAMPLES", 1, &starts)
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d < cycleLength {
			t.Fatalf("SOAK_DURATION=%q: a duration of at least %v", v, cycleLength)
		}
	}
	if v := os.Getenv("SOAK_OUT"); v != "" {
		out = v
	}
	return d, pods, out, starts
}

func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak runs minutes on the real node (make test runs it)")
	}
	duration, podCount, outDir, startSamples := settings(t)
	env := cp.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*duration+25*time.Minute)
	defer cancel()
	c := env.Clientset

	ctrl, err := env.StartControllers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ctrl.Stop)
	cp.OnInterrupt(ctrl.Stop)
	s := scenario.Base(t, cp, env, t.Logf, "sts-issuer", "sts-webhook", "sts-creds-sidecar")

	// The sidecars reach the issuer's replicas through a load balancer, as
	// through a Service (no kube-proxy here).
	lb := balancer.New(t)
	chart := scenario.InstallChart(ctx, t, s, scenario.ChartOptions{ValueFiles: []string{"values.yaml"}, IssuerURLPort: lb.Port})
	second := addIssuerReplica(ctx, t, s)
	lb.Set(chart.IssuerPort, second.port)
	issuerURL := fmt.Sprintf("https://localhost:%d/vault", lb.Port)
	t.Logf("chart installed in %v; two issuer replicas (ports %d, %d) behind %s", chart.Took.Round(time.Second), chart.IssuerPort, second.port, issuerURL)

	rec := newRecorder(t)
	logs := newLogCollector(s)
	go logs.run(ctx)

	if _, err := flow.ConfigureVault(s.VaultRunner(), flow.VaultConfig{IssuerURL: issuerURL, CAPEM: chart.CAPEM, TokenTTL: "10s", TokenMaxTTL: "20s"}); err != nil {
		t.Fatal(err)
	}
	s.StartVaultInjector(ctx, t)
	if err := flow.PrepareNamespace(ctx, c, ns); err != nil {
		t.Fatal(err)
	}

	pods := &podSet{s: s, rec: rec, jwks: issuerURL + "/jwks", ca: string(chart.CAPEM)}
	t.Logf("creating %d consumer Pods and 2 with Vault's agent", podCount)
	pods.create(ctx, t, "remove-after-read", "--remove-after-read")
	pods.create(ctx, t, "tokens-full", "--fill-at", "90s", "--fill-for", "30s")
	for i := 2; i < podCount; i++ {
		pods.create(ctx, t, "")
	}
	var vaultPods []*corev1.Pod
	for i := range 2 {
		p := flow.ExamplePod(flow.PodOptions{Namespace: ns, Name: fmt.Sprintf("vault-agent-%d", i), Image: node.AppImage,
			PullPolicy: corev1.PullNever, Args: []string{"/etc/secrets/myenv"}, HostNetwork: true, VaultService: s.VaultAddr})
		p, err := c.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		vaultPods = append(vaultPods, p)
	}
	if err := rec.waitAllValid(ctx, pods.names, 3*time.Minute); err != nil {
		t.Fatalf("%v\n%s", err, scenario.PodReport(ctx, s, ns))
	}
	start := time.Now()
	rec.mark("start", "", start, start)
	t.Logf("every Pod holds a valid token; soaking for %v", duration)

	// Churn: a few Pods a minute replaced, all along.
	churnCtx, stopChurn := context.WithCancel(ctx)
	var churn sync.WaitGroup
	churn.Go(func() { pods.churn(churnCtx, t, 20*time.Second) })

	// Resources are sampled every 10 s and summed up per window (the
	// warm-up, then each cycle): see sampler.
	sm := &sampler{}
	go sm.run(ctx, t, s, chart.IssuerMetricsPort)
	time.Sleep(30 * time.Second) // warm-up: every sidecar has refreshed once
	samples := []resources{sm.window()}

	// The faults come in cycles of cycleLength, as many as fit into the
	// duration; resources are sampled at the end of each.
	fe := &faultEnv{s: s, rec: rec, pods: pods, chart: chart, second: second, lb: lb}
	cycles := max(1, int(duration/cycleLength))
	for cycle := range cycles {
		cycleStart := start.Add(time.Duration(cycle) * cycleLength)
		for _, f := range faultCycle() {
			if wait := time.Until(cycleStart.Add(f.at)); wait > 0 {
				time.Sleep(wait)
			}
			t.Logf("cycle %d/%d, fault: %s", cycle+1, cycles, f.name)
			from := time.Now()
			detail := f.do(ctx, t, fe)
			rec.mark("fault", f.name, from, time.Now())
			fe.details = append(fe.details, fmt.Sprintf("cycle %d, %s: %s", cycle+1, f.name, detail))
			t.Logf("fault over after %v %s", time.Since(from).Round(100*time.Millisecond), detail)
		}
		if wait := time.Until(cycleStart.Add(cycleLength)); wait > 0 {
			time.Sleep(wait)
		}
		samples = append(samples, sm.window())
	}
	stopChurn()
	churn.Wait()
	end := time.Now()
	rec.mark("end", "", end, end)
	logs.collect(ctx)

	// The Vault agents log in again with fresh tokens after everything.
	vaultBack := vaultRelogin(ctx, t, s, rec, vaultPods)

	rep := analyze(rec, logs, pods, start, end)
	rep.resources = samples
	summary := rep.summary() + "\n" + strings.Join(fe.details, "\n") + "\n" + vaultBack
	t.Logf("measuring Pod start times (%d of each kind)", startSamples)
	summary += "\nPod start time:\n" + startTimes(ctx, t, s, startSamples)
	t.Log("\n" + summary)
	if err := writeOutputs(outDir, rec, rep, summary); err != nil {
		t.Error(err)
	}
	for _, p := range rep.problems() {
		t.Error(p)
	}
}

// vaultRelogin waits until every Vault agent has logged in after the issuers
// came back, and the apps still have their secret.
func vaultRelogin(ctx context.Context, t *testing.T, s *scenario.Stack, rec *recorder, pods []*corev1.Pod) string {
	var ready time.Time
	for _, e := range rec.snapshot() {
		if e.Kind == "issuer-ready" {
			ready = time.UnixMilli(e.At)
		}
	}
	var out strings.Builder
	for _, p := range pods {
		deadline := time.Now().Add(6 * time.Minute) // Vault agent's auth backoff grows to minutes
		for {
			agent, _ := s.Node.ContainerLog(p, "vault-agent")
			if at := firstAfter(agent, "authentication successful", ready); !at.IsZero() {
				fmt.Fprintf(&out, "%s: Vault's agent logged in again %v after the issuers were last Ready\n", p.Name, at.Sub(ready).Round(100*time.Millisecond))
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				t.Errorf("%s: Vault's agent did not log in after the issuers came back:\n%s", p.Name, flow.Tail(agent, 1500))
				break
			}
			time.Sleep(time.Second)
		}
		if l, _ := s.Node.ContainerLog(p, flow.AppContainer); !strings.Contains(l, flow.SecretLine) {
			t.Errorf("%s: the app lost its Vault secret", p.Name)
		}
	}
	return out.String()
}

// faultEnv is what a fault may touch.
type faultEnv struct {
	s       *scenario.Stack
	rec     *recorder
	pods    *podSet
	chart   *scenario.Chart
	second  *replica
	lb      *balancer.Balancer
	details []string // what each fault did and measured
}

type fault struct {
	name string
	at   time.Duration
	do   func(ctx context.Context, t *testing.T, e *faultEnv) string
}

// cycleLength is one round of every fault; the last (every issuer down for
// longer than a token lives) runs over it by its recovery.
const cycleLength = 3 * time.Minute

// faultCycle is every fault once, at offsets into a cycle.
func faultCycle() []fault {
	frac := func(f float64) time.Duration { return time.Duration(float64(cycleLength) * f) }
	return []fault{
		{"API server restarted", frac(0.05), func(ctx context.Context, t *testing.T, e *faultEnv) string {
			down, err := e.s.Env.RestartAPIServer(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return fmt.Sprintf("API server unreachable for %v", down.Round(100*time.Millisecond))
		}},
		{"etcd stopped for 20s", frac(0.14), func(ctx context.Context, t *testing.T, e *faultEnv) string {
			if err := e.s.Env.FreezeEtcd(ctx, 20*time.Second); err != nil {
				t.Fatal(err)
			}
			return "etcd frozen (SIGSTOP) for 20s"
		}},
		{"one issuer replica killed", frac(0.27), killOneIssuer},
		{"webhook down for 30s", frac(0.36), webhookDown},
		{"every issuer replica down for ttl+15s", frac(0.50), func(ctx context.Context, t *testing.T, e *faultEnv) string {
			return issuersDown(ctx, t, e, ttl+15*time.Second)
		}},
	}
}

// --- the Pods ---

type podSet struct {
	s        *scenario.Stack
	rec      *recorder
	jwks, ca string

	mu      sync.Mutex
	n       int
	live    []*corev1.Pod
	deleted map[string]time.Time // name → when the delete call returned
	special map[string]string    // name → mode
	created map[string]time.Time
}

func (p *podSet) names() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, x := range p.live {
		out = append(out, x.Name)
	}
	return out
}

// create starts a labeled Pod whose application is `testapp consume`.
func (p *podSet) create(ctx context.Context, t *testing.T, mode string, args ...string) {
	t.Helper()
	if err := p.tryCreate(ctx, mode, args...); err != nil {
		t.Fatal(err)
	}
}

func (p *podSet) tryCreate(ctx context.Context, mode string, args ...string) error {
	p.mu.Lock()
	name := fmt.Sprintf("soak-%03d", p.n)
	p.n++
	p.mu.Unlock()
	mounts := []corev1.VolumeMount(nil)
	if mode != "" { // these write to /tokens: their own read-write mount of the volume
		mounts = []corev1.VolumeMount{{Name: contract.VolumeName, MountPath: contract.MountPath}}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"tremolo.io/" + flow.Label: "true"}},
		Spec: corev1.PodSpec{
			HostNetwork: true, RestartPolicy: corev1.RestartPolicyNever, ServiceAccountName: flow.ServiceAccount,
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			Containers: []corev1.Container{{
				Name: "consumer", Image: node.AppImage, ImagePullPolicy: corev1.PullNever,
				Args: append([]string{"consume", "--jwks", p.jwks, "--report", p.rec.url}, args...),
				Env: []corev1.EnvVar{
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "CA_PEM", Value: p.ca},
				},
				VolumeMounts: mounts,
				// The sidecar writes the token as 100:1000 (the webhook's
				// default user and group); the application reads it as such.
				SecurityContext: &corev1.SecurityContext{RunAsUser: ptr.To[int64](100), RunAsGroup: ptr.To[int64](1000)},
			}},
		},
	}
	created, err := p.s.Env.Clientset.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.live = append(p.live, created)
	if p.created == nil {
		p.created, p.deleted, p.special = map[string]time.Time{}, map[string]time.Time{}, map[string]string{}
	}
	p.created[name] = time.Now()
	if mode != "" {
		p.special[name] = mode
	}
	return nil
}

// churn replaces the oldest ordinary Pod every interval.
func (p *podSet) churn(ctx context.Context, t *testing.T, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		p.mu.Lock()
		var victim *corev1.Pod
		for i, x := range p.live {
			if p.special[x.Name] == "" {
				victim = x
				p.live = append(p.live[:i:i], p.live[i+1:]...)
				break
			}
		}
		p.mu.Unlock()
		if victim == nil {
			continue
		}
		if err := p.s.Env.Clientset.CoreV1().Pods(ns).Delete(ctx, victim.Name, metav1.DeleteOptions{}); err != nil {
			// The API server may be down (a fault): the Pod lives on.
			t.Logf("churn: delete %s: %v", victim.Name, err)
			p.mu.Lock()
			p.live = append(p.live, victim)
			p.mu.Unlock()
			continue
		}
		now := time.Now()
		p.mu.Lock()
		p.deleted[victim.Name] = now
		p.mu.Unlock()
		p.rec.mark("delete", victim.Name, now, now)
		if err := p.tryCreate(ctx, ""); err != nil {
			// The webhook may be down (a fault): the create is refused, as it must be.
			t.Logf("churn: %v", err)
		}
	}
}

// --- faults ---

// killOneIssuer waits for a key rotation (the managed Secret written: a key
// added, or the signing key switched) and kills an issuer replica right then.
func killOneIssuer(ctx context.Context, t *testing.T, e *faultEnv) string {
	c := e.s.Env.Clientset
	secrets := c.CoreV1().Secrets(scenario.ReleaseNS)
	rotation := "no rotation within 100 s"
	if before, err := secrets.Get(ctx, "kube-sts-vault-keys", metav1.GetOptions{}); err == nil {
		for deadline := time.Now().Add(100 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if now, err := secrets.Get(ctx, "kube-sts-vault-keys", metav1.GetOptions{}); err == nil && now.ResourceVersion != before.ResourceVersion {
				rotation = "right after a rotation wrote the managed key Secret"
				break
			}
		}
	}
	pods, err := c.CoreV1().Pods(scenario.ReleaseNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=sts-issuer"})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("issuer Pods: %v", err)
	}
	victim := pods.Items[0]
	if err := c.CoreV1().Pods(scenario.ReleaseNS).Delete(ctx, victim.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	back := waitPods(ctx, t, e.s, "app.kubernetes.io/name=sts-issuer", 2)
	return fmt.Sprintf("killed %s %s; two replicas Ready again after %v", victim.Name, rotation, back.Round(100*time.Millisecond))
}

// webhookDown scales the webhook to 0 for 30 s: labeled creates are refused
// with the failurePolicy message, unlabeled ones go through.
func webhookDown(ctx context.Context, t *testing.T, e *faultEnv) string {
	c := e.s.Env.Clientset
	if err := scenario.Scale(ctx, e.s, scenario.ReleaseNS, "kube-sts-webhook", 0); err != nil {
		t.Fatal(err)
	}
	from := time.Now()
	waitPods(ctx, t, e.s, "app.kubernetes.io/name=sts-webhook", 0)
	labeled := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "refused-", Namespace: ns, Labels: map[string]string{"tremolo.io/" + flow.Label: "true"}},
		Spec: corev1.PodSpec{HostNetwork: true, ServiceAccountName: flow.ServiceAccount, Containers: []corev1.Container{{Name: "app", Image: node.AppImage, ImagePullPolicy: corev1.PullNever, Args: []string{"/etc/hostname"}}}}}
	_, err := c.CoreV1().Pods(ns).Create(ctx, labeled, metav1.CreateOptions{})
	refused := err != nil && strings.Contains(err.Error(), "failed calling webhook")
	if !refused {
		t.Errorf("a labeled Pod created while the webhook was down: got %v, want the failurePolicy: Fail refusal", err)
	}
	plain := labeled.DeepCopy()
	plain.GenerateName, plain.Labels = "plain-", nil
	created, err := c.CoreV1().Pods(ns).Create(ctx, plain, metav1.CreateOptions{})
	if err != nil {
		t.Errorf("an unlabeled Pod was refused while the webhook was down: %v", err)
	} else {
		_ = c.CoreV1().Pods(ns).Delete(ctx, created.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	}
	if rest := 30*time.Second - time.Since(from); rest > 0 {
		time.Sleep(rest)
	}
	if err := scenario.Scale(ctx, e.s, scenario.ReleaseNS, "kube-sts-webhook", 1); err != nil {
		t.Fatal(err)
	}
	back := waitPods(ctx, t, e.s, "app.kubernetes.io/name=sts-webhook", 1)
	return fmt.Sprintf("a labeled create refused with the failurePolicy message: %v, an unlabeled one created: %v; Ready again %v after the scale-up",
		refused, created != nil, back.Round(100*time.Millisecond))
}

// issuersDown scales both issuer Deployments to 0 for d, then back, and
// measures the herd: the replicas' peak in-flight exchanges, the API
// server's TokenReviews per second, and the time until every live Pod
// holds a valid token.
func issuersDown(ctx context.Context, t *testing.T, e *faultEnv, d time.Duration) string {
	names := []string{"kube-sts-issuer", e.second.name}
	for _, name := range names {
		if err := scenario.Scale(ctx, e.s, scenario.ReleaseNS, name, 0); err != nil {
			t.Fatal(err)
		}
	}
	waitPods(ctx, t, e.s, "app.kubernetes.io/name=sts-issuer", 0)
	time.Sleep(d)
	for _, name := range names {
		if err := scenario.Scale(ctx, e.s, scenario.ReleaseNS, name, 1); err != nil {
			t.Fatal(err)
		}
	}
	up := time.Now()
	reviews := watchTokenReviews(ctx, e.s)
	ready := waitPods(ctx, t, e.s, "app.kubernetes.io/name=sts-issuer", 2)
	readyAt := up.Add(ready)
	e.rec.mark("issuer-ready", "", readyAt, readyAt)
	if err := e.rec.waitAllValid(ctx, e.pods.names, 3*time.Minute); err != nil {
		t.Error(err)
	}
	e.rec.mark("recovered", "", time.Now(), time.Now())
	recovered := time.Since(readyAt)
	peakRate := reviews()
	var peaks []string
	for _, port := range []int{e.chart.IssuerMetricsPort, e.second.metricsPort} {
		peaks = append(peaks, strconv.Itoa(int(metric(ctx, port, "sts_issuer_exchanges_in_flight_peak"))))
	}
	return fmt.Sprintf("replicas Ready %v after the scale-up; every Pod valid %v after that; peak in-flight exchanges per replica %s (cap 512); peak %d TokenReviews/s at the API server (the issuer's client allows 1000/s)",
		ready.Round(100*time.Millisecond), recovered.Round(100*time.Millisecond), strings.Join(peaks, ", "), peakRate)
}

// watchTokenReviews samples the API server's TokenReview count every second
// until the returned func is called, which stops and gives the peak rate.
func watchTokenReviews(ctx context.Context, s *scenario.Stack) func() int {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan int)
	go func() {
		peak, last := 0, -1
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			raw, err := s.Env.Clientset.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
			if err == nil {
				n := 0
				for _, line := range strings.Split(string(raw), "\n") {
					if strings.HasPrefix(line, "apiserver_request_total{") && strings.Contains(line, `resource="tokenreviews"`) {
						f := strings.Fields(line)
						v, _ := strconv.ParseFloat(f[len(f)-1], 64)
						n += int(v)
					}
				}
				if last >= 0 && n-last > peak {
					peak = n - last
				}
				last = n
			}
			select {
			case <-ctx.Done():
				done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return func() int { cancel(); return <-done }
}

// waitPods waits until exactly n Ready, non-terminating Pods match sel.
func waitPods(ctx context.Context, t *testing.T, s *scenario.Stack, sel string, n int) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		pods, err := s.Env.Clientset.CoreV1().Pods(scenario.ReleaseNS).List(ctx, metav1.ListOptions{LabelSelector: sel})
		ready, all := 0, 0
		if err == nil {
			for i := range pods.Items {
				all++
				if pods.Items[i].DeletionTimestamp == nil && scenario.Ready(&pods.Items[i]) {
					ready++
				}
			}
			if ready == n && (n > 0 || all == 0) {
				return time.Since(start)
			}
		}
		if time.Since(start) > 3*time.Minute {
			t.Fatalf("%s: %d Ready of %d, want %d\n%s", sel, ready, all, n, scenario.PodReport(ctx, s, scenario.ReleaseNS))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// --- the second issuer replica and the load balancer ---

type replica struct {
	name              string
	port, metricsPort int
}

// addIssuerReplica runs a second issuer replica: the chart's Deployment
// copied onto other ports (host-network Pods of one Deployment would share
// a port on this one node), same ServiceAccount, configuration and keys.
func addIssuerReplica(ctx context.Context, t *testing.T, s *scenario.Stack) *replica {
	t.Helper()
	api := s.Env.Clientset.AppsV1().Deployments(scenario.ReleaseNS)
	d, err := api.Get(ctx, "kube-sts-issuer", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{name: "kube-sts-issuer-b", port: procs.FreePort(t), metricsPort: procs.FreePort(t)}
	b := d.DeepCopy()
	b.ObjectMeta = metav1.ObjectMeta{Name: r.name, Namespace: d.Namespace, Labels: d.Labels}
	b.Status = appsv1.DeploymentStatus{}
	b.Spec.Selector.MatchLabels["soak-replica"] = "b"
	b.Spec.Template.Labels["soak-replica"] = "b"
	ctr := &b.Spec.Template.Spec.Containers[0]
	for i, a := range ctr.Args {
		switch {
		case strings.HasPrefix(a, "--listen="):
			ctr.Args[i] = fmt.Sprintf("--listen=127.0.0.1:%d", r.port)
		case strings.HasPrefix(a, "--metrics-listen="):
			ctr.Args[i] = fmt.Sprintf("--metrics-listen=127.0.0.1:%d", r.metricsPort)
		}
	}
	for i := range ctr.Ports {
		switch ctr.Ports[i].Name {
		case "https":
			ctr.Ports[i].ContainerPort = int32(r.port)
		case "metrics":
			ctr.Ports[i].ContainerPort = int32(r.metricsPort)
		}
	}
	if _, err := api.Create(ctx, b, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPods(ctx, t, s, "app.kubernetes.io/name=sts-issuer", 2)
	return r
}

// --- the recorder: the consumers' events, the test's marks ---

// Event is one line of events.jsonl: a consumer's report (kind state,
// count, fill) or a mark of the test (start, end, fault, delete,
// issuer-ready, recovered).
type Event struct {
	Pod     string `json:"pod,omitempty"`
	At      int64  `json:"at_ms"`
	Until   int64  `json:"until_ms,omitempty"`
	Kind    string `json:"kind"`
	Name    string `json:"name,omitempty"`
	State   string `json:"state,omitempty"`
	Detail  string `json:"detail,omitempty"`
	JTI     string `json:"jti,omitempty"`
	Exp     int64  `json:"exp,omitempty"`
	Reads   int    `json:"reads,omitempty"`
	Bad     int    `json:"bad,omitempty"`
	Absent  int    `json:"absent,omitempty"`
	Expired int    `json:"expired,omitempty"`
	NoKeys  int    `json:"nokeys,omitempty"`
}

type recorder struct {
	url    string
	mu     sync.Mutex
	events []Event
	state  map[string]string // pod → last state
}

func newRecorder(t *testing.T) *recorder {
	r := &recorder{state: map[string]string{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var e Event
		if err := json.NewDecoder(io.LimitReader(req.Body, 1<<16)).Decode(&e); err != nil {
			http.Error(w, "bad event", http.StatusBadRequest)
			return
		}
		r.add(e)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	r.url = "http://" + ln.Addr().String() + "/events"
	return r
}

func (r *recorder) add(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	if e.Kind == "state" {
		r.state[e.Pod] = e.State
	}
}

func (r *recorder) mark(kind, name string, from, until time.Time) {
	e := Event{Kind: kind, Name: name, At: from.UnixMilli(), Until: until.UnixMilli()}
	if kind == "delete" {
		e.Pod = name
	}
	r.add(e)
}

// waitAllValid waits until the consumer of every live Pod (asked anew each
// time: churn goes on) last saw a valid, or stale but unexpired, token.
func (r *recorder) waitAllValid(ctx context.Context, live func() []string, max time.Duration) error {
	deadline := time.Now().Add(max)
	for {
		pods := live()
		r.mu.Lock()
		var missing []string
		for _, p := range pods {
			if st := r.state[p]; st != "valid" && st != "stale" {
				missing = append(missing, p+"="+st)
			}
		}
		r.mu.Unlock()
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v, Pods without a valid token: %v", max, missing)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (r *recorder) snapshot() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}
