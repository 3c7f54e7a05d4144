// Package app is sts-creds-sidecar put together: options from flags and the
// environment, then one function per mode (runProbe, runAwait, runOnce,
// runLoops).
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/kube-sts/kube-sts/logging"
	"github.com/kube-sts/kube-sts/shared/buildinfo"
	"github.com/kube-sts/kube-sts/shared/contract"
	"github.com/kube-sts/kube-sts/sidecar/internal/exchanger"
	"github.com/kube-sts/kube-sts/sidecar/internal/options"
	"github.com/kube-sts/kube-sts/sidecar/internal/probe"
	"github.com/kube-sts/kube-sts/sidecar/internal/refresh"
)

// Run is sts-creds-sidecar's main: it returns when the work of its mode is
// done (probe, once) or ctx ends (run).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if p, ok := gcPercent(os.Getenv); ok {
		debug.SetGCPercent(p)
	}
	return run(ctx, args, os.Getenv, stdout, stderr)
}

// DefaultGCPercent is the sidecar's garbage collection target unless GOGC
// is set. Go's default (100) lets the heap reach its 4 MB minimum goal
// before the first collection: a sidecar allocating a few KiB per refresh
// or restore grows for many minutes before it levels off, and thousands of
// them carry that. At 25 the heap is collected at 1 MB; the cost is a
// collection of about a millisecond every few dozen seconds at most.
const DefaultGCPercent = 25

