// Command images builds kube-sts's release images without Docker, for every
// architecture, as `make images-local` runs it:
//
//	go run ./cmd/images --out ../dist/images --version v0.1.0 [--prefix kube-sts] [--arch amd64,arm64]
//
// It writes <name>-<arch>.tar (docker-archives for `ctr images import` or
// `kind load image-archive`) and <name>.oci (an OCI layout with one image
// per architecture behind an index, for any OCI-aware copy tool to push).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/kube-sts/kube-sts/release/images"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "images: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	out := fs.String("out", "dist/images", "output folder")
	version := fs.String("version", "dev", "version stamped into the binaries and used as the tag")
	prefix := fs.String("prefix", "kube-sts", "image name prefix: <prefix>/<binary>:<version>")
	arches := fs.String("arch", strings.Join(images.Arches, ","), "comma-separated GOARCH list")
	only := fs.String("only", "", "comma-separated binaries to build (default: all)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o := images.Options{Dir: *out, Prefix: *prefix, Version: *version, Arches: strings.Split(*arches, ",")}
	if *only != "" {
		o.Only = strings.Split(*only, ",")
	}
	built, err := images.Build(ctx, o)
	if err != nil {
		return err
	}
	if err := images.Verify(built, o.Dir); err != nil {
		return fmt.Errorf("the images built are not what we ship: %w", err)
	}
	for _, b := range built {
		st, err := os.Stat(b.Archive)
		if err != nil {
			return err
		}
		fmt.Printf("%-40s %-6s %5.1f MB  %s\n", b.Tag, b.Arch, float64(st.Size())/1e6, b.Archive)
	}
	return nil
}
