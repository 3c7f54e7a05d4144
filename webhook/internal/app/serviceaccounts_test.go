package app

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/kube-sts/kube-sts/shared/contract"
)

func serviceAccount(ns, name, inject string) *corev1.ServiceAccount {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if inject != "" {
		sa.Annotations = map[string]string{contract.AnnotationInject: inject}
	}
	return sa
}

// failingReader fails every Get, as an API server that cannot be reached.
type failingReader struct{ client.Reader }

func (failingReader) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	return errors.New("connection refused")
}

// TestServiceAccountsCacheThenLive: the cache answers what it holds; a
// ServiceAccount it does not hold yet is read from the API server (one
// call, counted), so a Pod created right after its ServiceAccount is
// decided by what the ServiceAccount says, not by the watch's timing; one
// that does not exist says nothing; an API error is an error.
func TestServiceAccountsCacheThenLive(t *testing.T) {
	cached := fake.NewClientBuilder().WithObjects(serviceAccount("ns", "old", "vault-sts"), serviceAccount("ns", "plain", "")).Build()
	live := fake.NewClientBuilder().WithObjects(serviceAccount("ns", "old", "vault-sts"), serviceAccount("ns", "plain", ""),
		serviceAccount("ns", "new", "vault-sts,aws")).Build()
	s := &serviceAccounts{cache: cached, live: live}
	ctx := context.Background()
	for _, tc := range []struct {
		name, want string
		misses     int64
	}{
		{"old", "vault-sts", 0},
		{"plain", "", 0},
		{"new", "vault-sts,aws", 1}, // created a moment ago: not in the cache yet
		{"gone", "", 2},
	} {
		got, err := s.InjectAnnotation(ctx, "ns", tc.name)
		if err != nil || got != tc.want || s.misses.Load() != tc.misses {
			t.Errorf("%s: %q, %v, %d live lookups; want %q, nil, %d", tc.name, got, err, s.misses.Load(), tc.want, tc.misses)
		}
	}
	s.live = failingReader{}
	if _, err := s.InjectAnnotation(ctx, "ns", "new"); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("an unreachable API server: %v", err)
	}
}

func TestServiceAccountsReadiness(t *testing.T) {
	s := &serviceAccounts{}
	req, _ := http.NewRequest(http.MethodGet, "/readyz", nil)
	if err := s.ready(req); err == nil {
		t.Fatal("ready before the cache synced")
	}
	s.synced.Store(true)
	if err := s.ready(req); err != nil {
		t.Fatal(err)
	}
}
