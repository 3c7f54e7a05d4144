// Package events tells a Pod why its token is missing where users already
// look: a Kubernetes Event on the Pod (kubectl describe pod, kubectl
// events), TokenRefused when the issuer refuses the Pod's exchange and
// TokenIssued at its first token after a refusal. That works with the
// sidecar's readiness probe off and while the Pod waits in Init.
//
// Events go through client-go's recorder, whose correlator deduplicates
// identical ones into a count and rate-limits each Pod (a burst of 25, then
// one every 5 minutes): a Pod whose exchanges are refused thousands of
// times costs the API server a few writes. They are sent in the background
// and dropped when the API server is slow; an exchange never waits on one.
// A message carries the OAuth error and its description passed through
// redact.Text, never a token.
package events

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/kube-sts/kube-sts/shared/redact"
)

// Reasons of the Events.
const (
	ReasonRefused = "TokenRefused"
	ReasonIssued  = "TokenIssued"
)

// Component is the Events' source.
const Component = "sts-issuer"

// Pod is the Pod an Event is about.
type Pod struct {
	Namespace, Name string
	UID             types.UID
}

// maxRemembered bounds the Pods refused since their last token that the
// recorder remembers (for TokenIssued): about 100 bytes each.
const maxRemembered = 10000

// Recorder records the Events of one issuer replica.
type Recorder struct {
	rec record.EventRecorder

	mu sync.Mutex
	// refused are the Pods refused since their last token here. Another
	// replica may answer the next exchange: TokenIssued is said by the
	// replica that saw the refusal, when it issues next.
	refused map[types.UID]struct{}
}

// New returns a recorder sending to the API server through cs (give it a
// client of its own: its rate limiter then spares the exchanges'), and
// stops when ctx ends. host names the replica in the Events' source.
func New(ctx context.Context, cs kubernetes.Interface, host string) *Recorder {
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	return NewWith(b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component, Host: host}))
}

// NewWith returns a recorder sending to rec (tests give record.FakeRecorder).
func NewWith(rec record.EventRecorder) *Recorder {
	return &Recorder{rec: rec, refused: map[types.UID]struct{}{}}
}

// Refused records that endpoint refused p's exchange with the OAuth error
// code and description.
func (r *Recorder) Refused(p Pod, endpoint, code, description string) {
	if p.Name == "" || p.UID == "" {
		return
	}
	r.mu.Lock()
	if len(r.refused) >= maxRemembered {
		for uid := range r.refused { // forget one; its TokenIssued is lost
			delete(r.refused, uid)
			break
		}
	}
	r.refused[p.UID] = struct{}{}
	r.mu.Unlock()
	msg := fmt.Sprintf("endpoint %s refused the token exchange: %s", endpoint, code)
	if description != "" {
		msg += ": " + redact.Text(description)
	}
	r.rec.Event(p.ref(), corev1.EventTypeWarning, ReasonRefused, msg)
}

// Issued records that endpoint issued p a token, once after a refusal:
// not at every refresh.
func (r *Recorder) Issued(p Pod, endpoint string) {
	r.mu.Lock()
	_, was := r.refused[p.UID]
	delete(r.refused, p.UID)
	r.mu.Unlock()
	if was {
		r.rec.Event(p.ref(), corev1.EventTypeNormal, ReasonIssued, fmt.Sprintf("endpoint %s issued a token after refusing earlier exchanges", endpoint))
	}
}

func (p Pod) ref() *corev1.ObjectReference {
	return &corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: p.Namespace, Name: p.Name, UID: p.UID}
}
