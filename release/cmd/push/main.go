// Command push copies a local release (`make release-local`) to a registry,
// as `make push REGISTRY=... VERSION=...` runs it:
//
//	go run ./cmd/push --registry reg.example:5000 --version v0.1.0 [--dir ../dist/release/v0.1.0] [--insecure]
//
// Images go to <registry>/kube-sts/<binary>:<version> (every platform behind
// one index), the chart to oci://<registry>/kube-sts/charts/kube-sts. Credentials
// come from the Docker config (docker login, crane auth login).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kube-sts/kube-sts/release/images"
	"github.com/kube-sts/kube-sts/release/push"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "push: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("push", flag.ContinueOnError)
	registry := fs.String("registry", "", "host[:port][/path] to push to (required)")
	version := fs.String("version", "", "the release's version, e.g. v0.1.0 (required)")
	dir := fs.String("dir", "", "the release folder (default ../dist/release/<version>)")
	insecure := fs.Bool("insecure", false, "plain HTTP to the registry (a local test registry)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *registry == "" || *version == "" {
		return fmt.Errorf("--registry and --version are required")
	}
	if *dir == "" {
		*dir = "../dist/release/" + *version
	}
	var names []string
	for _, b := range images.Binaries {
		names = append(names, b.Name)
	}
	pushed, err := push.Push(ctx, push.Options{Dir: *dir, Registry: *registry, Version: *version, Binaries: names, Insecure: *insecure})
	for _, p := range pushed {
		fmt.Printf("%s@%s\n", p.Ref, p.Digest)
	}
	return err
}
