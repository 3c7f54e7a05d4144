package readiness

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestStepsInOrderWithRetries: the second step starts only after the first
// succeeded, each is retried until it does, and the gate is ready only then.
func TestStepsInOrderWithRetries(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	var order []string
	fails := map[string]int{"api": 2, "keys": 1}
	step := func(name string) Step {
		return Step{Name: name, Retry: time.Millisecond, Hint: "check " + name, Do: func(context.Context) error {
			order = append(order, name)
			if fails[name] > 0 {
				fails[name]--
				return errors.New(name + " not yet")
			}
			return nil
		}}
	}
	g := New(zap.New(core), step("api"), step("keys"))
	if g.Ready() {
		t.Fatal("ready before running")
	}
	g.Run(context.Background())
	if !g.Ready() {
		t.Fatal("not ready after every step succeeded")
	}
	if got := len(order); got != 5 || order[2] != "api" || order[3] != "keys" {
		t.Fatalf("steps ran as %v, want api x3 then keys x2", order)
	}
	if n := logs.FilterMessage("api failed; retrying").FilterField(zap.String("hint", "check api")).Len(); n != 2 {
		t.Fatalf("%d retry lines for api, want 2 with the hint", n)
	}
}

// TestStopsWithContext: a step that never succeeds leaves the gate unready,
// and Run returns when the context ends.
func TestStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	g := New(zap.NewNop(), Step{Name: "never", Retry: 5 * time.Millisecond, Do: func(context.Context) error { return errors.New("no") }})
	done := make(chan struct{})
	go func() { g.Run(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the context ended")
	}
	if g.Ready() {
		t.Fatal("ready although a step never succeeded")
	}
}
