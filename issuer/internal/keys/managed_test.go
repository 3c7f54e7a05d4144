package keys

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func storedIDs(t *testing.T, cs *fake.Clientset) []string {
	t.Helper()
	sec, err := cs.CoreV1().Secrets("kube-sts").Get(context.Background(), "keys", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var st stored
	if err := json.Unmarshal(sec.Data[SecretKey], &st); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range st.Keys {
		out = append(out, r.ID)
	}
	return out
}

// TestManagedSecretDeletedWritesBack: deleting the key Secret under a
// running issuer does not mint a key that signs at once while the published
// ones vanish: the replica writes back the keys it holds.
func TestManagedSecretDeletedWritesBack(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	now := time.Unix(1_800_000_000, 0)
	var sets []*Set
	src := NewManagedSource(ManagedOptions{
		Client: cs, Namespace: "kube-sts", Secret: "keys", Endpoint: "vault",
		Schedule: Schedule{Algorithm: ES256, RotateEvery: time.Hour, PublishAhead: 10 * time.Minute, RetireAfter: 20 * time.Minute},
		Resync:   time.Second, Log: zap.NewNop(), OnChange: func(s *Set) { sets = append(sets, s) },
		Now: func() time.Time { return now },
	})
	if err := src.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	before := storedIDs(t, cs)
	signing := sets[len(sets)-1].Signing.ID

	if err := cs.CoreV1().Secrets("kube-sts").Delete(ctx, "keys", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	if err := src.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	after := storedIDs(t, cs)
	if len(after) != len(before) || after[0] != before[0] {
		t.Fatalf("Secret recreated with %v, want the held keys %v", after, before)
	}
	if got := sets[len(sets)-1].Signing.ID; got != signing {
		t.Fatalf("signing key changed from %s to %s after the Secret was deleted", signing[:8], got[:8])
	}
}
