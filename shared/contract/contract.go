// Package contract holds the names that the webhook, the sidecar, the issuer and
// the users' Pods agree on. Each name is defined here once; nothing else in the
// project spells them out. The package has no dependencies beyond the standard
// library, because the sidecar imports it and must stay small.
package contract

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Labels and annotations on user Pods.
const (
	// Prefix is the domain of every label and annotation kube-sts reads.
	Prefix = "tremolo.io/"

	// AnnotationUser is the numeric uid the sidecar runs as and owns the token file with.
	AnnotationUser = Prefix + "user"
	// AnnotationGroup is the numeric gid the sidecar runs as; consumers in this group can read the token.
	AnnotationGroup = Prefix + "group"
	// AnnotationCreateVolume "false" (the reference's annotation): the Pod
	// brings its own VolumeName volume, which the sidecar must be able to
	// write (an emptyDir, also disk-backed, an ephemeral or a
	// persistentVolumeClaim volume); the webhook adds none.
	AnnotationCreateVolume = Prefix + "create-volume"
	// AnnotationNonRoot (the reference's annotation) is accepted, "true" or
	// "false": the sidecar always runs with runAsNonRoot and a non-root uid.
	AnnotationNonRoot = Prefix + "non-root"

	// SelectionValue is the label value that asks for injection.
	SelectionValue = "true"

	// DefaultUser and DefaultGroup are Vault agent's uid and gid, so the common
	// case needs no annotations.
	DefaultUser  int64 = 100
	DefaultGroup int64 = 1000
)

// Names. An endpoint is one issuer of sts-issuer (its URL path, audience,
// keys, rules): its name labels the issuer's metrics and logs. An injector
// is the webhook's configuration for the Pods of one endpoint (image, env
// names, CA): its name is the <sts> of the label `tremolo.io/<sts>` and
// names the Pod's further token files. The chart makes one of each per
// entry of sts.endpoints, the injector named by injector.label (which may
// differ from the endpoint's name: vault and vault-sts in the reference).

// SelectionLabel is the label key that selects the injector called injector:
// a Pod labeled `tremolo.io/<injector>: "true"` gets that injector's sidecar.
func SelectionLabel(injector string) string { return Prefix + injector }

// ValueAnnotation is the annotation whose value is handed to the Pod's
// containers in the injector's configured env var (the key equals the label key).
func ValueAnnotation(injector string) string { return Prefix + injector }

// reserved are names under Prefix that are not injector names.
var reserved = map[string]bool{"user": true, "group": true, "create-volume": true, "non-root": true}

// ValidateName reports whether name can be an injector's or an endpoint's
// name: an injector's becomes the name part of a label key, so it must be a DNS-1123 label
// (lower-case alphanumerics and '-', 1-63 characters) and must not collide with
// the annotations under Prefix (user, group, create-volume, non-root), nor be
// "token" (see FurtherTokenPath).
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("name is empty")
	}
	if len(name) > 63 {
		return fmt.Errorf("name %q is longer than 63 characters", name)
	}
	for i, r := range name {
		ok := (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || (r == '-' && i != 0 && i != len(name)-1)
		if !ok {
			return fmt.Errorf("name %q must consist of lower-case letters, digits and '-', and start and end with a letter or digit", name)
		}
	}
	if reserved[name] {
		return fmt.Errorf("name %q is reserved for the %s%s annotation", name, Prefix, name)
	}
	if MountPath+"/"+name+".jwt" == TokenPath {
		return fmt.Errorf("name %q is reserved: as a Pod's further injector its token file would be %s, the first injector's", name, TokenPath)
	}
	return nil
}

// MaxID is the largest uid/gid accepted: Kubernetes validates runAsUser and
// runAsGroup as 0..2147483647 (MaxInt32), below the Linux limit.
const MaxID = 1<<31 - 1

