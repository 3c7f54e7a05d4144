// Package config is sts-issuer's configuration file: its types, defaults and
// whole-file validation with errors that name the field.
package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-sts/kube-sts/configfile"
	"github.com/kube-sts/kube-sts/issuer/internal/keys"
	"github.com/kube-sts/kube-sts/issuer/internal/mint"
	"github.com/kube-sts/kube-sts/shared/contract"
)

// Limits and defaults.
const (
	DefaultTTL = 15 * time.Minute
	MinTTL     = time.Minute
	MaxTTL     = 24 * time.Hour
	// DefaultPodTTLMin is the shortest lifetime a Pod may ask for by
	// default (never above the endpoint's ttl): each refresh is an exchange.
	DefaultPodTTLMin  = 5 * time.Minute
	DefaultAlgorithm  = keys.RS256
	DefaultJWKSMaxAge = 5 * time.Minute

	DefaultRotateEvery  = 30 * 24 * time.Hour
	DefaultPublishAhead = time.Hour
	DefaultLeeway       = 5 * time.Minute
	DefaultResync       = 30 * time.Second
	DefaultReload       = 5 * time.Second

	// ClockSkew is the clock difference between replicas and relying parties
	// that key retirement allows for.
	ClockSkew = 5 * time.Second

	DefaultPublishInterval     = 5 * time.Minute
	DefaultPublishUnreadyAfter = 10 * time.Minute
	DefaultS3Region            = "us-east-1"
)

// Config is the whole file.
type Config struct {
	// Cluster is the cluster name put in the cluster claim and in sub.
	Cluster string `json:"cluster"`
	// JWKSMaxAge is the Cache-Control max-age of discovery and JWKS documents.
	JWKSMaxAge metav1.Duration `json:"jwksMaxAge,omitempty"`
	// Endpoints are the STS endpoints served by this process.
	Endpoints []Endpoint `json:"endpoints"`
	// Publishing tunes how endpoints' publish targets are kept current.
	Publishing Publishing `json:"publishing,omitempty"`
}

// Publishing tunes the publishers of every endpoint with publish targets.
type Publishing struct {
	// Interval: the documents are written again this often even when no key
	// changed, which repairs a target changed by someone else (default 5m).
	// A key change is published at once.
	Interval metav1.Duration `json:"interval,omitempty"`
	// UnreadyAfter: /readyz fails when a target has not taken the current
	// documents for this long (default 10m; 0s: never, alert on the metrics).
	UnreadyAfter *metav1.Duration `json:"unreadyAfter,omitempty"`
}

// PublishTarget is one place an endpoint's discovery document and JWKS are
// copied to, for relying parties that cannot reach the issuer (clouds). Set
// exactly one of Directory, S3, GCS and AzureBlob.
type PublishTarget struct {
	Directory *DirectoryTarget `json:"directory,omitempty"`
	S3        *S3Target        `json:"s3,omitempty"`
	GCS       *GCSTarget       `json:"gcs,omitempty"`
	AzureBlob *AzureBlobTarget `json:"azureBlob,omitempty"`
}

// kinds are the PublishTarget fields set, by their configuration key.
func (t PublishTarget) kinds() []string {
	var k []string
	for _, f := range []struct {
		key string
		set bool
	}{{"directory", t.Directory != nil}, {"s3", t.S3 != nil}, {"gcs", t.GCS != nil}, {"azureBlob", t.AzureBlob != nil}} {
		if f.set {
			k = append(k, f.key)
		}
	}
	return k
}

// String names the target as logs and metrics do.
func (t PublishTarget) String() string {
	switch {
	case t.Directory != nil:
		return "directory:" + t.Directory.Path
	case t.S3 != nil:
		return withEndpoint("s3://"+t.S3.Bucket+"/"+t.S3.Prefix, t.S3.Endpoint)
	case t.GCS != nil:
		return withEndpoint("gs://"+t.GCS.Bucket+"/"+t.GCS.Prefix, t.GCS.Endpoint)
	case t.AzureBlob != nil:
		return withEndpoint("azblob://"+t.AzureBlob.Account+"/"+t.AzureBlob.Container+"/"+t.AzureBlob.Prefix, t.AzureBlob.Endpoint)
	}
	return "none"
}

