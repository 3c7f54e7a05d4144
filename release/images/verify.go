package images

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/kube-sts/kube-sts/release/ociimage"
)

// MaxSidecarBytes bounds the sidecar image, unpacked: it runs beside every
// labeled Pod.
const MaxSidecarBytes = 15e6

var machines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// Verify checks built images as a user of the release would: each image is
// for its platform, runs as User with /<name> as entrypoint, carries the CA
// bundle and a static binary for its own architecture and nothing else, the
// sidecar's stays under MaxSidecarBytes, and when dir holds OCI layouts
// (always for more than one architecture) each binary's index lists every
// architecture built. It reports every problem at once. (The reference project's
// arm64 sidecar image carried an amd64 binary.)
func Verify(built []Built, dir string) error {
	var errs []error
	bad := func(b Built, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s %s: %s", b.Name, b.Arch, fmt.Sprintf(format, args...)))
	}
	arches := map[string]bool{}
	for _, b := range built {
		arches[b.Arch] = true
		cf, err := b.Image.ConfigFile()
		if err != nil {
			bad(b, "config: %v", err)
			continue
		}
		if cf.OS != "linux" || cf.Architecture != b.Arch {
			bad(b, "platform %s/%s, want linux/%s", cf.OS, cf.Architecture, b.Arch)
		}
		if cf.Config.User != User {
			bad(b, "user %q, want %q (non-root)", cf.Config.User, User)
		}
		if len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/"+b.Name {
			bad(b, "entrypoint %q, want /%s", cf.Config.Entrypoint, b.Name)
		}
		files, err := regularFiles(b.Image)
		if err != nil {
			bad(b, "layers: %v", err)
			continue
		}
		if len(files[CABundle]) == 0 {
			bad(b, "no CA bundle at %s", CABundle)
		}
		if len(files) != 2 {
			bad(b, "the image holds %d files, want only the binary and the CA bundle", len(files))
		}
		ef, err := elf.NewFile(bytes.NewReader(files["/"+b.Name]))
		switch {
		case err != nil:
			bad(b, "the entrypoint is not an ELF binary: %v", err)
		case ef.Machine != machines[b.Arch]:
			bad(b, "the image carries a %v binary", ef.Machine)
		case ef.Section(".interp") != nil:
			bad(b, "the binary is dynamically linked; the scratch image has no libc")
		}
		var unpacked int
		for _, f := range files {
			unpacked += len(f)
		}
		if b.Name == "sts-creds-sidecar" && unpacked >= MaxSidecarBytes {
			bad(b, "the image is %.1f MB unpacked; the target is < %.0f MB", float64(unpacked)/1e6, MaxSidecarBytes/1e6)
		}
	}
	var platforms []string
	for a := range arches {
		platforms = append(platforms, "linux/"+a)
	}
	slices.Sort(platforms)
	want := strings.Join(platforms, ",")
	checked := map[string]bool{}
	for _, b := range built {
		layoutDir := filepath.Join(dir, b.Name+".oci")
		if _, err := os.Stat(layoutDir); checked[b.Name] || (len(arches) < 2 && err != nil) {
			continue
		}
		checked[b.Name] = true
		if got, err := indexPlatforms(layoutDir); err != nil {
			errs = append(errs, fmt.Errorf("%s: OCI layout: %w", b.Name, err))
		} else if got != want {
			errs = append(errs, fmt.Errorf("%s: OCI index platforms %s, want %s", b.Name, got, want))
		}
	}
	return errors.Join(errs...)
}

// regularFiles are the regular files of an image's layers, by path.
func regularFiles(img v1.Image) (map[string][]byte, error) {
	entries, err := ociimage.Contents(img)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	for path, e := range entries {
		if e.Typeflag == tar.TypeReg {
			files[path] = e.Data
		}
	}
	return files, nil
}

// indexPlatforms lists the platforms behind an OCI layout's one index.
func indexPlatforms(path string) (string, error) {
	idx, err := layout.ImageIndexFromPath(path)
	if err != nil {
		return "", err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return "", err
	}
	if len(im.Manifests) != 1 {
		return "", fmt.Errorf("%d manifests in the layout's index, want one", len(im.Manifests))
	}
	inner, err := idx.ImageIndex(im.Manifests[0].Digest)
	if err != nil {
		return "", err
	}
	m, err := inner.IndexManifest()
	if err != nil {
		return "", err
	}
	var got []string
	for _, d := range m.Manifests {
		if d.Platform != nil {
			got = append(got, d.Platform.OS+"/"+d.Platform.Architecture)
		}
	}
	slices.Sort(got)
	return strings.Join(got, ","), nil
}

// Size is an image's files unpacked and its layers as pushed, in bytes.
func Size(b Built) (unpacked, compressed int64, err error) {
	files, err := regularFiles(b.Image)
	if err != nil {
		return 0, 0, err
	}
	for _, f := range files {
		unpacked += int64(len(f))
	}
	layers, err := b.Image.Layers()
	if err != nil {
		return 0, 0, err
	}
	for _, l := range layers {
		sz, err := l.Size()
		if err != nil {
			return 0, 0, err
		}
		compressed += sz
	}
	return unpacked, compressed, nil
}
