// Command sts-webhook is kube-sts's mutating admission webhook: Pods labeled
// tremolo.io/<sts>: "true" get the sts-creds-sidecar, the in-memory token
// volume and a projected ServiceAccount token scoped to the STS.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kube-sts/kube-sts/webhook/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := app.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "sts-webhook: %v\n", err)
		os.Exit(1)
	}
}