func withEndpoint(name, endpoint string) string {
	if endpoint != "" {
		name += " at " + endpoint
	}
	return name
}

// DirectoryTarget writes the documents under Path, laid out like the
// issuer URL's path: <path><issuer path>/.well-known/openid-configuration
// and <path><issuer path>/jwks (for nginx, any static host, a pages site).
type DirectoryTarget struct {
	Path string `json:"path"`
}

// S3Target puts the documents into an S3 or S3-compatible bucket, at
// <prefix><issuer path without its leading '/'>/.well-known/openid-configuration
// and .../jwks. Credentials come from the AWS SDK's default chain (the
// environment, a web identity token, shared files), never from this file.
type S3Target struct {
	Bucket string `json:"bucket"`
	// Region of the bucket (default us-east-1).
	Region string `json:"region,omitempty"`
	// Endpoint is the URL of an S3-compatible server; empty means AWS.
	Endpoint string `json:"endpoint,omitempty"`
	// PathStyle addresses the bucket as <endpoint>/<bucket> instead of
	// <bucket>.<endpoint> (most S3-compatible servers need it).
	PathStyle bool `json:"pathStyle,omitempty"`
	// Prefix is prepended to the object keys.
	Prefix string `json:"prefix,omitempty"`
	// CAFile is a PEM bundle to trust for Endpoint, beside the system roots.
	CAFile string `json:"caFile,omitempty"`
}

// GCSTarget puts the documents into a Google Cloud Storage bucket through
// its JSON API, at <prefix><issuer path>/.well-known/openid-configuration
// and .../jwks, where the issuer path leaves out a first segment naming the
// bucket (an issuer at https://storage.googleapis.com/<bucket>/<path> reads
// the bucket path-style). Credentials are Google's Application Default
// Credentials (GKE workload identity, GOOGLE_APPLICATION_CREDENTIALS with a
// service account key or a workload identity federation configuration),
// never from this file.
type GCSTarget struct {
	Bucket string `json:"bucket"`
	// Prefix is prepended to the object names.
	Prefix string `json:"prefix,omitempty"`
	// Endpoint is the URL of a GCS-compatible server (an emulator); empty
	// means Google's, https://storage.googleapis.com.
	Endpoint string `json:"endpoint,omitempty"`
	// Anonymous sends no credentials: for an emulator (Endpoint set) that
	// asks for none.
	Anonymous bool `json:"anonymous,omitempty"`
	// CAFile is a PEM bundle to trust for Endpoint, beside the system roots.
	CAFile string `json:"caFile,omitempty"`
}

// AzureBlobTarget puts the documents into an Azure Blob Storage container,
// as block blobs at <prefix><issuer path>/.well-known/openid-configuration
// and .../jwks, where the issuer path leaves out leading segments naming the
// account (path-style endpoints such as Azurite) and the container (an
// issuer at https://<account>.blob.core.windows.net/<container>/<path>).
// Credentials come from the environment, never from this file:
// AZURE_STORAGE_SAS_TOKEN, AZURE_STORAGE_KEY (the account key, Shared Key
// signing), or Microsoft Entra workload identity (AZURE_CLIENT_ID,
// AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE, as Azure's workload identity
// webhook sets them), the first one set.
type AzureBlobTarget struct {
	// Account is the storage account name.
	Account   string `json:"account"`
	Container string `json:"container"`
	// Prefix is prepended to the blob names.
	Prefix string `json:"prefix,omitempty"`
	// Endpoint is the URL of the account's blob service; empty means
	// https://<account>.blob.core.windows.net. An emulator's includes the
	// account: http://127.0.0.1:10000/devstoreaccount1.
	Endpoint string `json:"endpoint,omitempty"`
	// CAFile is a PEM bundle to trust for Endpoint, beside the system roots.
	CAFile string `json:"caFile,omitempty"`
}

