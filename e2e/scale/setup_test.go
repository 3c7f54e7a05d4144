package scale

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
)

// Cluster shape: 1,000 Pods per namespace, 10 ServiceAccounts per namespace,
// 100 Pods per (fake) Node.
const (
	podsPerNamespace = 1000
	sasPerNamespace  = 10
	podsPerNode      = 100
	setupWorkers     = 32
)

// slot is one simulated Pod: its object's coordinates, the files its loop
// reads and writes, and its token.
type slot struct {
	Namespace, Name, SA string
	UID                 string
	Subject, Out        string
}

// cluster is the Pods the harness made, and the client it makes them with.
// looped are the slots that have a loop (and so a token); with fewer loops
// than Pods they are spread evenly over the Pods.
type cluster struct {
	cs       kubernetes.Interface
	audience string
	dir      string
	slots    []slot
	looped   []int
	isLooped []bool
}

// fastClient is an administrator client without client-go's default
// 5 QPS, for the setup and the churn.
func fastClient(t *testing.T, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	c := rest.CopyConfig(cfg)
	c.QPS, c.Burst = 2000, 4000
	cs, err := kubernetes.NewForConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// build creates the namespaces, ServiceAccounts, Nodes and n Pods bound to
// the Nodes, and a Pod-bound token for audience per Pod, written where its
// loop reads it. It reports how long each part took.
func build(ctx context.Context, t *testing.T, cs kubernetes.Interface, n, loops int, audience, dir string) *cluster {
	t.Helper()
	c := &cluster{cs: cs, audience: audience, dir: dir, slots: make([]slot, n), isLooped: make([]bool, n)}
	for k := range loops {
		i := k * n / loops
		c.looped = append(c.looped, i)
		c.isLooped[i] = true
	}
	start := time.Now()
	namespaces := (n + podsPerNamespace - 1) / podsPerNamespace
	nodes := (n + podsPerNode - 1) / podsPerNode
	parallel(t, namespaces, func(i int) error {
		ns := fmt.Sprintf("scale-%d", i)
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		for j := range sasPerNamespace {
			if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("sa-%d", j)}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				return err
			}
		}
		return nil
	})
	parallel(t, nodes, func(i int) error {
		_, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("scale-node-%d", i)}}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
	t.Logf("setup: %d namespaces, %d ServiceAccounts, %d Nodes in %v", namespaces, namespaces*sasPerNamespace, nodes, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	parallel(t, n, func(i int) error {
		s := &c.slots[i]
		s.Namespace, s.Name, s.SA = fmt.Sprintf("scale-%d", i/podsPerNamespace), fmt.Sprintf("p-%d", i), fmt.Sprintf("sa-%d", i%sasPerNamespace)
		d := filepath.Join(dir, fmt.Sprint(i))
		s.Subject, s.Out = filepath.Join(d, "subject"), filepath.Join(d, "token.jwt")
		if c.isLooped[i] {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		return c.create(ctx, i, fmt.Sprintf("scale-node-%d", i/podsPerNode))
	})
	took := time.Since(start)
	t.Logf("setup: %d Pods created and %d tokens requested in %v (%.0f Pods/s, %d workers)",
		n, loops, took.Round(time.Millisecond), float64(n)/took.Seconds(), setupWorkers)
	return c
}

// create makes slot i's Pod on node and writes a token bound to it.
func (c *cluster) create(ctx context.Context, i int, node string) error {
	s := &c.slots[i]
	p, err := c.cs.CoreV1().Pods(s.Namespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Labels: map[string]string{"app": "scale"}},
		Spec: corev1.PodSpec{ServiceAccountName: s.SA, NodeName: node, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "app", Image: "local/app:test"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create pod %s/%s: %w", s.Namespace, s.Name, err)
	}
	s.UID = string(p.UID)
	if !c.isLooped[i] {
		return nil
	}
	tr, err := c.cs.CoreV1().ServiceAccounts(s.Namespace).CreateToken(ctx, s.SA, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences: []string{c.audience}, ExpirationSeconds: ptr.To[int64](4 * 3600),
		BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token of pod %s/%s: %w", s.Namespace, s.Name, err)
	}
	// Renamed into place, as the kubelet updates a projected token.
	tmp := s.Subject + ".tmp"
	if err := os.WriteFile(tmp, []byte(tr.Status.Token), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.Subject)
}

// podsFile writes the loops' list for loadgen.
func (c *cluster) podsFile(t *testing.T) string {
	t.Helper()
	file := filepath.Join(c.dir, "pods.jsonl")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	for _, i := range c.looped {
		s := c.slots[i]
		if err := enc.Encode(map[string]string{"subject": s.Subject, "out": s.Out}); err != nil {
			t.Fatal(err)
		}
	}
	return file
}

// parallel runs f(0..n-1) on setupWorkers goroutines and fails t with the
// first error.
func parallel(t *testing.T, n int, f func(i int) error) {
	t.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range min(setupWorkers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}
