// Package options is the sidecar's configuration: every setting is a flag and
// an env var (the webhook passes env), read through shared/cli as the other
// binaries' options are, and validated in one place before anything runs.
package options

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kube-sts/kube-sts/logging"
	"github.com/kube-sts/kube-sts/shared/cli"
	"github.com/kube-sts/kube-sts/shared/contract"
	"github.com/kube-sts/kube-sts/shared/exchange"
)

// Options configures sts-creds-sidecar.
type Options struct {
	// Mode is run (the loop), once (exchange, write, exit), probe (check the
	// file) or await (wait until the file holds a valid token).
	Mode string
	// SubjectTokenFile is the projected ServiceAccount token, re-read at every exchange.
	SubjectTokenFile string
	// ExchangeURL is the issuer's token endpoint.
	ExchangeURL string
	// OutputFile is where the minted token is published.
	OutputFile string
	// Copies are further files the token is published to (token group
	// volumes, contract.GroupMountPath).
	Copies []string
	// CAFile and CAPEM are the CA bundle that signs the issuer's certificate;
	// when both are empty the system roots are used.
	CAFile string
	CAPEM  string
	// HTTPTimeout bounds one exchange.
	HTTPTimeout time.Duration
	// RefreshFraction of the token's lifetime after which it is refreshed.
	RefreshFraction float64
	// BackoffMin and BackoffMax bound the retries of transient failures.
	BackoffMin time.Duration
	BackoffMax time.Duration
	// RefusedRetry is the pause after the issuer refused the exchange.
	RefusedRetry time.Duration
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// FileMode of the published token.
	FileMode fs.FileMode
	// ProbeMargin: probe fails when the token expires sooner than this.
	ProbeMargin time.Duration
	// AwaitTimeout bounds await; the kubelet then restarts the sidecar.
	AwaitTimeout time.Duration
	// TerminationLog is the container's termination message file: run and
	// once write why they ended without a token there when it exists (the
	// kubelet creates it; kubectl describe pod shows it as the last state's
	// message).
	TerminationLog string
	// Lifetime is asked for at every exchange (0: the endpoint's ttl): the
	// Pod's kube-sts.io/ttl. The issuer decides what it grants.
	Lifetime time.Duration
	// Further are the tokens of a Pod's further injectors, each kept by its
	// own loop beside the token above (which is then the Pod's first).
	Further []contract.Token
	// Version asks for the version only.
	Version bool

	// env is the bookkeeping between AddFlags and Validate: which flag an
	// environment variable sets (a flag wins over its variable).
	env *envFlags
}

type envFlags struct {
	flags *flag.FlagSet
	names map[string]string // flag → environment variable
	err   error             // a variable that did not parse
}

// Tokens are every token the sidecar keeps, in one list from both inputs:
// the one the flat flags describe (the Pod's first injector's), then the
// further ones of --tokens.
func (o Options) Tokens() []contract.Token {
	first := contract.Token{
		ExchangeURL: o.ExchangeURL, SubjectTokenFile: o.SubjectTokenFile, OutputFile: o.OutputFile,
		Copies: o.Copies, CAFile: o.CAFile, CAPEM: o.CAPEM,
	}
	return append([]contract.Token{first}, o.Further...)
}

// Defaults are the values used when neither flag nor env var is set.
func Defaults() Options {
	return Options{
		Mode:             contract.ModeRun,
		SubjectTokenFile: contract.SubjectTokenPath,
		OutputFile:       contract.TokenPath,
		HTTPTimeout:      10 * time.Second,
		RefreshFraction:  0.8,
		BackoffMin:       time.Second,
		BackoffMax:       30 * time.Second,
		RefusedRetry:     30 * time.Second,
		LogLevel:         "info",
		FileMode:         0o440,
		ProbeMargin:      10 * time.Second,
		AwaitTimeout:     5 * time.Minute,
		TerminationLog:   "/dev/termination-log",
	}
}

// listValue reads a comma-separated list; a repeated flag adds to it.
type listValue struct{ l *[]string }

func (v listValue) String() string {
	if v.l == nil {
		return ""
	}
	return strings.Join(*v.l, ",")
}

func (v listValue) Set(s string) error {
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			*v.l = append(*v.l, f)
		}
	}
	return nil
}

// tokensValue reads --tokens, a JSON list of contract.Token.
type tokensValue struct{ t *[]contract.Token }

func (v tokensValue) String() string {
	if v.t == nil || len(*v.t) == 0 {
		return ""
	}
	data, _ := json.Marshal(*v.t)
	return string(data)
}

func (v tokensValue) Set(s string) error {
	var t []contract.Token
	d := json.NewDecoder(strings.NewReader(s))
	d.DisallowUnknownFields()
	if err := d.Decode(&t); err != nil {
		return fmt.Errorf("not a JSON list of {name, exchangeURL, subjectTokenFile, outputFile, caFile, caPEM}: %w", err)
	}
	*v.t = t
	return nil
}

type modeValue struct{ m *fs.FileMode }

func (v modeValue) String() string {
	if v.m == nil {
		return ""
	}
	return fmt.Sprintf("%04o", uint32(*v.m))
}