// Endpoint is one issuer: its own iss, audience, keys and rules.
type Endpoint struct {
	// Name identifies the endpoint in logs and metrics.
	Name string `json:"name"`
	// Issuer is the iss claim and the base of the discovery URLs: an https URL,
	// or a bare host or host/path (https:// is assumed).
	Issuer string `json:"issuer"`
	// Audience is the aud of minted tokens (for Vault: a role's bound_audiences).
	Audience string `json:"audience"`
	// SubjectAudience is the audience the presented ServiceAccount token must
	// carry; defaults to the issuer URL.
	SubjectAudience string `json:"subjectAudience,omitempty"`
	// TTL of minted tokens, 1m to 24h, default 15m.
	TTL metav1.Duration `json:"ttl,omitempty"`
	// PodTTL says whether a Pod may ask for a shorter lifetime (its
	// kube-sts.io/ttl annotation) and how short.
	PodTTL PodTTL `json:"podTTL,omitempty"`
	// Algorithm is RS256 (default), ES256 or EdDSA.
	Algorithm string `json:"algorithm,omitempty"`
	// Keys says where the signing keys come from.
	Keys Keys `json:"keys"`
	// Allow and Deny rules; deny wins, and with no allow rule nothing is allowed.
	Allow []Rule `json:"allow"`
	Deny  []Rule `json:"deny,omitempty"`
	// Claims adds optional claims.
	Claims mint.Options `json:"claims,omitempty"`
	// Publish copies the discovery document and JWKS to these targets,
	// continuously; Issuer is then the public URL they are served at.
	Publish []PublishTarget `json:"publish,omitempty"`
}

// PodTTL bounds the lifetime a Pod asks for with kube-sts.io/ttl (the
// sidecar sends it with each exchange). A Pod can only shorten its tokens'
// lifetime, never lengthen it past the endpoint's ttl.
type PodTTL struct {
	// Allow lets Pods ask (default true); false issues every token for ttl
	// and says so in the response.
	Allow *bool `json:"allow,omitempty"`
	// Min is the shortest lifetime granted (default 5m, or ttl when that is
	// shorter; at least 1m): a shorter request gets Min. Tokens are
	// refreshed at 80% of their lifetime, so Min bounds how often each Pod
	// costs an exchange.
	Min metav1.Duration `json:"min,omitempty"`
}

// Allowed reports whether Pods may ask for a lifetime.
func (p PodTTL) Allowed() bool { return p.Allow == nil || *p.Allow }

// Lifetime is the lifetime of a token for a Pod that asked for requested
// (0: asked for nothing), and, when that is not what was asked, why: the
// note the response carries. e must have its defaults.
func (e *Endpoint) Lifetime(requested time.Duration) (time.Duration, string) {
	ttl := e.TTL.Duration
	switch {
	case requested <= 0 || requested == ttl:
		return ttl, ""
	case !e.PodTTL.Allowed():
		return ttl, fmt.Sprintf("endpoint %s does not let Pods choose the token lifetime (podTTL.allow: false); issued for its ttl %v", e.Name, ttl)
	case requested > ttl:
		return ttl, fmt.Sprintf("%v is longer than endpoint %s's ttl %v; a Pod may only shorten it; issued for %v", requested, e.Name, ttl, ttl)
	case requested < e.PodTTL.Min.Duration:
		return e.PodTTL.Min.Duration, fmt.Sprintf("%v is shorter than endpoint %s's podTTL.min %v; issued for %v", requested, e.Name, e.PodTTL.Min.Duration, e.PodTTL.Min.Duration)
	}
	return requested, ""
}

// Keys is exactly one key source.
type Keys struct {
	// Files are PEM private keys (PKCS#1, PKCS#8 or SEC 1), for example the
	// tls.key of Secrets made by cert-manager. All are published; reloaded on change.
	Files []string `json:"files,omitempty"`
	// SigningFile is the one of Files that signs; defaults to the first.
	SigningFile string `json:"signingFile,omitempty"`
	// ReloadInterval is how often Files are checked for changes (default 5s).
	ReloadInterval metav1.Duration `json:"reloadInterval,omitempty"`
	// Managed keys are created, stored and rotated by the issuer itself.
	Managed *Managed `json:"managed,omitempty"`
}

// Managed keys live in a Secret the issuer owns; replicas agree through it.
type Managed struct {
	// Secret is the name of the Secret holding the keys.
	Secret string `json:"secret"`
	// Namespace of the Secret; default: the issuer's own (--namespace, $POD_NAMESPACE), else kube-sts.
	Namespace string `json:"namespace,omitempty"`
	// RotateEvery is how long a key signs before its successor takes over (default 30 days).
	RotateEvery metav1.Duration `json:"rotateEvery,omitempty"`
	// PublishAhead is how long a new key is published before it signs (default 1h);
	// it must exceed the JWKS cache lifetime plus Resync.
	PublishAhead metav1.Duration `json:"publishAhead,omitempty"`
	// Leeway is added to the TTL before a retired key leaves the JWKS (default 5m).
	Leeway metav1.Duration `json:"leeway,omitempty"`
	// Resync is how often each replica re-reads the Secret (default 30s).
	Resync metav1.Duration `json:"resync,omitempty"`
}