// ParseID parses the value of the user or group annotation named key. The
// error names the annotation and the bad value, so the admission refusal can
// be acted on as it stands.
func ParseID(key, value string) (int64, error) {
	v := strings.TrimSpace(value)
	if v == "" {
		return 0, fmt.Errorf("annotation %s is empty; set it to a numeric id such as %q or remove it", key, "1000")
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("annotation %s=%q is not a number; set it to a numeric id such as %q", key, value, "1000")
	}
	if n < 0 {
		return 0, fmt.Errorf("annotation %s=%q is negative; ids must be 0 or greater", key, value)
	}
	if n > MaxID {
		return 0, fmt.Errorf("annotation %s=%q is larger than the largest id %d", key, value, int64(MaxID))
	}
	return n, nil
}

// Names of what the webhook injects.
const (
	// ContainerName is the sidecar container.
	ContainerName = "sts-creds-sidecar"
	// VolumeName is the in-memory emptyDir that holds the minted token.
	VolumeName = "sts-tokens"
	// SubjectVolumeName is the projected ServiceAccount token volume, scoped
	// to the STS audience, that the sidecar exchanges.
	SubjectVolumeName = "sts-subject-token"

	// MountPath is where VolumeName is mounted: read-write in the sidecar,
	// read-only everywhere else.
	MountPath = "/tokens"
	// TokenFileName is the minted token's file inside MountPath.
	TokenFileName = "token.jwt"
	// TokenPath is the full path consumers read.
	TokenPath = MountPath + "/" + TokenFileName

	// SubjectMountPath is where the projected ServiceAccount token is mounted in the sidecar.
	SubjectMountPath = "/var/run/secrets/kube-sts"
	// SubjectTokenFileName is the projected token's file name inside SubjectMountPath.
	SubjectTokenFileName = "token"
	// SubjectTokenPath is the full path of the projected ServiceAccount token.
	SubjectTokenPath = SubjectMountPath + "/" + SubjectTokenFileName
)

// Default names of the env vars the webhook sets in the Pod's other containers.
// Each injector can rename them (the reference deployment uses VAULT_TOKEN_FILE
// and VAULT_TOKEN_ENABLED).
const (
	// DefaultTokenPathEnv carries TokenPath.
	DefaultTokenPathEnv = "STS_TOKEN_FILE"
	// DefaultValueEnv carries the value of the `tremolo.io/<sts>` annotation.
	DefaultValueEnv = "STS_TOKEN_ENABLED"
)

// SidecarBinary is the sidecar's path in its image; the webhook's probes run it.
const SidecarBinary = "/sts-creds-sidecar"

// InitContainerName is the init container that runs `once` where native
// sidecars are not available.
const InitContainerName = ContainerName + "-init"

// CAVolumeName holds the CA bundle from a ConfigMap (the reference's "ouca"),
// mounted in the sidecar at CAMountPath.
const (
	CAVolumeName = "sts-ca"
	CAMountPath  = "/etc/kube-sts/ca"
	// MoreCAVolumeName holds the CA bundles from ConfigMaps of a Pod's
	// further injectors, one file per injector (MoreCAPath).
	MoreCAVolumeName = "sts-ca-more"
	MoreCAMountPath  = "/etc/kube-sts/ca-more"
)

// Several injectors on one Pod (labels tremolo.io/a and tremolo.io/b both
// "true") share one sidecar, which keeps one token per injector. The Pod's
// first injector, in the order of the webhook's configuration, keeps the
// names of the single-injector case: its token at TokenPath, its projected
// ServiceAccount token at SubjectTokenPath. Every further injector <sts>
// gets its own files beside them:
//
//	token:                    /tokens/<sts>.jwt
//	projected subject token:  /var/run/secrets/kube-sts/<sts>.token
//	CA bundle (caConfigMap):  /etc/kube-sts/ca-more/<sts>.crt
//
// No name collides with token.jwt: ValidateName refuses "token" and dots.

