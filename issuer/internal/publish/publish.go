// Package publish copies an endpoint's discovery document and JWKS to
// places relying parties can read without reaching the issuer: a directory
// (nginx, any static host, a pages site), an S3-compatible bucket, a Google
// Cloud Storage bucket and an Azure Blob container (what clouds' OIDC
// federation reads). Each key change is published at once, and
// everything again every interval; failures are retried with backoff.
//
// Several replicas publish to the same target. Each write carries the key
// set's Generation (its newest and its oldest key's creation times, which
// only move forward as keys are added and retired), and a replica does not
// overwrite a newer generation: one that has not yet seen a rotation cannot
// take the new key away again. On S3, GCS and Azure the JWKS is written on
// condition that it is still the object the replica read (Bucket.Put,
// GCS.Put, AzureBlob.Put), so a newer set put there in between is never
// overwritten; a directory has no such condition,
// and two replicas racing there can leave the older set for one interval at
// most, until the newer replica's next write.
//
// What the target holds is never trusted over what the issuer holds:
// whoever can write the bucket could plant a far-future generation and
// freeze every replica's publishing. A newer generation is a peer's only
// while it is plausible: not dated in the future, carrying the very key
// this issuer signs with, and not outliving the time every replica needs to
// see a rotation (SupersededGrace). Otherwise it is foreign: overwritten,
// counted (result "foreign") and logged as an error. After every write the
// JWKS is read back and must be the one written.
package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/kube-sts/kube-sts/issuer/internal/keys"
	"github.com/kube-sts/kube-sts/logging"
)

// Object names below the issuer's path, as the issuer itself serves them.
const (
	NameDiscovery = ".well-known/openid-configuration"
	NameJWKS      = "jwks"
)

// Generation orders key sets over time: a set whose newest key is newer, or
// with the same newest key whose oldest key is newer (an old key retired),
// is the later one.
type Generation struct {
	Newest, Oldest time.Time
}

// GenerationOf is the generation of set.
func GenerationOf(set *keys.Set) Generation {
	var g Generation
	for i, k := range set.Keys {
		if i == 0 || k.Created.After(g.Newest) {
			g.Newest = k.Created
		}
		if i == 0 || k.Created.Before(g.Oldest) {
			g.Oldest = k.Created
		}
	}
	return g
}

// String is the form stored beside the published objects.
func (g Generation) String() string {
	return g.Newest.UTC().Format(time.RFC3339Nano) + "/" + g.Oldest.UTC().Format(time.RFC3339Nano)
}

// ParseGeneration reads String's form.
func ParseGeneration(s string) (Generation, error) {
	n, o, ok := strings.Cut(s, "/")
	if !ok {
		return Generation{}, fmt.Errorf("generation %q: want <newest>/<oldest>", s)
	}
	var g Generation
	var err1, err2 error
	g.Newest, err1 = time.Parse(time.RFC3339Nano, n)
	g.Oldest, err2 = time.Parse(time.RFC3339Nano, o)
	if err := errors.Join(err1, err2); err != nil {
		return Generation{}, fmt.Errorf("generation %q: %w", s, err)
	}
	return g, nil
}

// Before reports whether g is an older key set than h.
func (g Generation) Before(h Generation) bool {
	if !g.Newest.Equal(h.Newest) {
		return g.Newest.Before(h.Newest)
	}
	return g.Oldest.Before(h.Oldest)
}

// Object is one document to write.
type Object struct {
	// Name is below the issuer path: NameDiscovery or NameJWKS.
	Name        string
	Body        []byte
	ContentType string
}

// Target is a place documents are written to. Dir, Bucket, GCS and
// AzureBlob are ours.
type Target interface {
	// String names the target in logs and metrics; never a credential.
	String() string
	// Read returns the generation last written under base and the JWKS
	// there; found is false when there is no JWKS (nothing published yet),
	// gen is "" when the JWKS carries no generation (written by something
	// else).
	Read(ctx context.Context, base string) (gen string, jwks []byte, found bool, err error)
	// Put writes the objects under base in order (JWKS before discovery, so
	// a relying party never reads a discovery document ahead of its keys),
	// each with cacheControl where the target can carry it, and records gen.
	Put(ctx context.Context, base string, objs []Object, cacheControl, gen string) error
}

