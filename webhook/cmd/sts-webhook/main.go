// Command sts-webhook is a placeholder until issue #5 lands: it prints its version,
// and otherwise refuses to start, so nobody deploys it by mistake.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kube-sts/kube-sts/shared/buildinfo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sts-webhook: %v\n", err)
		os.Exit(1)
	}
}

func run(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("sts-webhook", flag.ContinueOnError)
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version {
		fmt.Println("sts-webhook", buildinfo.Version)
		return nil
	}
	return errors.New("not implemented yet (tracked in issue #5)")
}
