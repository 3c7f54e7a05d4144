// Command sts-issuer is kube-sts's Security Token Service: it exchanges a
// Pod's projected ServiceAccount token for a short-lived JWT once the API
// server has confirmed the token and the Pod is alive, and serves OIDC
// discovery and JWKS so relying parties (Vault) can verify what it signs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kube-sts/kube-sts/issuer/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := app.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "sts-issuer: %v\n", err)
		os.Exit(1)
	}
}
