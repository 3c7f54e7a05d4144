// Command mkimage builds a one-layer container image from local files,
// without Docker or a registry, and writes it as a docker-archive tarball that
// `ctr images import` loads.
//
//	go run ./cmd/mkimage --tag local/pause:e2e --out pause.tar \
//	  --add /tmp/pause:/pause --entrypoint /pause --user 65532
//
// It is for images that are not ours: the e2e node harness (node.BuildImage)
// builds its test images with it (pause, testapp, Vault's). Our release
// images are built by cmd/images, which lays them out like the Dockerfiles.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/kube-sts/kube-sts/release/ociimage"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	tag := fs.String("tag", "", "image name, e.g. local/sts-creds-sidecar:e2e")
	out := fs.String("out", "", "docker-archive tarball to write")
	entrypoint := fs.String("entrypoint", "", "comma-separated entrypoint")
	user := fs.String("user", "", "user (uid[:gid]) the image runs as")
	arch := fs.String("arch", runtime.GOARCH, "architecture recorded in the image")
	var adds, links, envs list
	fs.Var(&adds, "add", "SRC:DST[:MODE] file to add (repeatable)")
	fs.Var(&links, "symlink", "DST:TARGET symlink to add (repeatable)")
	fs.Var(&envs, "env", "K=V environment (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *tag == "" || *out == "" {
		return errors.New("--tag and --out are required")
	}
	spec := ociimage.Spec{Arch: *arch, User: *user, Env: envs}
	if *entrypoint != "" {
		spec.Entrypoint = strings.Split(*entrypoint, ",")
	}
	for _, a := range adds {
		f, err := ociimage.ParseFile(a)
		if err != nil {
			return fmt.Errorf("--add %w", err)
		}
		spec.Files = append(spec.Files, f)
	}
	for _, l := range links {
		dst, target, ok := strings.Cut(l, ":")
		if !ok {
			return fmt.Errorf("--symlink %q: want DST:TARGET", l)
		}
		spec.Links = append(spec.Links, ociimage.Link{Dst: dst, Target: target})
	}
	img, err := ociimage.Build(spec)
	if err != nil {
		return err
	}
	return ociimage.WriteArchive(*out, *tag, img)
}