// Token groups. A container sees only the tokens of the injectors that
// target it. Where every targeted container is targeted by every injector
// of the Pod (always so with one injector), they all mount VolumeName, which
// holds every token. Each other set of injectors that some container is
// targeted by gets a group volume of its own, GroupVolumeName(k), k = 1, 2,
// ..., mounted at MountPath in those containers; the sidecar mounts it at
// GroupMountPath(k) and writes a copy of each member's token there, under
// the same file name. So every path above stays what it is, and a container
// targeted only by Vault cannot open the AWS token.
const groupVolumePrefix = VolumeName + "-"

// GroupVolumeName is the volume of token group k (k >= 1).
func GroupVolumeName(k int) string { return groupVolumePrefix + strconv.Itoa(k) }

// IsGroupVolume reports whether name is a token group volume's.
func IsGroupVolume(name string) bool {
	rest, ok := strings.CutPrefix(name, groupVolumePrefix)
	if !ok || rest == "" {
		return false
	}
	n, err := strconv.Atoi(rest)
	return err == nil && n >= 1 && strconv.Itoa(n) == rest
}

// GroupMountPath is where the sidecar mounts token group k.
func GroupMountPath(k int) string { return "/var/run/kube-sts/tokens-" + strconv.Itoa(k) }

// FurtherTokenPath is the token file of a Pod's further injector.
func FurtherTokenPath(injector string) string { return MountPath + "/" + injector + ".jwt" }

// StatusPath is where the sidecar keeps the last exchange failure of the
// token at tokenPath while it has no fresh token (a dot file beside it, in
// the same volume): its probe prints it, so the kubelet's probe events, and
// with them kubectl describe pod, say why a token is missing. The file is
// removed at the next good exchange.
func StatusPath(tokenPath string) string {
	dir, base := path.Split(tokenPath)
	return dir + "." + base + ".status"
}

// FurtherSubjectTokenFileName is the projected ServiceAccount token of a
// Pod's further injector, inside SubjectMountPath.
func FurtherSubjectTokenFileName(injector string) string { return injector + ".token" }

// MoreCAFileName is the CA bundle of a Pod's further injector inside MoreCAMountPath.
func MoreCAFileName(injector string) string { return injector + ".crt" }

// Token is one token the sidecar keeps: an exchange at one STS endpoint
// and the files its result goes to. A Pod's first injector's comes from
// the sidecar's flat flags and env (EnvExchangeURL, EnvOutputFile...); the
// further injectors' are the JSON list in EnvTokens, which the webhook
// encodes. The sidecar reads both into one list of Token.
type Token struct {
	// Name is the injector's name; it labels the sidecar's logs (empty for
	// the first token, whose flags carry no name).
	Name string `json:"name"`
	// ExchangeURL is the issuer endpoint's token URL.
	ExchangeURL string `json:"exchangeURL"`
	// SubjectTokenFile is the projected ServiceAccount token to exchange.
	SubjectTokenFile string `json:"subjectTokenFile"`
	// OutputFile is where the minted token is written.
	OutputFile string `json:"outputFile"`
	// Copies are further files the token is written to, each atomically:
	// its file in every token group volume (GroupMountPath) of the Pod.
	Copies []string `json:"copies,omitempty"`
	// CAFile or CAPEM is the CA bundle of the issuer's certificate (neither: system roots).
	CAFile string `json:"caFile,omitempty"`
	CAPEM  string `json:"caPEM,omitempty"`
}

// AnnotationTTL on a Pod asks for a shorter lifetime than the endpoints'
// ttl, as a Go duration ("10m"). The webhook checks its form and passes it
// to the sidecar (EnvLifetime); the issuer decides what it grants (never
// longer than the endpoint's ttl; an endpoint may forbid or bound it).
const AnnotationTTL = "kube-sts.io/ttl"