// Rule matches ServiceAccounts by namespace and name globs (path.Match
// syntax: *, ?, [a-z]); an empty field matches everything.
type Rule struct {
	Namespace      string `json:"namespace,omitempty"`
	ServiceAccount string `json:"serviceAccount,omitempty"`
}

// DefaultNamespace is where managed key Secrets live when neither the
// configuration nor the issuer's own namespace says otherwise.
const DefaultNamespace = "kube-sts"

// Load reads, defaults and validates a configuration file; namespace is the
// issuer's own (the binary's options read it from the environment), the
// default of managed keys' Secret namespace.
func Load(file, namespace string) (*Config, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return parse(file, data, namespace)
}

// Parse is ParseIn for an issuer in DefaultNamespace.
func Parse(data []byte) (*Config, error) { return ParseIn(data, DefaultNamespace) }

// ParseIn decodes YAML strictly (unknown fields are errors), applies
// defaults and validates the result. Errors say "line N: field: ...".
func ParseIn(data []byte, namespace string) (*Config, error) { return parse("", data, namespace) }

// parse decodes file's data with configfile: every decoding and validation
// error names the file, the line and the field.
func parse(file string, data []byte, namespace string) (*Config, error) {
	var c Config
	pos, err := configfile.Decode(file, data, &c)
	if err != nil {
		return nil, err
	}
	c.Default(namespace)
	if err := c.Validate(); err != nil {
		return nil, pos.Annotate(err)
	}
	return &c, nil
}

// Default fills in defaults; namespace is the issuer's own.
func (c *Config) Default(namespace string) {
	if c.JWKSMaxAge.Duration == 0 {
		c.JWKSMaxAge.Duration = DefaultJWKSMaxAge
	}
	if c.Publishing.Interval.Duration == 0 {
		c.Publishing.Interval.Duration = DefaultPublishInterval
	}
	if c.Publishing.UnreadyAfter == nil {
		c.Publishing.UnreadyAfter = &metav1.Duration{Duration: DefaultPublishUnreadyAfter}
	}
	ns := namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	for i := range c.Endpoints {
		e := &c.Endpoints[i]
		if e.Issuer != "" && !strings.Contains(e.Issuer, "://") {
			e.Issuer = "https://" + e.Issuer
		}
		if e.SubjectAudience == "" {
			e.SubjectAudience = e.Issuer
		}
		if e.TTL.Duration == 0 {
			e.TTL.Duration = DefaultTTL
		}
		if e.PodTTL.Min.Duration == 0 {
			e.PodTTL.Min.Duration = min(DefaultPodTTLMin, e.TTL.Duration)
		}
		if e.Algorithm == "" {
			e.Algorithm = DefaultAlgorithm
		}
		if len(e.Keys.Files) > 0 && e.Keys.SigningFile == "" {
			e.Keys.SigningFile = e.Keys.Files[0]
		}
		if e.Keys.ReloadInterval.Duration == 0 {
			e.Keys.ReloadInterval.Duration = DefaultReload
		}
		for _, t := range e.Publish {
			if t.S3 != nil && t.S3.Region == "" {
				t.S3.Region = DefaultS3Region
			}
		}
		if m := e.Keys.Managed; m != nil {
			if m.Namespace == "" {
				m.Namespace = ns
			}
			if m.RotateEvery.Duration == 0 {
				m.RotateEvery.Duration = DefaultRotateEvery
			}
			if m.PublishAhead.Duration == 0 {
				m.PublishAhead.Duration = DefaultPublishAhead
			}
			if m.Leeway.Duration == 0 {
				m.Leeway.Duration = DefaultLeeway
			}
			if m.Resync.Duration == 0 {
				m.Resync.Duration = DefaultResync
			}
		}
	}
}

