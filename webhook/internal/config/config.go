// Package config is sts-webhook's configuration file: one entry per injector,
// each selected by the Pod label tremolo.io/<name>: "true".
package config

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kube-sts/kube-sts/configfile"
	"github.com/kube-sts/kube-sts/shared/contract"
	"github.com/kube-sts/kube-sts/shared/exchange"
)

// Native sidecar modes.
const (
	NativeAuto   = "auto"
	NativeAlways = "always"
	NativeNever  = "never"
)

// Config is the whole file.
type Config struct {
	Injectors []Injector `json:"injectors"`
}

// Injector is what one selection label injects.
type Injector struct {
	// Name selects Pods labeled tremolo.io/<name>: "true".
	Name string `json:"name"`
	// ExchangeURL is the issuer's token endpoint the sidecar calls.
	ExchangeURL string `json:"exchangeURL"`
	// SubjectAudience of the projected ServiceAccount token; default: the
	// exchange URL without /token (the issuer URL, the issuer's default).
	SubjectAudience string `json:"subjectAudience,omitempty"`
	// ExpirationSeconds of the projected token (default 600, the API server's minimum).
	ExpirationSeconds int64 `json:"expirationSeconds,omitempty"`
	// Image and ImagePullPolicy of the sidecar.
	Image           string            `json:"image"`
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`
	// Resources of the sidecar (default requests 5m CPU / 16Mi, limit 32Mi).
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
	// User and Group the sidecar runs as when the Pod does not say
	// (default 100/1000, Vault agent's).
	User  *int64 `json:"user,omitempty"`
	Group *int64 `json:"group,omitempty"`
	// TokenPathEnv is set to the token's path in the chosen containers.
	TokenPathEnv string `json:"tokenPathEnv,omitempty"`
	// ValueEnv carries the value of the tremolo.io/<name> annotation.
	ValueEnv string `json:"valueEnv,omitempty"`
	// CAPEM is the CA bundle of the issuer, handed to the sidecar inline.
	CAPEM string `json:"caPEM,omitempty"`
	// CAConfigMap names a ConfigMap in the Pod's namespace with the CA bundle
	// (compatibility with the reference's "ouca").
	CAConfigMap *ConfigMapRef `json:"caConfigMap,omitempty"`
	// CAFile is a PEM bundle on the webhook's own disk (e.g. ca.crt of the
	// serving Secret that cert-manager or --tls-mode=self keeps), re-read when
	// it changes and handed to the sidecar inline like caPEM.
	CAFile string `json:"caFile,omitempty"`
	// Containers that get the /tokens mount and env, by name; empty: all
	// containers and init containers except the sidecar.
	Containers []string `json:"containers,omitempty"`
	// NativeSidecar is auto (detect from the API server), always or never.
	NativeSidecar string `json:"nativeSidecar,omitempty"`
	// TokenVolumeSizeLimit bounds the in-memory token volume (default 1Mi).
	TokenVolumeSizeLimit *resource.Quantity `json:"tokenVolumeSizeLimit,omitempty"`
	// ReadinessProbe (default false) gives the sidecar a readiness probe
	// (sts-creds-sidecar probe): the Pod is not Ready while a token is
	// missing or about to expire, and each failed probe is an event that
	// says why (kubectl describe pod). Off by default: its first run, a
	// runtime exec beside the app container's creation, delayed the app's
	// start by 95 to 210 ms at p50 on the 2-core test node (docs/performance.md),
	// an issuer outage longer than a token's life would take every such Pod
	// out of its Services at once, and the token's presence at start is
	// already guaranteed (the native sidecar's postStart await, or the init
	// container) while TokenRefused Events say why a token is missing.
	ReadinessProbe *bool `json:"readinessProbe,omitempty"`
	// InsecureHTTP allows an http:// exchangeURL, to a loopback address only
	// (a single-node test setup); the token would otherwise cross the network
	// in clear text.
	InsecureHTTP bool `json:"insecureHTTP,omitempty"`
}

// ConfigMapRef is a key of a ConfigMap in the Pod's namespace.
type ConfigMapRef struct {
	Name string `json:"name"`
	// Key holding the PEM bundle (default ca.crt).
	Key string `json:"key,omitempty"`
}

// Load reads, defaults and validates a configuration file.
func Load(file string) (*Config, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return parse(file, data)
}

// Parse decodes strictly, defaults and validates. Errors say "line N: field: ...".
func Parse(data []byte) (*Config, error) { return parse("", data) }

// parse decodes file's data with configfile: every decoding and validation
// error names the file, the line and the field.
func parse(file string, data []byte) (*Config, error) {
	var c Config
	pos, err := configfile.Decode(file, data, &c)
	if err != nil {
		return nil, err
	}
	c.Default()
	if err := c.Validate(); err != nil {
		return nil, pos.Annotate(err)
	}
	return &c, nil
}

// Default fills in defaults.
func (c *Config) Default() {
	for i := range c.Injectors {
		in := &c.Injectors[i]
		if in.SubjectAudience == "" {
			in.SubjectAudience = strings.TrimSuffix(in.ExchangeURL, "/token")
		}
		if in.ExpirationSeconds == 0 {
			in.ExpirationSeconds = 600
		}
		if in.ImagePullPolicy == "" {
			in.ImagePullPolicy = corev1.PullIfNotPresent
		}
		if in.Resources == nil {
			in.Resources = &corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("5m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")},
			}
		}
		if in.User == nil {
			u := contract.DefaultUser
			in.User = &u
		}
		if in.Group == nil {
			g := contract.DefaultGroup
			in.Group = &g
		}
		if in.TokenPathEnv == "" {
			in.TokenPathEnv = contract.DefaultTokenPathEnv
		}
		if in.ValueEnv == "" {
			in.ValueEnv = contract.DefaultValueEnv
		}
		if in.CAConfigMap != nil && in.CAConfigMap.Key == "" {
			in.CAConfigMap.Key = "ca.crt"
		}
		if in.NativeSidecar == "" {
			in.NativeSidecar = NativeAuto
		}
		if in.TokenVolumeSizeLimit == nil {
			q := resource.MustParse("1Mi")
			in.TokenVolumeSizeLimit = &q
		}
		if in.ReadinessProbe == nil {
			in.ReadinessProbe = new(bool)
		}
	}
}

// Validate reports every problem, each prefixed with its field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if len(c.Injectors) == 0 {
		bad("injectors", "at least one injector is required")
	}
	seen := map[string]int{}
	for i, in := range c.Injectors {
		f := fmt.Sprintf("injectors[%d]", i)
		if err := contract.ValidateName(in.Name); err != nil {
			bad(f+".name", "%v", err)
		} else if j, dup := seen[in.Name]; dup {
			bad(f+".name", "%q is also the name of injectors[%d]", in.Name, j)
		}
		seen[in.Name] = i
		if err := validateExchangeURL(in.ExchangeURL, in.InsecureHTTP); err != nil {
			bad(f+".exchangeURL", "%v", err)
		}
		if in.SubjectAudience == "" {
			bad(f+".subjectAudience", "is required")
		}
		if in.ExpirationSeconds < 600 || in.ExpirationSeconds > 86400 {
			bad(f+".expirationSeconds", "%d must be between 600 (the API server's minimum) and 86400", in.ExpirationSeconds)
		}
		if in.Image == "" {
			bad(f+".image", "is required: the sts-creds-sidecar image")
		} else if err := validateImage(in.Image); err != nil {
			bad(f+".image", "%v", err)
		}
		switch in.ImagePullPolicy {
		case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
		default:
			bad(f+".imagePullPolicy", "%q: use Always, IfNotPresent or Never", in.ImagePullPolicy)
		}
		if *in.User <= 0 || *in.User > contract.MaxID {
			bad(f+".user", "%d must be a non-root uid (1 to %d)", *in.User, int64(contract.MaxID))
		}
		if *in.Group < 0 || *in.Group > contract.MaxID {
			bad(f+".group", "%d must be a gid (0 to %d)", *in.Group, int64(contract.MaxID))
		}
		if n := btoi(in.CAPEM != "") + btoi(in.CAConfigMap != nil) + btoi(in.CAFile != ""); n > 1 {
			bad(f, "set one of caPEM, caFile or caConfigMap, not %d", n)
		}
		if in.CAPEM != "" {
			if err := validateCAPEM(in.CAPEM); err != nil {
				bad(f+".caPEM", "%v", err)
			}
		}
		if in.CAFile != "" && !strings.HasPrefix(in.CAFile, "/") {
			bad(f+".caFile", "%q must be an absolute path", in.CAFile)
		}
		if in.CAConfigMap != nil && in.CAConfigMap.Name == "" {
			bad(f+".caConfigMap.name", "is required")
		}
		switch in.NativeSidecar {
		case NativeAuto, NativeAlways, NativeNever:
		default:
			bad(f+".nativeSidecar", "%q: use auto, always or never", in.NativeSidecar)
		}
	}
	return errors.Join(errs...)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// validateExchangeURL: the issuer's token endpoint (…/token) over https, or
// over http to a loopback address when insecureHTTP says so.
func validateExchangeURL(raw string, insecureHTTP bool) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Scheme != "https" && u.Scheme != "http" {
		return fmt.Errorf("%q is not an https URL of the issuer's token endpoint", raw)
	}
	if u.Scheme == "http" {
		if !insecureHTTP {
			return fmt.Errorf("%q is plain http: the sidecar would send ServiceAccount tokens in clear text; use https (insecureHTTP: true allows a loopback address, for single-node tests)", raw)
		}
		if !isLoopback(u.Hostname()) {
			return fmt.Errorf("%q: insecureHTTP allows only a loopback address (127.0.0.0/8, ::1, localhost), not %s", raw, u.Hostname())
		}
	}
	if !strings.HasSuffix(u.Path, exchange.EndpointPath) || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not the issuer's token endpoint, which is <issuer URL>%s", raw, exchange.EndpointPath)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// imageRef is an image reference as the container runtimes read it:
// [registry[:port]/]path[:tag][@algorithm:digest], path components in lower
// case (the distribution specification's grammar).
var imageRef = regexp.MustCompile(`^` +
	`(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?/)?` +
	`[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*` +
	`(?::[\w][\w.-]{0,127})?` +
	`(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$`)

// validateImage refuses what no runtime can pull, with the reason when it is
// a common one (a placeholder left in, upper case, a scheme).
func validateImage(ref string) error {
	switch {
	case strings.ContainsAny(ref, "<>{}"):
		return fmt.Errorf("%q still holds a placeholder: name the sidecar image your nodes pull", ref)
	case strings.Contains(ref, "://"):
		return fmt.Errorf("%q is a URL: an image reference has no scheme (registry/path:tag)", ref)
	case !imageRef.MatchString(ref):
		return fmt.Errorf("%q is not an image reference ([registry/]path[:tag][@sha256:digest], the path in lower case)", ref)
	}
	return nil
}

// validateCAPEM: one or more PEM certificates, each of which parses.
func validateCAPEM(bundle string) error {
	rest := []byte(bundle)
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("holds a %s block: only CERTIFICATE blocks belong in a CA bundle", block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("certificate %d does not parse: %v", n+1, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("holds no PEM certificate")
	}
	if strings.TrimSpace(string(rest)) != "" {
		return fmt.Errorf("has text after its last certificate that is not PEM")
	}
	return nil
}
