// Package ociimage builds one-layer container images from local files without
// Docker or a registry: docker-archives that `ctr images import` and
// `kind load image-archive` read, and OCI layouts holding one image per
// architecture behind an index, as `docker buildx` would push them.
package ociimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// File is a local file placed into the image.
type File struct {
	Src, Dst string
	Mode     int64 // 0: 0755
}

// Link is a symlink in the image.
type Link struct{ Dst, Target string }

// Spec is one image for one architecture.
type Spec struct {
	Arch       string // GOARCH, e.g. amd64, arm64
	Files      []File
	Links      []Link
	Entrypoint []string
	User       string   // uid[:gid]
	Env        []string // K=V, after PATH
}

// Build assembles the image.
func Build(s Spec) (v1.Image, error) {
	layerTar, err := layer(s)
	if err != nil {
		return nil, err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar)), nil })
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", s.Arch
	if s.Arch == "arm64" {
		cf.Variant = "v8"
	}
	cf.Config.Entrypoint = s.Entrypoint
	cf.Config.User = s.User
	cf.Config.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin"}, s.Env...)
	return mutate.ConfigFile(img, cf)
}

// WriteArchive writes img as a docker-archive tagged tag.
func WriteArchive(file, tag string, img v1.Image) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(file, ref, img)
}

// WriteIndex writes an OCI image layout in dir with one image per platform
// behind one index, tagged tag (org.opencontainers.image.ref.name).
func WriteIndex(dir, tag string, imgs []v1.Image) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	var adds []mutate.IndexAddendum
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			return err
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant},
		}})
	}
	idx := mutate.AppendManifests(empty.Index, adds...)
	return p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag}))
}

// layer makes the one layer: /tmp, parent directories, files, symlinks.
func layer(s Spec) ([]byte, error) {
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
	for _, f := range s.Files {
		data, err := os.ReadFile(f.Src)
		if err != nil {
			return nil, err
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o755
		}
		if err := mkdirs(f.Dst); err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(f.Dst, "/"), Mode: mode, Size: int64(len(data))}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	for _, l := range s.Links {
		if err := mkdirs(l.Dst); err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: strings.TrimPrefix(l.Dst, "/"), Linkname: l.Target, Mode: 0o777}); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Entry is one entry of an image's layers: its header and, for regular
// files, its content.
type Entry struct {
	*tar.Header
	Data []byte
}

// Contents reads every layer of img, by path ("/usr/bin/x"); later layers
// win. For checking what an image holds.
func Contents(img v1.Image) (map[string]Entry, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	out := map[string]Entry{}
	for _, l := range layers {
		if err := readLayer(l, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func readLayer(l v1.Layer, out map[string]Entry) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		e := Entry{Header: h}
		if h.Typeflag == tar.TypeReg {
			if e.Data, err = io.ReadAll(tr); err != nil {
				return err
			}
		}
		out["/"+strings.TrimSuffix(h.Name, "/")] = e
	}
}

// ParseFile reads SRC:DST[:MODE] (octal mode).
func ParseFile(v string) (File, error) {
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return File{}, fmt.Errorf("%q: want SRC:DST[:MODE]", v)
	}
	f := File{Src: parts[0], Dst: parts[1]}
	if len(parts) == 3 {
		if _, err := fmt.Sscanf(parts[2], "%o", &f.Mode); err != nil {
			return File{}, fmt.Errorf("%q: bad mode", v)
		}
	}
	return f, nil
}