func (v modeValue) Set(s string) error {
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		return fmt.Errorf("%q is not an octal file mode such as 0440", s)
	}
	*v.m = fs.FileMode(n)
	return nil
}

// Usage is printed by -h.
const Usage = `Usage: sts-creds-sidecar [run|once|probe|await|version|help] [flags]

  run    (default) exchange now, then keep the token fresh until stopped
  once   exchange once, write the token and exit (an init container)
  probe  exit 0 only if the token file holds a JWT valid for --probe-margin;
         otherwise print why, with the refresh loop's last failure (the
         readiness probe the webhook sets)
  await  wait until probe would pass (at most --await-timeout; at once an
         error when the issuer refused the exchange): the native sidecar's
         postStart hook, so the next init container starts at once
  version  print the version, commit, date, Go version and platform (= --version)
  help     print this help (= -h)

Every flag can also be set with the env var shown in brackets; a flag wins over its env var.
`

// Parse reads args (without the program name) and env the way every
// kube-sts binary does (shared/cli: flags, then the environment, then one
// validation), after the mode, which comes first. It returns flag.ErrHelp
// when help was asked for, after printing it to out.
func Parse(args []string, getenv func(string) string, out io.Writer) (Options, error) {
	o := Defaults()
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		o.Mode, args = args[0], args[1:]
	}
	// "version" and "help" read as modes, as users type them; they are the
	// flags of the same names.
	switch o.Mode {
	case "version":
		o.Mode, args = contract.ModeRun, append([]string{"-version"}, args...)
	case "help":
		o.Mode, args = contract.ModeRun, append([]string{"-help"}, args...)
	}
	if err := cli.Parse("sts-creds-sidecar", &o, args, getenv, out); err != nil {
		return Options{}, err
	}
	return o, nil
}

// AddFlags binds the options to flags; each flag also has an environment
// variable (the webhook passes the configuration as env).
func (o *Options) AddFlags(flags *flag.FlagSet) {
	e := &envFlags{flags: flags, names: map[string]string{}}
	o.env = e
	str := func(p *string, name, envName, usage string) {
		flags.StringVar(p, name, *p, usage+" ["+envName+"]")
		e.names[name] = envName
	}
	dur := func(p *time.Duration, name, envName, usage string) {
		flags.DurationVar(p, name, *p, usage+" ["+envName+"]")
		e.names[name] = envName
	}
	str(&o.SubjectTokenFile, "subject-token-file", contract.EnvSubjectTokenFile, "projected ServiceAccount token to exchange")
	str(&o.ExchangeURL, "exchange-url", contract.EnvExchangeURL, "issuer token endpoint, https://<issuer>/token")
	str(&o.OutputFile, "output-file", contract.EnvOutputFile, "where to publish the minted token")
	flags.Var(listValue{&o.Copies}, "copy-to", "further files to publish the token to, comma-separated or repeated ["+contract.EnvOutputCopies+"]")
	e.names["copy-to"] = contract.EnvOutputCopies
	str(&o.CAFile, "ca-file", contract.EnvCAFile, "PEM CA bundle that signs the issuer's certificate")
	str(&o.CAPEM, "ca-pem", contract.EnvCAPEM, "the same CA bundle inline, as PEM text")
	dur(&o.HTTPTimeout, "http-timeout", contract.EnvHTTPTimeout, "timeout of one exchange")
	flags.Float64Var(&o.RefreshFraction, "refresh-fraction", o.RefreshFraction, "share of the token lifetime after which it is refreshed ["+contract.EnvRefreshFraction+"]")
	e.names["refresh-fraction"] = contract.EnvRefreshFraction
	dur(&o.BackoffMin, "backoff-min", contract.EnvBackoffMin, "first retry delay after a transient failure")
	dur(&o.BackoffMax, "backoff-max", contract.EnvBackoffMax, "largest retry delay after transient failures")
	dur(&o.RefusedRetry, "refused-retry", contract.EnvRefusedRetry, "retry delay after the issuer refused the exchange")
	str(&o.LogLevel, "log-level", contract.EnvLogLevel, "debug, info, warn or error")
	flags.Var(modeValue{&o.FileMode}, "file-mode", "octal mode of the token file ["+contract.EnvFileMode+"]")
	e.names["file-mode"] = contract.EnvFileMode
	dur(&o.ProbeMargin, "probe-margin", contract.EnvProbeMargin, "probe fails when the token expires sooner than this")
	dur(&o.AwaitTimeout, "await-timeout", contract.EnvAwaitTimeout, "how long await waits for the first token")
	dur(&o.Lifetime, "lifetime", contract.EnvLifetime, "token lifetime to ask the issuer for, shorter than its endpoint's (0: the endpoint's); the issuer decides")
	str(&o.TerminationLog, "termination-log", contract.EnvTerminationLog, "where run and once say why they ended without a token, if the file exists (the kubelet's termination message)")
	flags.Var(tokensValue{&o.Further}, "tokens", "further tokens to keep, a JSON list of {name, exchangeURL, subjectTokenFile, outputFile, caFile, caPEM} ["+contract.EnvTokens+"]")
	e.names["tokens"] = contract.EnvTokens
	flags.BoolVar(&o.Version, "version", false, "print the version and exit")
	flags.Usage = func() {
		fmt.Fprint(flags.Output(), Usage+"\nFlags:\n")
		flags.PrintDefaults()
	}
}