// ParseTTL reads an AnnotationTTL value: a Go duration of whole seconds,
// from 1m to 24h (what an issuer endpoint's ttl may be).
func ParseTTL(v string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	switch {
	case err != nil:
		return 0, fmt.Errorf("annotation %s=%q is not a duration such as 10m", AnnotationTTL, v)
	case d < time.Minute || d > 24*time.Hour || d%time.Second != 0:
		return 0, fmt.Errorf("annotation %s=%q must be whole seconds from 1m to 24h", AnnotationTTL, v)
	}
	return d, nil
}

// AnnotationInject on a ServiceAccount names injectors, comma-separated
// ("vault-sts" or "vault-sts,aws"): every Pod that uses the ServiceAccount
// gets them as if labeled SelectionLabel(name): "true", in the namespaces
// that enable ServiceAccount opt-in (LabelServiceAccountOptIn). A Pod's own
// label for an injector wins over it: "false" opts that Pod out.
const AnnotationInject = "kube-sts.io/inject"

// LabelServiceAccountOptIn "true" on a namespace enables ServiceAccount
// opt-in there (the chart's webhook.serviceAccountOptIn.namespaceLabel
// default): the webhook's second registration entry selects such
// namespaces, so that their unlabeled Pods reach it too.
const LabelServiceAccountOptIn = "kube-sts.io/serviceaccount-opt-in"

// ParseInject splits an AnnotationInject value into injector names: comma
// separated, blanks around each trimmed, empty entries and repeats dropped.
func ParseInject(v string) []string {
	var names []string
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f != "" && !slices.Contains(names, f) {
			names = append(names, f)
		}
	}
	return names
}

// InjectedAnnotation marks a Pod the webhook has mutated, with the injector's
// name, so that re-invocations reconcile instead of refusing our own names.
const InjectedAnnotation = "kube-sts.io/injected"

// SkipContainersAnnotation lists, comma-separated, containers (and init
// containers) that get neither the /tokens mount nor the env vars.
const SkipContainersAnnotation = "kube-sts.io/skip-containers"

// The sidecar's modes, its first argument.
const (
	ModeRun   = "run"
	ModeOnce  = "once"
	ModeProbe = "probe"
	// ModeAwait waits until the token file holds a valid token: the native
	// sidecar's postStart hook, which the kubelet completes before it starts
	// the next init container.
	ModeAwait = "await"
)

// Env vars the sidecar reads; each has a flag of the same meaning. The webhook
// sets them, so they are part of the contract between the two.
const (
	EnvSubjectTokenFile = "STS_SUBJECT_TOKEN_FILE"
	EnvExchangeURL      = "STS_EXCHANGE_URL"
	EnvOutputFile       = "STS_OUTPUT_FILE"
	EnvCAFile           = "STS_CA_FILE"
	EnvCAPEM            = "STS_CA_PEM"
	EnvHTTPTimeout      = "STS_HTTP_TIMEOUT"
	EnvRefreshFraction  = "STS_REFRESH_FRACTION"
	EnvBackoffMin       = "STS_BACKOFF_MIN"
	EnvBackoffMax       = "STS_BACKOFF_MAX"
	EnvRefusedRetry     = "STS_REFUSED_RETRY"
	EnvProbeMargin      = "STS_PROBE_MARGIN"
	EnvAwaitTimeout     = "STS_AWAIT_TIMEOUT"
	EnvTerminationLog   = "STS_TERMINATION_LOG"
	EnvLogLevel         = "STS_LOG_LEVEL"
	EnvFileMode         = "STS_FILE_MODE"
	// EnvLifetime carries the Pod's AnnotationTTL: the lifetime the
	// sidecar asks for at every exchange, of every token of the Pod.
	EnvLifetime = "STS_LIFETIME"
	// EnvTokens is a JSON list of Token: the tokens of a Pod's
	// further injectors, kept beside the first.
	EnvTokens = "STS_TOKENS"
	// EnvOutputCopies lists, comma-separated, further files the first
	// token is written to (Token.Copies of the first token).
	EnvOutputCopies = "STS_OUTPUT_COPIES"
)
