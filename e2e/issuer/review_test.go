package issuer

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kube-sts/kube-sts/e2e/internal/flow"
	"github.com/kube-sts/kube-sts/e2e/internal/kube"
	"github.com/kube-sts/kube-sts/e2e/internal/scrape"
)

// apiCalls is how many calls the issuer has made to the API server for
// exchanges (TokenReviews, Pod and ServiceAccount GETs), from its metrics.
func (f *fixture) apiCalls(t *testing.T) float64 {
	t.Helper()
	n, err := scrape.SumAt(f.iss.MetricsURL, "sts_issuer_apiserver_request_duration_seconds_count")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestReviewModes runs every refusal case on the real API server in both
// review modes: tokenreview (a TokenReview and a Pod GET per exchange) and
// watch (local verification, watched Pods and ServiceAccounts). A live Pod's
// exchanges cost 2 API calls each in the first and none in the second; a
// deleted or terminating Pod, a Pod replaced under the same name, a token of
// another audience or of the API server's, a Secret-bound token, a deleted
// ServiceAccount and garbage are refused in both, the deleted Pod within
// flow.DeletedPodBound.
func TestReviewModes(t *testing.T) {
	for _, mode := range []string{"tokenreview", "watch"} {
		t.Run(mode, func(t *testing.T) { reviewMode(t, mode) })
	}
}

func reviewMode(t *testing.T, mode string) {
	f := setup(t, "--review="+mode)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := f.env.Clientset
	ns := "test-review-" + mode
	pod := kube.Workload(ctx, t, cs, ns, "for-vault", "live")
	watch := mode == "watch"

	exchange := func(t *testing.T, subject string) (int, string) {
		t.Helper()
		f.track(t, subject)
		res, err := f.iss.Exchange(ctx, f.vault, subject)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status == 200 {
			f.track(t, res.Response.AccessToken)
			return 200, ""
		}
		return res.Status, res.Error.Code + ": " + res.Error.Description
	}
	// refusedWithin presents subject every 250 ms (under the per-token
	// limit) until the issuer refuses it saying want, for at most bound.
	refusedWithin := func(t *testing.T, subject, want string, bound time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			status, msg := exchange(t, subject)
			if status == 400 && strings.Contains(msg, want) {
				return time.Since(start)
			}
			if time.Since(start) > bound {
				t.Fatalf("not refused with %q within %v: %d %s", want, bound, status, msg)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}

	t.Run("a live Pod's exchanges cost the mode's API calls", func(t *testing.T) {
		var subjects []string
		for range 10 {
			subjects = append(subjects, kube.PodToken(ctx, t, cs, pod, f.vault))
		}
		if status, msg := exchange(t, subjects[0]); status != 200 { // the watch may not have seen the Pod yet
			t.Fatalf("first exchange: %d %s", status, msg)
		}
		before := f.apiCalls(t)
		for _, s := range subjects {
			if status, msg := exchange(t, s); status != 200 {
				t.Fatalf("exchange: %d %s", status, msg)
			}
		}
		perExchange := (f.apiCalls(t) - before) / float64(len(subjects))
		want := 2.0
		if watch {
			want = 0
		}
		if perExchange != want {
			t.Fatalf("review mode %s: %.1f API calls per exchange, want %.0f", mode, perExchange, want)
		}
		t.Logf("review mode %s: %.1f API calls per exchange", mode, perExchange)
	})

	t.Run("tokens of other audiences refused", func(t *testing.T) {
		if status, msg := exchange(t, kube.PodToken(ctx, t, cs, pod, "https://someone-else.test")); status != 400 || !strings.Contains(msg, "invalid_request") {
			t.Errorf("another audience: %d %s", status, msg)
		}
		if status, msg := exchange(t, kube.PodToken(ctx, t, cs, pod, "")); status != 400 || !strings.Contains(msg, "audience") {
			t.Errorf("the API server's audience: %d %s", status, msg)
		}
	})

	t.Run("deleted Pod refused within the bound", func(t *testing.T) {
		p := kube.Workload(ctx, t, cs, ns, "for-vault", "short-lived")
		subject := kube.PodToken(ctx, t, cs, p, f.vault)
		if status, msg := exchange(t, subject); status != 200 {
			t.Fatalf("before the delete: %d %s", status, msg)
		}
		review := func() *authnv1.TokenReview {
			tr, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: subject, Audiences: []string{f.vault}}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return tr
		}
		// Reviewed once while the Pod lives (mode watch makes no review), so
		// that the API server caches its verdict for ~10 s.
		review()
		kube.DeletePod(ctx, t, cs, p)
		took := refusedWithin(t, subject, "no longer exists", flow.DeletedPodBound)
		// The refusal is the issuer's own: the API server still accepts the token.
		if tr := review(); !tr.Status.Authenticated {
			t.Fatalf("the API server already refuses the deleted Pod's token (%q); the issuer's own check was not what refused it", tr.Status.Error)
		}
		t.Logf("review mode %s: the deleted Pod's token refused %v after the delete", mode, took.Round(time.Millisecond))
	})

	t.Run("terminating Pod refused", func(t *testing.T) {
		p := kube.Workload(ctx, t, cs, ns, "for-vault", "held-by-finalizer")
		p.Finalizers = []string{"kube-sts.test/hold"}
		p, err := cs.CoreV1().Pods(ns).Update(ctx, p, metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if cur, err := cs.CoreV1().Pods(ns).Get(context.Background(), p.Name, metav1.GetOptions{}); err == nil {
				cur.Finalizers = nil
				_, _ = cs.CoreV1().Pods(ns).Update(context.Background(), cur, metav1.UpdateOptions{})
			}
		}()
		subject := kube.PodToken(ctx, t, cs, p, f.vault)
		if status, msg := exchange(t, subject); status != 200 {
			t.Fatalf("before the delete: %d %s", status, msg)
		}
		kube.DeletePod(ctx, t, cs, p)
		refusedWithin(t, subject, "is terminating", flow.DeletedPodBound)
	})

	t.Run("a Pod replaced under the same name: the old token refused", func(t *testing.T) {
		p := kube.Workload(ctx, t, cs, ns, "for-vault", "replaced")
		subject := kube.PodToken(ctx, t, cs, p, f.vault)
		if status, msg := exchange(t, subject); status != 200 {
			t.Fatalf("before the replacement: %d %s", status, msg)
		}
		kube.DeletePod(ctx, t, cs, p)
		again := kube.Workload(ctx, t, cs, ns, "for-vault", "replaced")
		if again.UID == p.UID {
			t.Fatal("the new Pod has the old UID")
		}
		refusedWithin(t, subject, "was replaced", flow.DeletedPodBound)
		if status, msg := exchange(t, kube.PodToken(ctx, t, cs, again, f.vault)); status != 200 {
			t.Fatalf("the new Pod's token: %d %s", status, msg)
		}
	})

	t.Run("a token bound to a Secret refused", func(t *testing.T) {
		secret, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bound-to"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "for-vault", &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
			Audiences: []string{f.vault}, ExpirationSeconds: ptr.To[int64](600),
			BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: secret.Name, UID: secret.UID},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		before := f.apiCalls(t)
		if status, msg := exchange(t, tr.Status.Token); status != 400 || !strings.Contains(msg, "not bound to a Pod") {
			t.Fatalf("Secret-bound token: %d %s", status, msg)
		}
		if n := f.apiCalls(t) - before; watch && n != 0 {
			t.Errorf("review mode watch spent %.0f API calls on a Secret-bound token, want 0", n)
		}
	})

	t.Run("deleted ServiceAccount refused", func(t *testing.T) {
		p := kube.Workload(ctx, t, cs, ns, "short-lived-sa", "of-deleted-sa")
		subject := kube.PodToken(ctx, t, cs, p, f.vault)
		if status, msg := exchange(t, subject); status != 200 {
			t.Fatalf("before the delete: %d %s", status, msg)
		}
		if err := cs.CoreV1().ServiceAccounts(ns).Delete(ctx, "short-lived-sa", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		// The API server caches its TokenReview verdicts ~10 s: mode
		// tokenreview refuses once that runs out, mode watch at once.
		want, bound := "did not accept the subject token", 15*time.Second
		if watch {
			want, bound = "no longer exists", flow.DeletedPodBound
		}
		took := refusedWithin(t, subject, want, bound)
		t.Logf("review mode %s: the deleted ServiceAccount's token refused %v after the delete", mode, took.Round(time.Millisecond))
	})

	t.Run("garbage refused without an API call", func(t *testing.T) {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k}, nil)
		if err != nil {
			t.Fatal(err)
		}
		forged, err := jwt.Signed(signer).Claims(jwt.Claims{Subject: "system:serviceaccount:" + ns + ":for-vault", Audience: jwt.Audience{f.vault},
			Expiry: jwt.NewNumericDate(time.Now().Add(time.Hour))}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		before := f.apiCalls(t)
		if status, msg := exchange(t, forged); status != 400 {
			t.Fatalf("forged token: %d %s", status, msg)
		}
		if n := f.apiCalls(t) - before; n != 0 {
			t.Errorf("a forged token cost %.0f API calls, want 0", n)
		}
	})

	if watch {
		t.Run("readyz and metrics say the caches are current", func(t *testing.T) {
			resp, err := f.iss.Client.Get(f.iss.Base + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "review mode watch: pods current") {
				t.Errorf("/readyz: %d %q", resp.StatusCode, body)
			}
			samples, err := scrape.Samples(f.iss.MetricsURL)
			if err != nil {
				t.Fatal(err)
			}
			if samples["sts_issuer_watch_current"] != 1 || samples[`sts_issuer_watch_objects{resource="pods"}`] < 1 {
				t.Errorf("sts_issuer_watch_current %v, watch_objects pods %v", samples["sts_issuer_watch_current"], samples[`sts_issuer_watch_objects{resource="pods"}`])
			}
		})
	}
}
