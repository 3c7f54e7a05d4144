// Package tokenreview proves the harness and the API-server behaviour kube-sts
// is built on: Pod-bound ServiceAccount tokens with our own audience, reviewed
// with that audience, carry the Pod's name and UID, and stop being accepted
// some time after the Pod is deleted. How long "some time" is, is measured here:
// the issuer's own Pod check has to beat it.
package tokenreview

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/kube"
)

var cp = controlplane.New()

func TestMain(m *testing.M) { os.Exit(cp.Main(m)) }

const (
	stsAudience = "https://sts.kube-sts.test"
	podNameKey  = "authentication.kubernetes.io/pod-name"
	podUIDKey   = "authentication.kubernetes.io/pod-uid"
)

func TestBoundTokenReviewFollowsPodLifetime(t *testing.T) {
	env := cp.Require(t)
	cs := env.Clientset
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	ns, sa := "test-vault", "for-vault"
	pod := kube.Workload(ctx, t, cs, ns, sa, "watch-vault-volume")

	token := kube.PodToken(ctx, t, cs, pod, stsAudience)

	t.Run("accepted with its audience", func(t *testing.T) {
		st := review(ctx, t, cs, token, stsAudience)
		if !st.Authenticated || st.Error != "" {
			t.Fatalf("review: authenticated=%v error=%q, want authenticated", st.Authenticated, st.Error)
		}
		if want := "system:serviceaccount:" + ns + ":" + sa; st.User.Username != want {
			t.Errorf("username = %q, want %q", st.User.Username, want)
		}
		if got := st.User.Extra[podNameKey]; !slices.Equal(got, authnv1.ExtraValue{pod.Name}) {
			t.Errorf("extra %s = %v, want [%s]", podNameKey, got, pod.Name)
		}
		if got := st.User.Extra[podUIDKey]; !slices.Equal(got, authnv1.ExtraValue{string(pod.UID)}) {
			t.Errorf("extra %s = %v, want [%s]", podUIDKey, got, pod.UID)
		}
		if !slices.Equal(st.Audiences, []string{stsAudience}) {
			t.Errorf("status.audiences = %v, want [%s]", st.Audiences, stsAudience)
		}
	})

	t.Run("refused for another audience", func(t *testing.T) {
		st := review(ctx, t, cs, token, "https://vault.kube-sts.test")
		if st.Authenticated {
			t.Fatalf("review with a foreign audience authenticated %q", st.User.Username)
		}
	})

	t.Run("token of another audience refused for ours", func(t *testing.T) {
		other := kube.PodToken(ctx, t, cs, pod, "https://vault.kube-sts.test")
		if st := review(ctx, t, cs, other, stsAudience); st.Authenticated {
			t.Fatalf("token minted for another audience was accepted for %s", stsAudience)
		}
	})

	t.Run("refused once the pod is deleted", func(t *testing.T) {
		// Warm the API server's cache of successful reviews, as a real issuer would.
		if st := review(ctx, t, cs, token, stsAudience); !st.Authenticated {
			t.Fatalf("review before delete: not authenticated: %q", st.Error)
		}
		deleted := time.Now()
		kube.DeletePod(ctx, t, cs, pod)
		var last authnv1.TokenReviewStatus
		for time.Since(deleted) < 60*time.Second {
			last = review(ctx, t, cs, token, stsAudience)
			if !last.Authenticated {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		took := time.Since(deleted)
		if last.Authenticated {
			t.Fatalf("a token of a deleted pod is still accepted after %v", took.Round(time.Millisecond))
		}
		// This is the window kube-sts closes with its own live Pod check; the
		// README and docs/security.md cite it (~10 s: the API server caches the bound-object lookup).
		t.Logf("API server kept accepting the deleted pod's token for %v (review error: %q)", took.Round(time.Millisecond), last.Error)
		if took < 5*time.Second || took > 20*time.Second {
			t.Fatalf("the API server accepted the deleted pod's token for %v; the README says about 10 s", took.Round(time.Millisecond))
		}
	})
}

func review(ctx context.Context, t *testing.T, cs kubernetes.Interface, token, audience string) authnv1.TokenReviewStatus {
	t.Helper()
	r, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenReview: %v", err)
	}
	return r.Status
}
