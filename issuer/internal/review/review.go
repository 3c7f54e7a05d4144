// Package review decides whether a presented ServiceAccount token belongs to a
// live Pod, in one of two modes: Reviewer asks the API server each time (a
// TokenReview with the endpoint's audience, a strict reading of the result,
// and a live GET of the bound Pod); Watched reads the binding the token was
// verified with locally (satoken) against watched caches of Pods and
// ServiceAccounts, and costs no API call in steady state. Both fail closed:
// anything they cannot confirm is a refusal, and anything the API server
// cannot answer is "temporarily unavailable", never a token. checkPod is the
// one definition of a live Pod for both.
package review

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-sts/kube-sts/issuer/internal/metrics"
	"github.com/kube-sts/kube-sts/issuer/internal/satoken"
	"github.com/kube-sts/kube-sts/shared/exchange"
	"github.com/kube-sts/kube-sts/shared/redact"
)

// Extra keys the API server sets on tokens bound to a Pod.
const (
	ExtraPodName = "authentication.kubernetes.io/pod-name"
	ExtraPodUID  = "authentication.kubernetes.io/pod-uid"
	// The node the token's Pod was bound to when the token was made, and
	// that Node's UID, which the API server adds only when it found the
	// Node (Kubernetes 1.30+).
	ExtraNodeName = "authentication.kubernetes.io/node-name"
	ExtraNodeUID  = "authentication.kubernetes.io/node-uid"
)

const saPrefix = "system:serviceaccount:"

// Identity is a confirmed live Pod's ServiceAccount.
type Identity struct {
	Namespace      string
	ServiceAccount string
	PodName        string
	PodUID         string
	// Node and Labels are the live Pod's, read after the TokenReview.
	Node   string
	Labels map[string]string
	// TokenNode and TokenNodeUID are the subject token's node binding, ""
	// when it has none; the UID is there only when the Node existed.
	TokenNode, TokenNodeUID string
}

// Failure is a refusal or an outage, with a stable reason for logs and
// metrics and the OAuth error for the client.
type Failure struct {
	// Reason is a short stable key, e.g. "pod_gone".
	Reason string
	OAuth  *exchange.Error
	// Partial identity, when the review got that far (for the audit log).
	Identity Identity
}

func (f *Failure) Error() string { return f.Reason + ": " + f.OAuth.Error() }

func refuse(reason string, id Identity, format string, args ...any) *Failure {
	return &Failure{Reason: reason, Identity: id, OAuth: exchange.Errorf(exchange.InvalidRequest, format, args...)}
}

func unavailable(reason string, id Identity, format string, args ...any) *Failure {
	return &Failure{Reason: reason, Identity: id, OAuth: exchange.Errorf(exchange.TemporarilyUnavailable, format, args...)}
}

func misconfigured(reason string, id Identity, format string, args ...any) *Failure {
	return &Failure{Reason: reason, Identity: id, OAuth: exchange.Errorf(exchange.ServerError, format, args...)}
}

// Reviewer talks to the API server.
type Reviewer struct {
	client  kubernetes.Interface
	timeout time.Duration
	metrics *metrics.Metrics
	flights singleflight.Group
}

// New returns a reviewer; timeout bounds each API call.
func New(client kubernetes.Interface, timeout time.Duration, m *metrics.Metrics) *Reviewer {
	return &Reviewer{client: client, timeout: timeout, metrics: m}
}

// Review confirms token for audience with a TokenReview and a Pod GET; what
// the token says of itself (bound) is not needed. Identical concurrent
// reviews share one round of API calls; nothing is cached after it.
func (r *Reviewer) Review(ctx context.Context, token, audience string, _ *satoken.Binding) (Identity, error) {
	sum := sha256.Sum256([]byte(token))
	key := string(sum[:]) + "\x00" + audience
	// The flight must not die with whichever caller happens to start it.
	ch := r.flights.DoChan(key, func() (any, error) {
		return r.review(context.WithoutCancel(ctx), token, audience)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return Identity{}, res.Err
		}
		return res.Val.(Identity), nil
	case <-ctx.Done():
		return Identity{}, unavailable("canceled", Identity{}, "request canceled")
	}
}

func (r *Reviewer) review(ctx context.Context, token, audience string) (Identity, error) {
	st, f := r.tokenReview(ctx, token, audience)
	if f != nil {
		return Identity{}, f
	}
	id, f := identityOf(st, audience)
	if f != nil {
		return id, f
	}
	pod, f := getPod(ctx, r.client, r.timeout, r.metrics, id)
	if f != nil {
		return id, f
	}
	p := stateOf(pod, true)
	if f := checkPod(id, p); f != nil {
		return id, f
	}
	id.Node, id.Labels = p.Node, p.Labels
	return id, nil
}

func (r *Reviewer) tokenReview(ctx context.Context, token, audience string) (authnv1.TokenReviewStatus, *Failure) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	start := time.Now()
	tr, err := r.client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{audience}},
	}, metav1.CreateOptions{})
	r.metrics.APICall("tokenreview", result(err), time.Since(start))
	if err != nil {
		if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
			return authnv1.TokenReviewStatus{}, misconfigured("tokenreview_forbidden", Identity{}, "the issuer is not allowed to create tokenreviews; check its RBAC")
		}
		return authnv1.TokenReviewStatus{}, unavailable("tokenreview_unavailable", Identity{}, "the API server did not answer the TokenReview (%s); retry", short(err))
	}
	return tr.Status, nil
}

