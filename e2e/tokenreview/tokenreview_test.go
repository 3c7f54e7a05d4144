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
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kube-sts/kube-sts/e2e/controlplane"
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
	mustCreate(t, func() error {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
		return err
	})
	pod, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "watch-vault-volume"},
		Spec: corev1.PodSpec{
			ServiceAccountName:           sa,
			AutomountServiceAccountToken: ptr.To(false),
			Containers:                   []corev1.Container{{Name: "test", Image: "local/app:test"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod: %v", err)
	}

	token := podToken(ctx, t, cs, ns, sa, pod, stsAudience)

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
		other := podToken(ctx, t, cs, ns, sa, pod, "https://vault.kube-sts.test")
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
		if err := cs.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
			t.Fatalf("delete pod: %v", err)
		}
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
		// This is the window kube-sts closes with its own live Pod check.
		t.Logf("API server kept accepting the deleted pod's token for %v (review error: %q)", took.Round(time.Millisecond), last.Error)
	})
}

func mustCreate(t *testing.T, create func() error) {
	t.Helper()
	if err := create(); err != nil {
		t.Fatalf("create: %v", err)
	}
}

func podToken(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, sa string, pod *corev1.Pod, audience string) string {
	t.Helper()
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{
			Audiences:         []string{audience},
			ExpirationSeconds: ptr.To[int64](600),
			BoundObjectRef:    &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: types.UID(pod.UID)},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s: %v", audience, err)
	}
	if tr.Status.Token == "" {
		t.Fatal("TokenRequest returned an empty token")
	}
	return tr.Status.Token
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
