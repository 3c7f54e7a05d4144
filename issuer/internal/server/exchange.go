package server

// The exchange pipeline of one token request, in the order a request meets
// it: serveToken reads and answers; decide parses the form, checks the
// target and the token's shape, admit screens the token locally (signature,
// per-token rate, in-flight cap) before the review costs an API call; then
// the review, the endpoint's rules, the lifetime the Pod asked for, the
// claims and the signature. Every outcome is audited once (exchange), told
// to its Pod as an Event when the Pod is known (a refusal, and the first
// token after one), and answered as RFC 8693 / RFC 6749 JSON (writeError).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-sts/kube-sts/issuer/internal/events"
	"github.com/kube-sts/kube-sts/issuer/internal/mint"
	"github.com/kube-sts/kube-sts/issuer/internal/review"
	"github.com/kube-sts/kube-sts/issuer/internal/satoken"
	"github.com/kube-sts/kube-sts/logging"
	"github.com/kube-sts/kube-sts/shared/exchange"
)

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request, e *Endpoint) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusMethodNotAllowed)
		_ = json.NewEncoder(w).Encode(exchange.Errorf(exchange.InvalidRequest, "use POST with an RFC 8693 form"))
		return
	}
	start := s.now()
	// A sidecar sends its form (about 1.5 KiB) right after the headers: a
	// body that has not arrived within bodyTimeout is a stalled client.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(bodyTimeout))
	body := &trackedBody{ReadCloser: r.Body, done: r.Body == http.NoBody}
	r.Body = body
	out, fail := s.exchange(r, e)
	if !body.done {
		dropBody(w, r)
	}
	result := "issued"
	if fail != nil {
		result = fail.Reason
		writeError(w, fail)
	} else {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Pragma", "no-cache")
		resp := exchange.NewResponse(out.JWT, int64(out.Expiry.Sub(start).Round(time.Second).Seconds()))
		resp.LifetimeNote = out.lifetimeNote
		_, _ = w.Write(resp.AppendJSON(make([]byte, 0, len(out.JWT)+160)))
	}
	s.metrics.Exchange(e.cfg.Name, result, s.now().Sub(start))
}

// failure is a refused or unanswered exchange: a stable reason for logs and
// metrics, the OAuth error for the client, the identity known so far (for
// the audit log), and how to answer (an HTTP status other than the error's,
// a Retry-After). Refusals of the review come from review.Failure.
type failure struct {
	Reason     string
	OAuth      *exchange.Error
	Identity   review.Identity
	Status     int
	RetryAfter time.Duration
	// pod is the Pod a refusal is told to (an Event) when Identity has
	// none: the one a token the cluster signed names.
	pod events.Pod
}

func fromReview(f *review.Failure) *failure {
	return &failure{Reason: f.Reason, OAuth: f.OAuth, Identity: f.Identity}
}

// issued is a minted token and why its lifetime is not the one the Pod
// asked for ("" when it is, or none was asked for).
type issued struct {
	mint.Token
	lifetimeNote string
}

// exchange runs the checks in order and mints; every outcome is audited once.
func (s *Server) exchange(r *http.Request, e *Endpoint) (issued, *failure) {
	id, tok, fail := s.decide(r, e)
	// Room for every field of either outcome: one allocation.
	fields := make([]zap.Field, 0, 8)
	fields = append(fields,
		logging.Endpoint(e.cfg.Name),
		zap.String("namespace", id.Namespace),
		zap.String("serviceaccount", id.ServiceAccount),
		zap.String("pod", id.PodName),
	)
	if fail != nil {
		fields = append(fields, zap.String("result", resultOf(fail)), zap.String("reason", fail.Reason), zap.String("description", fail.OAuth.Description))
		if fail.Identity.Namespace == "" {
			s.screened.Info("exchange refused", fields...)
		} else {
			s.audit.Info("exchange refused", fields...)
		}
		if p := fail.podToTell(); s.events != nil && p.UID != "" {
			s.events.Refused(p, e.cfg.Name, fail.OAuth.Code, fail.OAuth.Description)
		}
		return issued{}, fail
	}
	if s.events != nil {
		s.events.Issued(podOf(id), e.cfg.Name)
	}
	fields = append(fields, zap.String("result", "issued"), zap.String("jti", tok.ID), zap.Int64("exp", tok.Expiry.Unix()), zap.String("kid", tok.KeyID))
	if tok.lifetimeNote != "" {
		fields = append(fields, zap.String("lifetime_note", tok.lifetimeNote))
	}
	s.audit.Info("token issued", fields...)
	return tok, nil
}

// podToTell is the Pod a refusal is about, zero when none is known.
func (f *failure) podToTell() events.Pod {
	if f.Identity.PodUID != "" {
		return podOf(f.Identity)
	}
	return f.pod
}

func podOf(id review.Identity) events.Pod {
	return events.Pod{Namespace: id.Namespace, Name: id.PodName, UID: types.UID(id.PodUID)}
}

