// Package readiness runs, in order, what an issuer must have done before it
// may say it is ready (reach the API server, load the cluster's keys), each
// step retried until it succeeds; /readyz reads the result.
package readiness

import (
	"context"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Step is one thing to get done, retried every Retry until Do succeeds.
type Step struct {
	// Name is what the log says: "<Name> failed; retrying" and "<Name> done".
	Name  string
	Do    func(context.Context) error
	Retry time.Duration
	// Hint is added to the failure log: what to check.
	Hint string
}

// Gate runs steps and reports whether all are done.
type Gate struct {
	steps []Step
	log   *zap.Logger
	done  atomic.Bool
}

// New returns a gate over steps.
func New(log *zap.Logger, steps ...Step) *Gate { return &Gate{steps: steps, log: log} }

// Ready reports whether every step has succeeded.
func (g *Gate) Ready() bool { return g.done.Load() }

// Run does the steps in order until all succeeded or ctx is done.
func (g *Gate) Run(ctx context.Context) {
	for _, s := range g.steps {
		for {
			err := s.Do(ctx)
			if err == nil {
				g.log.Info(s.Name + " done")
				break
			}
			fields := []zap.Field{zap.Error(err)}
			if s.Hint != "" {
				fields = append(fields, zap.String("hint", s.Hint))
			}
			g.log.Warn(s.Name+" failed; retrying", fields...)
			t := time.NewTimer(s.Retry)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
	g.done.Store(true)
}
