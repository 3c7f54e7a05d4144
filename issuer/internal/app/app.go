// Package app is sts-issuer put together: Options from the command line and
// environment, and Run, which composes the parts (clients, the local token
// screen, the server, key sources, readiness) and serves until the context
// ends.
package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/go-logr/zapr"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/kube-sts/kube-sts/issuer/internal/config"
	"github.com/kube-sts/kube-sts/issuer/internal/events"
	"github.com/kube-sts/kube-sts/issuer/internal/metrics"
	"github.com/kube-sts/kube-sts/issuer/internal/readiness"
	"github.com/kube-sts/kube-sts/issuer/internal/satoken"
	"github.com/kube-sts/kube-sts/issuer/internal/server"
	"github.com/kube-sts/kube-sts/logging"
	"github.com/kube-sts/kube-sts/shared/buildinfo"
)

// Run is sts-issuer's main: it returns when ctx ends or a part fails.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	if o.Version {
		fmt.Fprint(stdout, buildinfo.Get().Text("sts-issuer"))
		return nil
	}
	cfg, err := config.Load(o.ConfigFile, o.Namespace)
	if err != nil {
		// Each error names the file, its line and the field (configfile), one a line.
		return fmt.Errorf("configuration:\n%w", err)
	}
	if o.CheckConfig {
		fmt.Fprintf(stdout, "sts-issuer: %s is valid\n", o.ConfigFile)
		for _, n := range cfg.Notes() {
			fmt.Fprintf(stdout, "warning: %s\n", n)
		}
		return nil
	}
	log, err := logging.New(o.LogLevel, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	// controller-runtime's certificate watcher logs through its logr, on
	// our core as in the webhook.
	crlog.SetLogger(zapr.NewLogger(log))

	c, err := newClients(o)
	if err != nil {
		return err
	}
	verifier := satoken.New(satoken.Options{Get: c.getter(o.APITimeout)})
	m, err := metrics.New()
	if err != nil {
		return err
	}
	rev, err := newReviewer(o, cfg, c, m)
	if err != nil {
		return err
	}
	ready := readiness.New(log, append([]readiness.Step{
		{Name: "reaching the API server", Retry: 2 * time.Second, Do: c.ping},
		{Name: "loading the cluster's service-account keys", Retry: 6 * time.Second, Do: verifier.Refresh,
			Hint: "the issuer needs get on the non-resource URLs " + satoken.PathDiscovery + " and " + satoken.PathJWKS},
	}, rev.steps(log)...)...)
	pubs, err := newPublishers(ctx, cfg, log, m)
	if err != nil {
		return err
	}
	host, _ := os.Hostname() // in a Pod, its name: which replica said it
	srv, err := server.New(server.Options{
		Config: cfg, Reviewer: rev.Reviewer, Status: rev.status, Verifier: verifier, Events: events.New(ctx, c.events, host),
		MaxInFlight: o.MaxInFlight, MaxPending: o.MaxPending, MaxPendingPerAddress: o.MaxPendingPerAddress, PerTokenPerSecond: o.PerToken, Log: log, Metrics: m, APIReady: ready.Ready,
		Publishing: pubs.check,
	})
	if err != nil {
		return fmt.Errorf("build server: %w", err)
	}

	g, ctx := errgroup.WithContext(ctx)
	if err := startKeys(ctx, g, cfg, srv, pubs, c.control, log, m); err != nil {
		return err
	}
	pubs.run(ctx, g)
	rev.run(ctx, g)
	g.Go(func() error { ready.Run(ctx); return nil })
	g.Go(func() error { srv.ReportKeyAges(ctx, 15*time.Second); return nil })
	addr, err := startServers(ctx, g, o, srv, m, log)
	if err != nil {
		return err
	}
	logStart(log, o, cfg, addr)
	err = g.Wait()
	log.Info("stopped")
	return err
}

func logStart(log *zap.Logger, o *Options, cfg *config.Config, addr string) {
	log.Info("serving", zap.String("version", buildinfo.Version), zap.String("listen", addr), zap.Bool("tls", !o.InsecureHTTP), zap.String("review", o.Review),
		zap.String("metrics", o.MetricsListen), zap.String("cluster", cfg.Cluster), zap.Int("endpoints", len(cfg.Endpoints)))
	for _, e := range cfg.Endpoints {
		log.Info("endpoint", logging.Endpoint(e.Name), zap.String("issuer", e.Issuer), zap.String("audience", e.Audience),
			zap.String("subject_audience", e.SubjectAudience), zap.Duration("ttl", e.TTL.Duration), zap.String("algorithm", e.Algorithm),
			zap.Stringers("publish", e.Publish))
	}
	for _, n := range cfg.Notes() {
		log.Warn("configuration a cloud would not accept", zap.String("note", n))
	}
}