// Documents are what an endpoint publishes at one moment.
type Documents struct {
	Discovery, JWKS []byte
	Generation      Generation
	// SigningKeyID is the kid of the key that signs now: a peer's newer
	// JWKS still carries it (keys are published ahead and retired long
	// after). "" skips that check.
	SigningKeyID string
}

// Metrics receives the outcome of each attempt; *metrics.Metrics is one.
type Metrics interface {
	Published(endpoint, target, result string, at time.Time)
}

// Options configure a Publisher.
type Options struct {
	Endpoint string
	// Base is the issuer URL's path without its leading '/' ("" for a
	// host-only issuer), where the objects go below the target's root.
	Base         string
	Target       Target
	CacheControl string
	// Interval between writes when nothing changed.
	Interval time.Duration
	// RetryMin and RetryMax bound the backoff after a failed write
	// (defaults 1s and a fifth of Interval).
	RetryMin, RetryMax time.Duration
	// UnreadyAfter: Check fails after this long without a successful
	// attempt (0: never).
	UnreadyAfter time.Duration
	// SupersededGrace is how long a newer generation on the target may go
	// without this replica catching up before it is taken as foreign
	// (default 2 × Interval + 1 minute: replicas see a rotation within
	// their key resync, far below that).
	SupersededGrace time.Duration
	Log             *zap.Logger
	Metrics         Metrics
	Now             func() time.Time
}

// Publisher keeps one endpoint's documents current at one target.
type Publisher struct {
	o      Options
	notify chan struct{}

	mu      sync.Mutex
	docs    *Documents
	since   time.Time // start, or the last successful attempt
	lastErr error
	// superseded is since when the target has held a newer generation
	// without a break (zero: it does not).
	superseded time.Time
}

// New returns a publisher; documents arrive through Update.
func New(o Options) *Publisher {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.RetryMin <= 0 {
		o.RetryMin = time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = max(o.Interval/5, o.RetryMin)
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.SupersededGrace <= 0 {
		o.SupersededGrace = 2*o.Interval + time.Minute
	}
	return &Publisher{o: o, notify: make(chan struct{}, 1), since: o.Now()}
}

// Update hands the publisher new documents; it writes them at once.
func (p *Publisher) Update(d Documents) {
	p.mu.Lock()
	p.docs = &d
	p.mu.Unlock()
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// Check fails when the target has not taken a write (or shown a newer one)
// for longer than UnreadyAfter.
func (p *Publisher) Check() error {
	if p.o.UnreadyAfter <= 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lastErr == nil || p.o.Now().Sub(p.since) <= p.o.UnreadyAfter {
		return nil
	}
	// The cause is in the log and the metrics; /readyz is readable by anyone
	// who reaches the issuer.
	return fmt.Errorf("endpoint %s: publishing to %s has failed for %v",
		p.o.Endpoint, p.o.Target, p.o.Now().Sub(p.since).Round(time.Second))
}

// Run writes on every Update and every Interval until ctx ends.
func (p *Publisher) Run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	retry := p.o.RetryMin
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.notify:
		case <-timer.C:
		}
		p.mu.Lock()
		d := p.docs
		p.mu.Unlock()
		if d == nil {
			continue
		}
		if err := p.Attempt(ctx, *d); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// Full jitter keeps replicas that failed together apart.
			timer.Reset(retry/2 + time.Duration(rand.Int64N(int64(retry/2)+1)))
			retry = min(retry*2, p.o.RetryMax)
			continue
		}
		retry = p.o.RetryMin
		timer.Reset(p.o.Interval)
	}
}

// Attempt writes d unless the target holds a newer generation, and records
// the outcome.
func (p *Publisher) Attempt(ctx context.Context, d Documents) error {
	result, why, err := p.attempt(ctx, d)
	now := p.o.Now()
	p.mu.Lock()
	if err == nil {
		p.since, p.lastErr = now, nil
	} else {
		p.lastErr = err
	}
	p.mu.Unlock()
	if p.o.Metrics != nil {
		p.o.Metrics.Published(p.o.Endpoint, p.o.Target.String(), result, now)
	}
	fields := []zap.Field{logging.Endpoint(p.o.Endpoint), zap.String("target", p.o.Target.String()), zap.String("generation", d.Generation.String())}
	switch {
	case err != nil:
		p.o.Log.Warn("publishing the discovery document and JWKS failed; retrying", append(fields, zap.Error(err))...)
	case result == ResultSuperseded:
		p.o.Log.Info("the target holds a newer key set published by another replica; not overwriting it", fields...)
	case result == ResultForeign:
		p.o.Log.Error("the target held a key set no replica of this issuer published; overwritten with this issuer's", append(fields, zap.String("reason", why))...)
	default:
		p.o.Log.Debug("published the discovery document and JWKS", fields...)
	}
	return err
}

