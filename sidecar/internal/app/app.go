// Package app is sts-creds-sidecar put together: options from flags and the
// environment, then probe, once or the refresh loop.
package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/kube-sts/kube-sts/logging"
	"github.com/kube-sts/kube-sts/shared/buildinfo"
	"github.com/kube-sts/kube-sts/shared/contract"
	"github.com/kube-sts/kube-sts/sidecar/internal/exchanger"
	"github.com/kube-sts/kube-sts/sidecar/internal/options"
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
		fmt.Fprintln(stdout, "sts-creds-sidecar", buildinfo.Version)
		return nil
	}
	switch o.Mode {
	case contract.ModeProbe:
		// Quiet on success: the kubelet runs this every few seconds.
		return refresh.Probe(o.OutputFile, time.Now(), o.ProbeMargin)
	case contract.ModeAwait:
		return refresh.Await(ctx, o.OutputFile, o.ProbeMargin, o.AwaitTimeout)
	}

	log, err := logging.New(o.LogLevel, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	httpClient, err := exchanger.NewHTTPClient(o.CAFile, o.CAPEM, o.HTTPTimeout)
	if err != nil {
		return fmt.Errorf("configure TLS: %w", err)
	}
	caSource := "system roots"
	switch {
	case o.CAFile != "" && o.CAPEM != "":
		caSource = "file and inline PEM"
	case o.CAFile != "":
		caSource = "file " + o.CAFile
	case o.CAPEM != "":
		caSource = "inline PEM"
	}
	log.Info("starting",
		zap.String("version", buildinfo.Version),
		zap.String("mode", o.Mode),
		zap.String("subject_token_file", o.SubjectTokenFile),
		zap.String("exchange_url", o.ExchangeURL),
		zap.String("output_file", o.OutputFile),
		zap.String("ca", caSource),
		zap.Duration("http_timeout", o.HTTPTimeout),
		zap.Float64("refresh_fraction", o.RefreshFraction),
		zap.Duration("backoff_min", o.BackoffMin),
		zap.Duration("backoff_max", o.BackoffMax),
		zap.String("file_mode", fmt.Sprintf("%04o", uint32(o.FileMode))))
	if strings.HasPrefix(o.ExchangeURL, "http:") {
		log.Warn("exchange URL is plain HTTP: the ServiceAccount token crosses the network unencrypted")
	}

	r := refresh.New(refresh.Config{
		SubjectTokenFile: o.SubjectTokenFile,
		OutputFile:       o.OutputFile,
		FileMode:         o.FileMode,
		Fraction:         o.RefreshFraction,
		Jitter:           0.05,
		Margin:           time.Minute,
		BackoffMin:       o.BackoffMin,
		BackoffMax:       o.BackoffMax,
		RefusedRetry:     o.RefusedRetry,
	}, &exchanger.Client{URL: o.ExchangeURL, HTTP: httpClient, Now: time.Now}, log)

	if o.Mode == contract.ModeOnce {
		if err := r.Once(ctx); err != nil {
			log.Error("exchange failed", zap.Error(err))
			return fmt.Errorf("exchange at %s: %w", o.ExchangeURL, err)
		}
		return nil
	}
	return r.Run(ctx)
}