// Validate checks the whole configuration and reports every problem, each
// prefixed with the field it is about.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Cluster == "" {
		bad("cluster", "is required: the cluster name used in the cluster claim and in sub")
	} else if strings.Contains(c.Cluster, ":") {
		bad("cluster", "%q must not contain ':' (sub is <cluster>:<namespace>:<serviceaccount>)", c.Cluster)
	}
	if c.JWKSMaxAge.Duration < 0 || c.JWKSMaxAge.Duration > 24*time.Hour {
		bad("jwksMaxAge", "%v must be between 0 and 24h", c.JWKSMaxAge.Duration)
	}
	if len(c.Endpoints) == 0 {
		bad("endpoints", "at least one endpoint is required")
	}
	if c.Publishing.Interval.Duration < 10*time.Second {
		bad("publishing.interval", "%v is too short (at least 10s)", c.Publishing.Interval.Duration)
	}
	if u := c.Publishing.UnreadyAfter; u != nil && u.Duration < 0 {
		bad("publishing.unreadyAfter", "%v is negative (0s turns the readiness check off)", u.Duration)
	}
	names := map[string]int{}
	routes := map[string]int{}
	for i := range c.Endpoints {
		e := &c.Endpoints[i]
		f := fmt.Sprintf("endpoints[%d]", i)
		if err := contract.ValidateName(e.Name); err != nil {
			bad(f+".name", "%v", err)
		} else if j, dup := names[e.Name]; dup {
			bad(f+".name", "%q is also the name of endpoints[%d]", e.Name, j)
		} else {
			names[e.Name] = i
		}
		if u, err := ParseIssuer(e.Issuer); err != nil {
			bad(f+".issuer", "%v", err)
		} else {
			r := u.Host + u.Path
			if j, dup := routes[r]; dup {
				bad(f+".issuer", "%q is also the issuer of endpoints[%d]; issuers must differ in host or path", e.Issuer, j)
			}
			routes[r] = i
		}
		if e.Audience == "" {
			bad(f+".audience", "is required: the aud of minted tokens (for Vault, the role's bound_audiences)")
		}
		if e.TTL.Duration < MinTTL || e.TTL.Duration > MaxTTL {
			bad(f+".ttl", "%v is outside the allowed %v to %v", e.TTL.Duration, MinTTL, MaxTTL)
		}
		if m := e.PodTTL.Min.Duration; m < MinTTL || m > e.TTL.Duration {
			bad(f+".podTTL.min", "%v is outside %v to the endpoint's ttl %v", m, MinTTL, e.TTL.Duration)
		}
		switch e.Algorithm {
		case keys.RS256, keys.ES256, keys.EdDSA:
		default:
			bad(f+".algorithm", "%q is not supported: use RS256, ES256 or EdDSA", e.Algorithm)
		}
		c.validateKeys(e, f+".keys", bad)
		e.Claims.Validate(f+".claims", bad)
		for j, t := range e.Publish {
			validateTarget(t, fmt.Sprintf("%s.publish[%d]", f, j), bad)
		}
		if len(e.Allow) == 0 {
			bad(f+".allow", "has no rule, so nothing would be allowed; add for example {namespace: \"*\", serviceAccount: \"*\"} to allow every ServiceAccount")
		}
		for j, r := range e.Allow {
			validateRule(r, fmt.Sprintf("%s.allow[%d]", f, j), bad)
		}
		for j, r := range e.Deny {
			validateRule(r, fmt.Sprintf("%s.deny[%d]", f, j), bad)
		}
	}
	return errors.Join(errs...)
}

