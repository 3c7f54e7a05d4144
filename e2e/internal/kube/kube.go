// Package kube has the small Kubernetes chores tests repeat: namespaces,
// ServiceAccounts, Pods and Pod-bound tokens.
package kube

import (
	"context"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// Workload creates (if missing) namespace ns and ServiceAccount sa, and a Pod
// named pod running as sa. The Pod is never scheduled: the API server alone
// is enough for tokens and reviews.
func Workload(ctx context.Context, t testing.TB, cs kubernetes.Interface, ns, sa, pod string) *corev1.Pod {
	t.Helper()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", ns, err)
	}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create serviceaccount %s/%s: %v", ns, sa, err)
	}
	p, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: pod},
		Spec: corev1.PodSpec{
			ServiceAccountName:           sa,
			AutomountServiceAccountToken: ptr.To(false),
			Containers:                   []corev1.Container{{Name: "app", Image: "local/app:test"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, pod, err)
	}
	return p
}

// PodToken requests a token of sa bound to pod, for audience (no audience:
// the API server's own). It is what the kubelet projects into the Pod.
func PodToken(ctx context.Context, t testing.TB, cs kubernetes.Interface, pod *corev1.Pod, audience string) string {
	t.Helper()
	spec := authnv1.TokenRequestSpec{
		ExpirationSeconds: ptr.To[int64](600),
		BoundObjectRef:    &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}
	if audience != "" {
		spec.Audiences = []string{audience}
	}
	tr, err := cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, pod.Spec.ServiceAccountName, &authnv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s (audience %q): %v", pod.Namespace, pod.Name, audience, err)
	}
	if tr.Status.Token == "" {
		t.Fatal("TokenRequest returned an empty token")
	}
	return tr.Status.Token
}

// DeletePod deletes a Pod at once (it has no node, so nothing waits for it).
func DeletePod(ctx context.Context, t testing.TB, cs kubernetes.Interface, pod *corev1.Pod) {
	t.Helper()
	if err := cs.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatalf("delete pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
}