// Results of an attempt, the metric's result label.
const (
	ResultPublished  = "published"
	ResultSuperseded = "superseded"
	// ResultForeign: the target held a newer generation that no replica of
	// this issuer can have written; it was overwritten.
	ResultForeign = "foreign"
	ResultError   = "error"
)

// futureSkew is how far ahead of this replica's clock a peer's key may be dated.
const futureSkew = time.Minute

func (p *Publisher) attempt(ctx context.Context, d Documents) (result, why string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	theirs, theirJWKS, found, err := p.o.Target.Read(ctx, p.o.Base)
	if err != nil {
		return ResultError, "", fmt.Errorf("read the published generation: %w", err)
	}
	result = ResultPublished
	// A generation we cannot read was not written by us; overwrite it.
	if g, perr := ParseGeneration(theirs); found && perr == nil && d.Generation.Before(g) {
		if why = p.foreign(g, theirJWKS, d); why == "" {
			return ResultSuperseded, "", nil
		}
		result = ResultForeign
	} else {
		p.mu.Lock()
		p.superseded = time.Time{}
		p.mu.Unlock()
	}
	objs := []Object{
		{Name: NameJWKS, Body: d.JWKS, ContentType: ContentTypeJWKS},
		{Name: NameDiscovery, Body: d.Discovery, ContentType: ContentTypeDiscovery},
	}
	if err := p.o.Target.Put(ctx, p.o.Base, objs, p.o.CacheControl, d.Generation.String()); err != nil {
		return ResultError, "", err
	}
	// The target must now hold what was written (a target that accepts
	// writes and serves something else is no place to publish keys).
	gen, jwks, found, err := p.o.Target.Read(ctx, p.o.Base)
	switch {
	case err != nil:
		return ResultError, "", fmt.Errorf("read back: %w", err)
	case !found || !bytes.Equal(jwks, d.JWKS) || gen != d.Generation.String():
		return ResultError, "", fmt.Errorf("read back: the target holds another JWKS (generation %q) than the one just written (%s); another writer?", gen, d.Generation)
	}
	return result, why, nil
}

// foreign says why a newer generation g on the target cannot be a peer
// replica's, or "" while it may be one.
func (p *Publisher) foreign(g Generation, theirJWKS []byte, d Documents) string {
	now := p.o.Now()
	if g.Newest.After(now.Add(futureSkew)) {
		return fmt.Sprintf("its newest key is dated %s, in the future", g.Newest.UTC().Format(time.RFC3339))
	}
	if d.SigningKeyID != "" && !sameKey(theirJWKS, d.JWKS, d.SigningKeyID) {
		return fmt.Sprintf("its JWKS lacks the key this issuer signs with (kid %q)", d.SigningKeyID)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.superseded.IsZero() {
		p.superseded = now
	}
	if held := now.Sub(p.superseded); held > p.o.SupersededGrace {
		return fmt.Sprintf("it has been newer than this replica's keys for %v, longer than any replica takes to see a rotation (%v)", held.Round(time.Second), p.o.SupersededGrace)
	}
	return ""
}

// sameKey reports whether both JWKS carry the key kid, identical.
func sameKey(a, b []byte, kid string) bool {
	ka, kb := jwkByID(a, kid), jwkByID(b, kid)
	return ka != nil && kb != nil && reflect.DeepEqual(ka, kb)
}

func jwkByID(jwks []byte, kid string) map[string]any {
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if json.Unmarshal(jwks, &set) != nil {
		return nil
	}
	for _, k := range set.Keys {
		if k["kid"] == kid {
			return k
		}
	}
	return nil
}

// Content types, the issuer's own.
const (
	ContentTypeDiscovery = "application/json"
	ContentTypeJWKS      = "application/jwk-set+json"
)

// Join puts a base path and an object name together as a slash path.
func Join(base, name string) string {
	if base == "" {
		return name
	}
	return base + "/" + name
}