// Complete sets every flag that was not given from its environment
// variable, when that is set: a flag wins over its variable.
func (o *Options) Complete(getenv func(string) string) {
	e := o.env
	if e == nil {
		return
	}
	set := map[string]bool{}
	e.flags.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(e.names)) {
		envName := e.names[name]
		v := getenv(envName)
		if set[name] || v == "" {
			continue
		}
		if err := e.flags.Set(name, v); err != nil {
			errs = append(errs, fmt.Errorf("env %s: %w", envName, err))
		}
	}
	e.err = errors.Join(errs...)
}

// Validate checks the whole configuration and reports every problem at
// once, with the environment variables that did not parse.
func (o *Options) Validate() error {
	var errs []error
	if o.env != nil {
		errs = append(errs, o.env.err)
		o.env = nil
	}
	if o.Version {
		return nil
	}
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch o.Mode {
	case contract.ModeRun, contract.ModeOnce, contract.ModeProbe, contract.ModeAwait:
	default:
		bad("unknown mode %q: use %s, %s, %s or %s", o.Mode, contract.ModeRun, contract.ModeOnce, contract.ModeProbe, contract.ModeAwait)
	}
	if o.OutputFile == "" {
		bad("--output-file (%s) is empty", contract.EnvOutputFile)
	}
	files := map[string]string{o.OutputFile: "--output-file"}
	for i, t := range o.Further {
		f := fmt.Sprintf("--tokens (%s) [%d]", contract.EnvTokens, i)
		if err := contract.ValidateName(t.Name); err != nil {
			bad("%s: %v", f, err)
		}
		if t.OutputFile == "" {
			bad("%s: outputFile is empty", f)
		} else if other, dup := files[t.OutputFile]; dup {
			bad("%s: outputFile %s is also the file of %s", f, t.OutputFile, other)
		}
		files[t.OutputFile] = fmt.Sprintf("%s[%d]", "--tokens", i)
		if o.Mode == contract.ModeProbe || o.Mode == contract.ModeAwait {
			continue
		}
		if t.SubjectTokenFile == "" {
			bad("%s: subjectTokenFile is empty", f)
		}
		if !httpURL(t.ExchangeURL) {
			bad("%s: exchangeURL %q is not an http(s) URL", f, t.ExchangeURL)
		}
	}
	if o.ProbeMargin < 0 {
		bad("--probe-margin (%s) is negative", contract.EnvProbeMargin)
	}
	if o.AwaitTimeout <= 0 {
		bad("--await-timeout (%s) must be positive", contract.EnvAwaitTimeout)
	}
	if o.Mode != contract.ModeProbe && o.Mode != contract.ModeAwait {
		if o.SubjectTokenFile == "" {
			bad("--subject-token-file (%s) is empty", contract.EnvSubjectTokenFile)
		}
		if o.ExchangeURL == "" {
			bad("--exchange-url (%s) is required: the issuer's token endpoint, https://<issuer>/token", contract.EnvExchangeURL)
		} else if !httpURL(o.ExchangeURL) {
			bad("--exchange-url (%s) %q is not an http(s) URL", contract.EnvExchangeURL, o.ExchangeURL)
		}
		if o.HTTPTimeout <= 0 {
			bad("--http-timeout (%s) must be positive", contract.EnvHTTPTimeout)
		}
		if o.RefreshFraction < 0.1 || o.RefreshFraction > 0.95 {
			bad("--refresh-fraction (%s) %v must be between 0.1 and 0.95", contract.EnvRefreshFraction, o.RefreshFraction)
		}
		if o.BackoffMin <= 0 || o.BackoffMax < o.BackoffMin {
			bad("backoff bounds must satisfy 0 < --backoff-min (%v) <= --backoff-max (%v)", o.BackoffMin, o.BackoffMax)
		}
		if o.RefusedRetry < o.BackoffMin {
			bad("--refused-retry (%s) %v must be at least --backoff-min %v", contract.EnvRefusedRetry, o.RefusedRetry, o.BackoffMin)
		}
		if o.Lifetime < 0 || o.Lifetime%time.Second != 0 || o.Lifetime > exchange.MaxLifetime {
			bad("--lifetime (%s) %v must be whole seconds from 0 (the endpoint's) to %v", contract.EnvLifetime, o.Lifetime, exchange.MaxLifetime)
		}
		if o.FileMode&^0o777 != 0 || o.FileMode&0o002 != 0 || o.FileMode&0o400 == 0 {
			bad("--file-mode (%s) %04o must be a permission mode the owner can read and others cannot write", contract.EnvFileMode, uint32(o.FileMode))
		}
	}
	if err := logging.CheckLevel(o.LogLevel); err != nil {
		bad("--log-level (%s) %v", contract.EnvLogLevel, err)
	}
	return errors.Join(errs...)
}

func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}