// gcPercent is the GC percent to set: DefaultGCPercent unless the operator
// chose one with GOGC (which the runtime has already applied).
func gcPercent(getenv func(string) string) (int, bool) {
	if getenv("GOGC") != "" {
		return 0, false
	}
	return DefaultGCPercent, true
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, err := options.Parse(args, getenv, stderr)
	if err != nil {
		return err
	}
	if o.Version {
		fmt.Fprint(stdout, buildinfo.Get().Text("sts-creds-sidecar"))
		return nil
	}
	switch o.Mode {
	case contract.ModeProbe:
		return runProbe(o)
	case contract.ModeAwait:
		return runAwait(ctx, o, containerLog(stderr))
	}
	log, err := logging.New(o.LogLevel, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	loops, err := newLoops(o, log)
	if err != nil {
		return err
	}
	if o.Mode == contract.ModeOnce {
		err = runOnce(ctx, loops)
	} else {
		err = runLoops(ctx, o, loops)
	}
	if err != nil {
		writeTerminationMessage(o.TerminationLog, err.Error())
	}
	return err
}

// runProbe is the readiness probe: quiet on success (the kubelet runs it
// every few seconds), else why each missing token is missing.
func runProbe(o options.Options) error {
	return probe.All(outputFiles(o.Tokens()), time.Now(), o.ProbeMargin)
}

// runAwait is the native sidecar's postStart hook: it returns once every
// token is on disk. It says so in the sidecar's log ("token awaited", with
// when it started and how long it waited), since the kubelet drops a
// successful hook's own output: how long a Pod's next container waited on
// the token, and how late the hook itself started, read from kubectl logs.
func runAwait(ctx context.Context, o options.Options, logTo io.Writer) error {
	started := time.Now()
	err := probe.Await(ctx, outputFiles(o.Tokens()), o.ProbeMargin, o.AwaitTimeout)
	if log, lerr := logging.New(o.LogLevel, logTo); lerr == nil {
		fields := []zap.Field{zap.Time("started", started), zap.Duration("waited", time.Since(started))}
		if err != nil {
			log.Error("no token awaited", append(fields, zap.Error(err))...)
		} else {
			log.Info("token awaited", fields...)
		}
		_ = log.Sync()
	}
	return err
}

// containerLog is where a process the kubelet runs inside the sidecar's
// container (the postStart hook) writes to the container's own log: the
// standard error of the container's first process when that is this same
// binary (the sidecar's run loop, whose uid the hook shares); else fallback
// (outside a sidecar container, e.g. a test on a host).
func containerLog(fallback io.Writer) io.Writer {
	first, err1 := os.Stat("/proc/1/exe")
	self, err2 := os.Stat("/proc/self/exe")
	if err1 != nil || err2 != nil || !os.SameFile(first, self) {
		return fallback
	}
	if f, err := os.OpenFile("/proc/1/fd/2", os.O_WRONLY|os.O_APPEND, 0); err == nil {
		return f
	}
	return fallback
}

// runOnce exchanges every token once (the classic init container).
func runOnce(ctx context.Context, loops []*loop) error {
	return forEach(loops, func(l *loop) error {
		if err := l.r.Once(ctx); err != nil {
			l.log.Error("exchange failed", zap.Error(err))
			return fmt.Errorf("exchange at %s: %w", l.url, err)
		}
		return nil
	})
}

// runLoops keeps every token fresh until ctx ends. Stopped (the Pod ends,
// or the kubelet restarts the sidecar after a failed postStart hook), it
// fails with the reason when a token is missing, so the container's last
// state says why.
func runLoops(ctx context.Context, o options.Options, loops []*loop) error {
	if err := forEach(loops, func(l *loop) error { return l.r.Run(ctx) }); err != nil {
		return err
	}
	if err := probe.All(outputFiles(o.Tokens()), time.Now(), 0); err != nil {
		return fmt.Errorf("stopped without a valid token: %w", err)
	}
	return nil
}

// forEach runs f for every loop, one goroutine each: a slow or failing
// issuer endpoint never delays another endpoint's token.
func forEach(loops []*loop, f func(*loop) error) error {
	errs := make([]error, len(loops))
	var wg sync.WaitGroup
	for i, l := range loops {
		wg.Go(func() { errs[i] = f(l) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// newLoops logs the start and builds one loop per token.
func newLoops(o options.Options, log *zap.Logger) ([]*loop, error) {
	all := o.Tokens()
	log.Info("starting",
		zap.String("version", buildinfo.Version),
		zap.String("mode", o.Mode),
		zap.String("subject_token_file", o.SubjectTokenFile),
		zap.String("exchange_url", o.ExchangeURL),
		zap.String("output_file", o.OutputFile),
		zap.String("ca", caSource(o.CAFile, o.CAPEM)),
		zap.Int("further_tokens", len(o.Further)),
		zap.Duration("http_timeout", o.HTTPTimeout),
		zap.Float64("refresh_fraction", o.RefreshFraction),
		zap.Duration("backoff_min", o.BackoffMin),
		zap.Duration("backoff_max", o.BackoffMax),
		zap.String("file_mode", fmt.Sprintf("%04o", uint32(o.FileMode))))
	loops := make([]*loop, 0, len(all))
	for i, t := range all {
		tlog := log
		if len(all) > 1 {
			// Each token's lines say which file they are about.
			tlog = log.With(zap.String("token_file", t.OutputFile))
		}
		if i > 0 {
			tlog.Info("keeping a further token",
				zap.String("injector", t.Name),
				zap.String("subject_token_file", t.SubjectTokenFile),
				zap.String("exchange_url", t.ExchangeURL),
				zap.String("ca", caSource(t.CAFile, t.CAPEM)))
		}
		l, err := newLoop(o, t, tlog)
		if err != nil {
			return nil, err
		}
		loops = append(loops, l)
	}
	return loops, nil
}

// maxTerminationMessage is what the kubelet keeps of a termination message.
const maxTerminationMessage = 4096

// writeTerminationMessage puts msg into the kubelet's termination message
// file, when there is one: kubectl describe pod shows it as the container's
// last state. Outside a Pod the file does not exist and nothing is written.
func writeTerminationMessage(path, msg string) {
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return
	}
	defer f.Close()
	if len(msg) > maxTerminationMessage {
		msg = msg[:maxTerminationMessage]
	}
	_, _ = f.WriteString(msg)
}

// outputFiles are the files of ts that the probe reads.
func outputFiles(ts []contract.Token) []string {
	files := make([]string, len(ts))
	for i, t := range ts {
		files[i] = t.OutputFile
	}
	return files
}

// loop keeps one token.
type loop struct {
	r   *refresh.Refresher
	url string
	log *zap.Logger
}

func newLoop(o options.Options, t contract.Token, log *zap.Logger) (*loop, error) {
	httpClient, err := exchanger.NewHTTPClient(t.CAFile, t.CAPEM, o.HTTPTimeout)
	if err != nil {
		return nil, fmt.Errorf("configure TLS for %s: %w", t.ExchangeURL, err)
	}
	if strings.HasPrefix(t.ExchangeURL, "http:") {
		log.Warn("exchange URL is plain HTTP: the ServiceAccount token crosses the network unencrypted", zap.String("exchange_url", t.ExchangeURL))
	}
	r := refresh.New(refresh.Config{
		SubjectTokenFile: t.SubjectTokenFile,
		OutputFile:       t.OutputFile,
		Copies:           t.Copies,
		FileMode:         o.FileMode,
		Fraction:         o.RefreshFraction,
		Jitter:           0.05,
		Margin:           time.Minute,
		BackoffMin:       o.BackoffMin,
		BackoffMax:       o.BackoffMax,
		RefusedRetry:     o.RefusedRetry,
		StatusFile:       contract.StatusPath(t.OutputFile),
	}, &exchanger.Client{URL: t.ExchangeURL, HTTP: httpClient, Now: time.Now, Lifetime: o.Lifetime}, log)
	return &loop{r: r, url: t.ExchangeURL, log: log}, nil
}

// caSource says where a token's CA bundle comes from, for the start log.
func caSource(file, pem string) string {
	switch {
	case file != "" && pem != "":
		return "file and inline PEM"
	case file != "":
		return "file " + file
	case pem != "":
		return "inline PEM"
	}
	return "system roots"
}