// boundPod is the Pod a verified token names, zero for nil.
func boundPod(b *satoken.Binding) events.Pod {
	if b == nil {
		return events.Pod{}
	}
	return events.Pod{Namespace: b.Namespace, Name: b.Pod, UID: types.UID(b.PodUID)}
}

func resultOf(f *failure) string {
	if f.OAuth.Retryable() {
		return "unavailable"
	}
	return "refused"
}

func (s *Server) decide(r *http.Request, e *Endpoint) (review.Identity, issued, *failure) {
	var none review.Identity
	bad := func(reason, format string, args ...any) *failure {
		return &failure{Reason: reason, OAuth: exchange.Errorf(exchange.InvalidRequest, format, args...)}
	}
	if r.URL.RawQuery != "" {
		// Tokens in a URL end up in access logs; RFC 6749 §3.2 wants the body.
		return none, issued{}, bad("query_parameters", "parameters in the URL query are not accepted; send them in the %s body", exchange.ContentTypeForm)
	}
	if !isForm(r.Header.Get("Content-Type")) {
		return none, issued{}, bad("bad_content_type", "send the request as %s", exchange.ContentTypeForm)
	}
	if r.ContentLength > exchange.MaxRequestBytes {
		return none, issued{}, bad("bad_body", "the request body is larger than %d bytes (a subject token is at most %d)", exchange.MaxRequestBytes, exchange.MaxSubjectTokenBytes)
	}
	body, err := readBody(r.Body, r.ContentLength)
	if err != nil {
		return none, issued{}, bad("bad_body", "could not read the request body within %v", bodyTimeout)
	}
	req, err := exchange.ParseRequest(body)
	if err != nil {
		var oe *exchange.Error
		if !errors.As(err, &oe) {
			oe = exchange.Errorf(exchange.InvalidRequest, "bad request")
		}
		return none, issued{}, &failure{Reason: "bad_request", OAuth: oe}
	}
	if f := e.checkTarget(req); f != nil {
		return none, issued{}, f
	}
	header, err := Precheck(req.SubjectToken)
	if err != nil {
		return none, issued{}, bad("not_a_jwt", "subject_token is not a JWT: %v", err)
	}
	d := e.docs.Load()
	if d == nil {
		return none, issued{}, &failure{Reason: "keys_not_loaded", OAuth: exchange.Errorf(exchange.TemporarilyUnavailable, "the issuer has no signing key yet; retry")}
	}
	bound, f := s.admit(r.Context(), req.SubjectToken, header, e.cfg.SubjectAudience)
	if f != nil {
		return none, issued{}, f
	}
	defer s.inflight.Leave()
	id, err := s.reviewer.Review(r.Context(), req.SubjectToken, e.cfg.SubjectAudience, bound)
	if err != nil {
		var rf *review.Failure
		if !errors.As(err, &rf) {
			return review.Identity{}, issued{}, &failure{Reason: "review_failed", OAuth: exchange.Errorf(exchange.TemporarilyUnavailable, "the review failed; retry")}
		}
		return rf.Identity, issued{}, fromReview(rf)
	}
	if ok, why := e.policy.Decide(id.Namespace, id.ServiceAccount); !ok {
		return id, issued{}, &failure{Reason: "denied", Identity: id,
			OAuth: exchange.Errorf(exchange.InvalidRequest, "ServiceAccount %s/%s may not use endpoint %s: %s", id.Namespace, id.ServiceAccount, e.cfg.Name, why)}
	}
	ttl, note := e.cfg.Lifetime(req.Lifetime)
	mr := mint.Request{
		Issuer: e.cfg.Issuer, Audience: e.cfg.Audience, Cluster: e.cluster,
		Namespace: id.Namespace, ServiceAccount: id.ServiceAccount,
		TTL: ttl, Now: s.now(),
	}
	if e.cfg.Claims.Node {
		if why := nodeUnverified(id); why != "" {
			return id, issued{}, &failure{Reason: "node_unverified", Identity: id,
				OAuth: exchange.Errorf(exchange.InvalidRequest, "endpoint %s puts the Pod's node in its tokens, but %s", e.cfg.Name, why)}
		}
	}
	e.cfg.Claims.Add(&mr, mint.Pod{Name: id.PodName, UID: id.PodUID, Node: id.Node, Labels: id.Labels})
	tok, err := mint.Mint(d.keys.Signing, mr)
	if err != nil {
		s.log.Error("signing failed", logging.Endpoint(e.cfg.Name), zap.Error(err))
		return id, issued{}, &failure{Reason: "signing_failed", Identity: id, OAuth: exchange.Errorf(exchange.ServerError, "signing failed")}
	}
	return id, issued{Token: tok, lifetimeNote: note}, nil
}

