package issuer

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-sts/kube-sts/e2e/internal/kube"
)

// The two benchmarks below run on the same machine against the same API
// server with the same parallelism: the bare calls the issuer must make
// (TokenReview + Pod GET), and the whole exchange through sts-issuer over
// HTTPS. Their ratio is our overhead on top of the API server.

const (
	// benchTokens rotate per request: a token may be presented 5 times a
	// second by default, and a real cluster has one token per Pod.
	benchTokens      = 512
	benchParallelism = 4 // goroutines per core; the API server is the bottleneck either way
)

var benchPods atomic.Int64

// benchSubjects makes tokens of a fresh Pod for issuer.
func benchSubjects(b *testing.B, f *fixture, issuer string) []string {
	ctx := context.Background()
	pod := kube.Workload(ctx, b, f.env.Clientset, "test-bench", "for-vault", fmt.Sprintf("bench-%d", benchPods.Add(1)))
	subjects := make([]string, benchTokens)
	for i := range subjects {
		subjects[i] = kube.PodToken(ctx, b, f.env.Clientset, pod, issuer)
	}
	return subjects
}

// BenchmarkExchangeRealAPIServer: ES256 signing costs ~45µs, RS256 ~1ms of
// the same two cores the API server and etcd use. "defaults" runs the issuer
// as shipped; "qps-100000" lifts its client-side API limits out of the way;
// "review-watch" runs review mode watch (no API call per exchange), to be
// compared with BenchmarkTokenReviewPlusPodGet, the floor of mode tokenreview;
// its per-token limit is lifted, as the 512 tokens of the benchmark would
// meet it (5 a second each) at the rates that mode reaches.
func BenchmarkExchangeRealAPIServer(b *testing.B) {
	for _, alg := range []string{"ES256", "RS256"} {
		for _, flags := range []struct {
			name string
			args []string
		}{{"defaults", nil}, {"qps-100000", []string{"--kube-api-qps", "100000", "--kube-api-burst", "100000"}},
			{"review-watch", []string{"--review=watch", "--max-exchanges-per-token=1000"}},
			// The same with a client keeping an idle connection per goroutine:
			// the difference to review-watch is the TLS handshakes' cost.
			{"review-watch-pooled", []string{"--review=watch", "--max-exchanges-per-token=1000"}}} {
			b.Run(alg+"/"+flags.name, func(b *testing.B) {
				benchExchange(b, alg, strings.HasSuffix(flags.name, "-pooled"), flags.args)
			})
		}
	}
}

func benchExchange(b *testing.B, alg string, pooled bool, args []string) {
	f := setup(b, args...)
	if pooled {
		tr := f.iss.Client.Transport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 2 * benchParallelism
		f.iss.Client = &http.Client{Timeout: f.iss.Client.Timeout, Transport: tr}
	}
	issuer := f.files
	if alg == "RS256" {
		issuer = f.vault
	}
	subjects := benchSubjects(b, f, issuer)
	var next atomic.Int64
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			subject := subjects[next.Add(1)%benchTokens]
			res, err := f.iss.Exchange(context.Background(), issuer, subject)
			if err != nil || res.Status != 200 {
				b.Errorf("exchange: %v %+v", err, res)
				return
			}
		}
	})
}

func BenchmarkTokenReviewPlusPodGet(b *testing.B) {
	f := setup(b)
	subjects := benchSubjects(b, f, f.files)
	cfg := *f.env.Config
	cfg.QPS, cfg.Burst = 100000, 100000
	cs, err := kubernetes.NewForConfig(&cfg)
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			subject := subjects[next.Add(1)%benchTokens]
			tr, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: subject, Audiences: []string{f.files}}}, metav1.CreateOptions{})
			if err != nil || !tr.Status.Authenticated {
				b.Errorf("review: %v %v", err, tr.Status.Error)
				return
			}
			ns, name := "test-bench", tr.Status.User.Extra["authentication.kubernetes.io/pod-name"][0]
			if _, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
				b.Errorf("get pod: %v", err)
				return
			}
		}
	})
}