func (c *Config) validateKeys(e *Endpoint, f string, bad func(string, string, ...any)) {
	k := e.Keys
	switch {
	case len(k.Files) > 0 && k.Managed != nil:
		bad(f, "set either files or managed, not both")
	case len(k.Files) == 0 && k.Managed == nil:
		bad(f, "no key source: set files (PEM private keys) or managed (keys kept in a Secret)")
	case len(k.Files) > 0:
		found := false
		for _, p := range k.Files {
			found = found || p == k.SigningFile
		}
		if !found {
			bad(f+".signingFile", "%q is not one of files", k.SigningFile)
		}
		if k.ReloadInterval.Duration < 100*time.Millisecond {
			bad(f+".reloadInterval", "%v is too short (at least 100ms)", k.ReloadInterval.Duration)
		}
	default:
		m := k.Managed
		if m.Secret == "" {
			bad(f+".managed.secret", "is required: the name of the Secret that keeps the keys")
		}
		if m.Resync.Duration < 100*time.Millisecond {
			bad(f+".managed.resync", "%v is too short (at least 100ms)", m.Resync.Duration)
		}
		if least := c.JWKSMaxAge.Duration + m.Resync.Duration; m.PublishAhead.Duration <= least {
			bad(f+".managed.publishAhead", "%v must exceed jwksMaxAge + resync (%v), or verifiers could meet a key they have not fetched yet", m.PublishAhead.Duration, least)
		}
		if m.RotateEvery.Duration <= m.PublishAhead.Duration {
			bad(f+".managed.rotateEvery", "%v must exceed publishAhead (%v)", m.RotateEvery.Duration, m.PublishAhead.Duration)
		}
		// A replica that has not resynced yet signs with the old key for up to
		// resync after the switch; those tokens must verify until their exp.
		if least := m.Resync.Duration + ClockSkew; m.Leeway.Duration < least {
			bad(f+".managed.leeway", "%v must be at least resync + %v of clock skew (%v): a replica may sign with the previous key for up to resync after a switch, and its tokens must stay verifiable until they expire", m.Leeway.Duration, ClockSkew, least)
		}
	}
}

func validateTarget(t PublishTarget, f string, bad func(string, string, ...any)) {
	if k := t.kinds(); len(k) != 1 {
		bad(f, "set exactly one of directory, s3, gcs and azureBlob (found %d: %s)", len(k), strings.Join(k, ", "))
		return
	}
	switch {
	case t.Directory != nil:
		if !path.IsAbs(t.Directory.Path) {
			bad(f+".directory.path", "%q must be an absolute path", t.Directory.Path)
		}
	case t.S3 != nil:
		s := t.S3
		if s.Bucket == "" {
			bad(f+".s3.bucket", "is required")
		}
		validateStore(f+".s3", s.Endpoint, s.Prefix, s.CAFile, "AWS", bad)
	case t.GCS != nil:
		g := t.GCS
		if g.Bucket == "" {
			bad(f+".gcs.bucket", "is required")
		}
		if g.Anonymous && g.Endpoint == "" {
			bad(f+".gcs.anonymous", "is only for an emulator (set endpoint); Google's API takes no anonymous writes")
		}
		validateStore(f+".gcs", g.Endpoint, g.Prefix, g.CAFile, "Google", bad)
	default:
		a := t.AzureBlob
		if a.Account == "" {
			bad(f+".azureBlob.account", "is required: the storage account name")
		}
		if a.Container == "" {
			bad(f+".azureBlob.container", "is required")
		}
		validateStore(f+".azureBlob", a.Endpoint, a.Prefix, a.CAFile, "Azure", bad)
	}
}

// validateStore checks what the bucket-like targets share: an http(s)
// endpoint, a prefix without a leading '/', a CA file only for an endpoint
// of one's own (cloud is whose roots the default endpoint is trusted by).
func validateStore(f, endpoint, prefix, caFile, cloud string, bad func(string, string, ...any)) {
	if endpoint != "" {
		if u, err := url.Parse(endpoint); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad(f+".endpoint", "%q is not an http(s) URL", endpoint)
		}
	}
	if strings.HasPrefix(prefix, "/") {
		bad(f+".prefix", "%q must not start with '/': object names have no leading slash", prefix)
	}
	if caFile != "" && endpoint == "" {
		bad(f+".caFile", "is only for an endpoint of your own; %s is trusted through the system roots", cloud)
	}
}

func validateRule(r Rule, f string, bad func(string, string, ...any)) {
	for _, g := range []struct{ field, glob, what, alphabet string }{
		{"namespace", r.Namespace, "a namespace (lowercase letters, digits and '-')", "abcdefghijklmnopqrstuvwxyz0123456789-"},
		{"serviceAccount", r.ServiceAccount, "a ServiceAccount name (lowercase letters, digits, '-' and '.')", "abcdefghijklmnopqrstuvwxyz0123456789-."},
	} {
		if _, err := path.Match(g.glob, ""); err != nil {
			bad(f+"."+g.field, "%q is not a valid glob: %v", g.glob, err)
			continue
		}
		if c, ok := impossible(g.glob, g.alphabet); ok {
			hint := ""
			if strings.ToLower(string(c)) != string(c) {
				hint = fmt.Sprintf("; did you mean %q?", strings.ToLower(g.glob))
			}
			bad(f+"."+g.field, "%q can never match %s: it requires %q%s", g.glob, g.what, c, hint)
			continue
		}
		if why := unmatchable(g.glob, g.alphabet); why != "" {
			bad(f+"."+g.field, "%q can never match %s: %s", g.glob, g.what, why)
		}
	}
}