// isForm reports whether a Content-Type names a form body; the exact value
// every client sends is recognised without parsing.
func isForm(ct string) bool {
	if ct == exchange.ContentTypeForm {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == exchange.ContentTypeForm
}

// nodeUnverified says why the node claim cannot be issued for id, or "".
// spec.nodeName is the Pod creator's to choose, even a Node that does not
// exist; the subject token's node binding carries the Node's UID only when
// the API server found that Node, so the claim needs both, and agreeing.
func nodeUnverified(id review.Identity) string {
	switch {
	case id.TokenNode == "":
		return "the subject token has no node binding (made before the Pod was scheduled, or by an API server older than 1.30)"
	case id.TokenNodeUID == "":
		return fmt.Sprintf("the subject token's node %q has no UID: no such Node existed when it was made", id.TokenNode)
	case id.TokenNode != id.Node:
		return fmt.Sprintf("the subject token is bound to node %q and the Pod runs on %q", id.TokenNode, id.Node)
	}
	return ""
}

// checkTarget answers invalid_target (RFC 8693 §2.2.2) for an audience or
// resource this endpoint cannot issue for: it issues for its audience only.
func (e *Endpoint) checkTarget(req exchange.Request) *failure {
	for _, t := range append(slices.Clone(req.Audiences), req.Resources...) {
		if t != e.cfg.Audience {
			return &failure{Reason: "invalid_target", OAuth: exchange.Errorf(exchange.InvalidTarget,
				"endpoint %s issues tokens for audience %q only; omit audience and resource, or ask for that one", e.cfg.Name, e.cfg.Audience)}
		}
	}
	return nil
}

// admit spends nothing of the API server's on a token the cluster did not
// sign, on a token presented too often, or beyond the in-flight cap. When it
// returns no failure the caller holds an in-flight slot and must Leave it;
// the binding is what the Verifier read from the token.
func (s *Server) admit(ctx context.Context, token string, header satoken.Header, audience string) (*satoken.Binding, *failure) {
	var bound *satoken.Binding
	if s.verifier != nil {
		var err error
		if bound, err = s.verifier.VerifyHeader(ctx, token, header, audience); err != nil {
			var ve *satoken.Error
			if !errors.As(err, &ve) {
				ve = &satoken.Error{Reason: "bad_signature", Description: "subject_token could not be verified"}
			}
			if ve.Retryable {
				return nil, &failure{Reason: ve.Reason, RetryAfter: ve.RetryAfter, OAuth: &exchange.Error{Code: exchange.TemporarilyUnavailable, Description: ve.Description}}
			}
			return nil, &failure{Reason: ve.Reason, pod: boundPod(bound), OAuth: &exchange.Error{Code: exchange.InvalidRequest, Description: ve.Description}}
		}
	}
	if ok, wait := s.perToken.Allow(token); !ok {
		return nil, &failure{Reason: "rate_limited", Status: http.StatusTooManyRequests, RetryAfter: wait, pod: boundPod(bound),
			OAuth: exchange.Errorf(exchange.TemporarilyUnavailable, "this subject token was presented more than %d times in a second; retry after the Retry-After delay", s.perToken.Limit())}
	}
	if !s.inflight.TryEnter() {
		return nil, &failure{Reason: "overloaded", RetryAfter: time.Second, pod: boundPod(bound),
			OAuth: exchange.Errorf(exchange.TemporarilyUnavailable, "the issuer is at its limit of exchanges in flight; retry after the Retry-After delay")}
	}
	return bound, nil
}

// bodyTimeout bounds reading a request body once its headers are in.
const bodyTimeout = 5 * time.Second

// readBody reads at most exchange.MaxRequestBytes+1 bytes (one more than
// allowed, so that ParseRequest can say the body is too large), sized by
// the declared length when there is one.
func readBody(r io.Reader, declared int64) ([]byte, error) {
	size := int64(exchange.MaxRequestBytes + 1)
	if declared >= 0 && declared < size {
		size = declared + 1
	}
	buf := make([]byte, size)
	n, err := io.ReadFull(r, buf)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		err = nil
	}
	return buf[:n], err
}

// trackedBody notes whether a request body was read to its end.
type trackedBody struct {
	io.ReadCloser
	done bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		b.done = true
	}
	return n, err
}

// dropBody answers without the rest of the body: on HTTP/1.1 the
// connection is closed after the answer (the server would otherwise wait
// to drain a stalled body for reuse); an HTTP/2 stream is reset when the
// handler returns.
func dropBody(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	}
}

func writeError(w http.ResponseWriter, f *failure) {
	e := f.OAuth
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	status := e.HTTPStatus()
	if f.Status != 0 {
		status = f.Status
	}
	if e.Code == exchange.TemporarilyUnavailable || status == http.StatusTooManyRequests {
		// Whole seconds, rounded up, at least one (RFC 9110 §10.2.3).
		secs := int((f.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	}
	w.WriteHeader(status)
	_, _ = w.Write(e.AppendJSON(make([]byte, 0, 64+len(e.Description))))
}
