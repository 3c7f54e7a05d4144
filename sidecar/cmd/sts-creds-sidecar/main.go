// Command sts-creds-sidecar keeps a fresh STS token at /tokens/token.jwt: it
// exchanges the Pod's projected ServiceAccount token at the issuer and
// publishes the result atomically, well before the previous one expires.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kube-sts/kube-sts/sidecar/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := app.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	default:
		fmt.Fprintf(os.Stderr, "sts-creds-sidecar: %v\n", err)
		os.Exit(1)
	}
}