// identityOf reads a TokenReview status strictly.
func identityOf(st authnv1.TokenReviewStatus, audience string) (Identity, *Failure) {
	if st.Error != "" {
		// Authenticated or not: an error means the API server is not sure.
		return Identity{}, refuse("not_authenticated", Identity{}, "the API server did not accept the subject token: %s", redact.Text(st.Error))
	}
	if !st.Authenticated {
		return Identity{}, refuse("not_authenticated", Identity{}, "the API server did not accept the subject token for audience %q (expired, revoked, or minted for another audience)", audience)
	}
	if !slices.Contains(st.Audiences, audience) {
		return Identity{}, refuse("audience_mismatch", Identity{}, "the subject token is not valid for audience %q; project a token with that audience", audience)
	}
	ns, sa, ok := ParseUsername(st.User.Username)
	if !ok {
		return Identity{}, refuse("not_serviceaccount", Identity{}, "the subject token does not belong to a ServiceAccount")
	}
	id := Identity{Namespace: ns, ServiceAccount: sa}
	pod, podOK := single(st.User.Extra[ExtraPodName])
	uid, uidOK := single(st.User.Extra[ExtraPodUID])
	if !podOK || !uidOK {
		return id, notPodBound(id)
	}
	id.PodName, id.PodUID = pod, uid
	id.TokenNode, _ = single(st.User.Extra[ExtraNodeName])
	id.TokenNodeUID, _ = single(st.User.Extra[ExtraNodeUID])
	return id, nil
}

// getPod reads id's Pod from the API server.
func getPod(ctx context.Context, client kubernetes.Interface, timeout time.Duration, m *metrics.Metrics, id Identity) (*corev1.Pod, *Failure) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	pod, err := client.CoreV1().Pods(id.Namespace).Get(ctx, id.PodName, metav1.GetOptions{})
	m.APICall("pod", result(err), time.Since(start))
	switch {
	case apierrors.IsNotFound(err):
		return nil, podGone(id)
	case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
		return nil, misconfigured("pod_forbidden", id, "the issuer is not allowed to get pods; check its RBAC")
	case err != nil:
		return nil, unavailable("pod_unavailable", id, "the API server did not answer the Pod lookup (%s); retry", short(err))
	}
	return pod, nil
}

func podGone(id Identity) *Failure {
	return refuse("pod_gone", id, "pod %s/%s no longer exists", id.Namespace, id.PodName)
}

func notPodBound(id Identity) *Failure {
	return refuse("not_pod_bound", id, "the subject token of %s/%s is not bound to a Pod (a legacy Secret token or an unbound TokenRequest); use a projected ServiceAccount token", id.Namespace, id.ServiceAccount)
}

// checkPod says why pod is not the live Pod of id, or nil: the one place
// that decides what "alive" means, for a Pod read from the API server or
// from the watched cache.
func checkPod(id Identity, pod *podState) *Failure {
	switch {
	case string(pod.UID) != id.PodUID:
		return refuse("pod_replaced", id, "pod %s/%s was replaced: the token belongs to an earlier Pod of that name", id.Namespace, id.PodName)
	case pod.DeletionTimestamp != nil:
		return refuse("pod_terminating", id, "pod %s/%s is terminating", id.Namespace, id.PodName)
	case pod.Phase == corev1.PodSucceeded || pod.Phase == corev1.PodFailed:
		return refuse("pod_finished", id, "pod %s/%s has finished (phase %s)", id.Namespace, id.PodName, pod.Phase)
	case pod.ServiceAccount != id.ServiceAccount:
		return refuse("pod_serviceaccount_mismatch", id, "pod %s/%s does not run as ServiceAccount %s", id.Namespace, id.PodName, id.ServiceAccount)
	}
	return nil
}

// ParseUsername splits system:serviceaccount:<namespace>:<name>, requiring a
// valid namespace (DNS-1123 label) and ServiceAccount name (DNS-1123 subdomain).
func ParseUsername(u string) (namespace, name string, ok bool) {
	rest, found := strings.CutPrefix(u, saPrefix)
	if !found {
		return "", "", false
	}
	namespace, name, found = strings.Cut(rest, ":")
	if !found || len(validation.IsDNS1123Label(namespace)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
		return "", "", false
	}
	return namespace, name, true
}

func single(v authnv1.ExtraValue) (string, bool) {
	if len(v) != 1 || v[0] == "" {
		return "", false
	}
	return v[0], true
}

func result(err error) string {
	var status apierrors.APIStatus
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &status):
		return fmt.Sprint(status.Status().Code)
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	default:
		return "error"
	}
}

func short(err error) string {
	switch {
	case apierrors.IsTooManyRequests(err):
		return "throttled by the API server"
	case strings.Contains(err.Error(), "client rate limiter"):
		// client-go's own limiter gave up waiting within the timeout.
		return "throttled by the issuer's own API rate limit (--kube-api-qps)"
	case errors.Is(err, context.DeadlineExceeded), apierrors.IsTimeout(err), apierrors.IsServerTimeout(err):
		return "timeout"
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return fmt.Sprintf("HTTP %d", status.Status().Code)
	}
	return "connection error"
}
