// Command release writes a kube-sts release into a folder, as `make
// release-local` and the release workflow run it, minus pushing and signing:
//
//	go run ./cmd/release --version v0.1.0 --out ../dist/release/v0.1.0 \
//	  --helm $(e2e/hack/toolchain.sh --print-bin=helm) \
//	  --cyclonedx $(e2e/hack/toolchain.sh --print-bin=cyclonedx-gomod)
//
// With --check it only checks the version, as the release workflow does
// first. The version must be a release tag that manifests/charts/kube-sts/Chart.yaml
// agrees with (appVersion = the tag, version = the tag without v).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/kube-sts/kube-sts/release/bundle"
	"github.com/kube-sts/kube-sts/release/images"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "release: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("release", flag.ContinueOnError)
	out := fs.String("out", "", "output folder (emptied first)")
	version := fs.String("version", "", "the release tag, e.g. v0.1.0")
	prefix := fs.String("prefix", "kube-sts", "image name prefix: <prefix>/<binary>:<version>")
	arches := fs.String("arch", strings.Join(images.Arches, ","), "comma-separated GOARCH list")
	helm := fs.String("helm", "", "the pinned helm")
	cyclonedx := fs.String("cyclonedx", "", "the pinned cyclonedx-gomod")
	check := fs.Bool("check", false, "only check that --version is a release tag the chart agrees with")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *check {
		root, err := images.RepoRoot()
		if err != nil {
			return err
		}
		return bundle.CheckVersion(root, *version)
	}
	if *out == "" || *version == "" {
		return fmt.Errorf("--out and --version are required")
	}
	res, err := bundle.Build(ctx, bundle.Options{Dir: *out, Version: *version, Prefix: *prefix,
		Arches: strings.Split(*arches, ","), Helm: *helm, CycloneDX: *cyclonedx})
	if err != nil {
		return err
	}
	for _, b := range res.Images {
		fmt.Printf("image  %-44s %-6s %s\n", b.Tag, b.Arch, b.Archive)
	}
	for archive, sbom := range res.SBOMs {
		fmt.Printf("sbom   %-44s for %s\n", sbom, archive)
	}
	fmt.Printf("chart  %s\nsums   %s\n", res.Chart, res.Sums)
	return nil
}