// unmatchable says why glob can match no name of the grammar both
// namespaces (DNS-1123 labels) and ServiceAccount names (DNS-1123
// subdomains) follow, beyond a literal character outside alphabet (see
// impossible): a [...] class that admits no character of alphabet, or a
// literal first or last character that is not a lowercase letter or digit.
// "" when it may match.
func unmatchable(glob, alphabet string) string {
	var first, last string // the literal at each end, "" for a wildcard or class
	for i, n := 0, 0; i < len(glob); i, n = i+1, n+1 {
		lit := ""
		switch c := glob[i]; c {
		case '*', '?':
		case '[':
			j := strings.IndexByte(glob[i+1:], ']')
			if j < 0 {
				return ""
			}
			class := glob[i : i+j+2]
			ok := false
			for _, a := range alphabet {
				if m, _ := path.Match(class, string(a)); m {
					ok = true
					break
				}
			}
			if !ok {
				return fmt.Sprintf("the class %s admits none of its characters", class)
			}
			i += j + 1
		case '\\':
			if i+1 < len(glob) {
				i++
				lit = string(glob[i])
			}
		default:
			lit = string(c)
		}
		if n == 0 {
			first = lit
		}
		last = lit
	}
	alnum := func(s string) bool { return len(s) == 1 && (s[0] >= 'a' && s[0] <= 'z' || s[0] >= '0' && s[0] <= '9') }
	if first != "" && !alnum(first) {
		return fmt.Sprintf("names start with a lowercase letter or digit, not %q", first)
	}
	if last != "" && !alnum(last) {
		return fmt.Sprintf("names end with a lowercase letter or digit, not %q", last)
	}
	return ""
}

// impossible returns a literal character of glob that no name made of
// alphabet can contain (outside [...] classes, which are left to path.Match),
// so a rule such as deny {namespace: Kube-System} is refused instead of
// silently denying nothing.
func impossible(glob, alphabet string) (rune, bool) {
	for i := 0; i < len(glob); i++ {
		switch c := glob[i]; c {
		case '*', '?':
		case '[':
			if j := strings.IndexByte(glob[i+1:], ']'); j >= 0 {
				i += j + 1
			}
		case '\\':
			if i+1 < len(glob) {
				i++
				if !strings.ContainsRune(alphabet, rune(glob[i])) {
					return rune(glob[i]), true
				}
			}
		default:
			if !strings.ContainsRune(alphabet, rune(c)) {
				return rune(c), true
			}
		}
	}
	return 0, false
}

// ParseIssuer checks an issuer URL: https, a host, no query, fragment, user
// info or trailing slash (OIDC clients compare it byte for byte).
func ParseIssuer(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("is required: an https URL such as https://sts.example.com/vault")
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL: %v", s, err)
	}
	switch {
	case u.Scheme != "https":
		return nil, fmt.Errorf("%q must use https (OIDC discovery requires it)", s)
	case u.Host == "":
		return nil, fmt.Errorf("%q has no host", s)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(s, "?") || strings.HasSuffix(s, "#"):
		return nil, fmt.Errorf("%q must not carry user info, a query or a fragment", s)
	case strings.HasSuffix(u.Path, "/"):
		return nil, fmt.Errorf("%q must not end with '/'; OIDC clients compare the issuer exactly", s)
	}
	// The path names where documents are served and published (a
	// directory, an object prefix): "." and ".." would lead elsewhere, and
	// an empty segment is no name.
	if u.Path != "" {
		for _, seg := range strings.Split(strings.TrimPrefix(u.Path, "/"), "/") {
			if seg == "" || seg == "." || seg == ".." {
				return nil, fmt.Errorf("%q has an empty, '.' or '..' path segment; name the path plainly", s)
			}
		}
	}
	return u, nil
}
