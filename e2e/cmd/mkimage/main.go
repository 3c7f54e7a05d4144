// Command mkimage builds a one-layer container image from local files,
// without Docker or a registry, and writes it as a docker-archive tarball that
// `ctr images import` loads. The e2e suite and `make demo` use it for the
// images of our binaries, the pause image, the test app and Vault's agent.
//
//	mkimage --tag local/sts-creds-sidecar:e2e --out sidecar.tar \
//	  --add bin/sts-creds-sidecar:/sts-creds-sidecar --entrypoint /sts-creds-sidecar --user 65532
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
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
	layerTar, err := buildLayer(adds, links)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar)), nil })
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", *arch
	if *entrypoint != "" {
		cf.Config.Entrypoint = strings.Split(*entrypoint, ",")
	}
	cf.Config.User = *user
	cf.Config.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin"}, envs...)
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	ref, err := name.NewTag(*tag)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(*out, ref, img)
}

// buildLayer makes the layer: parent directories, files, symlinks.
func buildLayer(adds, links list) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	mkdirs := func(p string) error {
		var parts []string
		for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
			parts = append([]string{d}, parts...)
		}
		for _, d := range parts {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755}); err != nil {
				return err
			}
		}
		return nil
	}
	// /tmp is writable for tools that need it (busybox sh heredocs).
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777}); err != nil {
		return nil, err
	}
	for _, a := range adds {
		parts := strings.Split(a, ":")
		if len(parts) < 2 || len(parts) > 3 {
			return nil, fmt.Errorf("--add %q: want SRC:DST[:MODE]", a)
		}
		data, err := os.ReadFile(parts[0])
		if err != nil {
			return nil, err
		}
		mode := int64(0o755)
		if len(parts) == 3 {
			m, err := strconv.ParseInt(parts[2], 8, 32)
			if err != nil {
				return nil, fmt.Errorf("--add %q: bad mode", a)
			}
			mode = m
		}
		if err := mkdirs(parts[1]); err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(parts[1], "/"), Mode: mode, Size: int64(len(data))}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	for _, l := range links {
		dst, target, ok := strings.Cut(l, ":")
		if !ok {
			return nil, fmt.Errorf("--symlink %q: want DST:TARGET", l)
		}
		if err := mkdirs(dst); err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: strings.TrimPrefix(dst, "/"), Linkname: target, Mode: 0o777}); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
