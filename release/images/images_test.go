package images

// The release images built without Docker: every architecture's image
// carries a binary for that architecture (the reference project's arm64
// sidecar image carried an amd64 binary), the layout and user match the
// Dockerfiles, and the sidecar image stays under 15 MB.

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/kube-sts/kube-sts/release/ociimage"
)

var machines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

func TestReleaseImages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir := t.TempDir()
	const version = "v0.0.0-imagetest"
	built, err := Build(ctx, Options{Dir: dir, Prefix: "example.invalid/kube-sts", Version: version})
	if err != nil {
		t.Fatal(err)
	}
	if want := len(Binaries) * len(Arches); len(built) != want {
		t.Fatalf("built %d images, want %d", len(built), want)
	}
	for _, b := range built {
		t.Run(b.Name+"/"+b.Arch, func(t *testing.T) {
			cf, err := b.Image.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.OS != "linux" || cf.Architecture != b.Arch {
				t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, b.Arch)
			}
			if cf.Config.User != User {
				t.Errorf("user %q, want %q (non-root)", cf.Config.User, User)
			}
			if len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/"+b.Name {
				t.Errorf("entrypoint %q", cf.Config.Entrypoint)
			}
			files := layerFiles(t, b)
			if len(files[CABundle]) == 0 {
				t.Errorf("no CA bundle at %s", CABundle)
			}
			bin := files["/"+b.Name]
			ef, err := elf.NewFile(bytes.NewReader(bin))
			if err != nil {
				t.Fatalf("entrypoint is not an ELF binary: %v", err)
			}
			if ef.Machine != machines[b.Arch] {
				t.Errorf("the %s image carries a %v binary", b.Arch, ef.Machine)
			}
			if ef.Section(".interp") != nil {
				t.Error("the binary is dynamically linked; the scratch image has no libc")
			}
			if len(files) != 2 {
				t.Errorf("the image holds more than the binary and the CA bundle: %d files", len(files))
			}
			var unpacked int
			for _, f := range files {
				unpacked += len(f)
			}
			t.Logf("%s %s: %.1f MB unpacked, %.1f MB compressed", b.Tag, b.Arch, float64(unpacked)/1e6, float64(compressed(t, b))/1e6)
			if b.Name == "sts-creds-sidecar" && unpacked >= 15e6 {
				t.Errorf("the sidecar image is %.1f MB unpacked; the target is < 15 MB", float64(unpacked)/1e6)
			}
			if b.Arch == runtime.GOARCH {
				out, err := exec.Command(filepath.Join(dir, "bin", b.Arch, b.Name), "--version").CombinedOutput()
				if err != nil {
					t.Fatalf("--version: %v\n%s", err, out)
				}
				if !strings.Contains(string(out), version) {
					t.Errorf("the binary is not stamped with %s: %s", version, out)
				}
			}
		})
	}

	// One OCI layout per binary, with every architecture behind its index.
	for _, b := range Binaries {
		idx, err := layout.ImageIndexFromPath(filepath.Join(dir, b.Name+".oci"))
		if err != nil {
			t.Fatal(err)
		}
		im, err := idx.IndexManifest()
		if err != nil || len(im.Manifests) != 1 {
			t.Fatalf("%s: layout index: %v %+v", b.Name, err, im)
		}
		inner, err := idx.ImageIndex(im.Manifests[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		m, err := inner.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range m.Manifests {
			got = append(got, d.Platform.OS+"/"+d.Platform.Architecture)
		}
		if strings.Join(got, ",") != "linux/amd64,linux/arm64" {
			t.Errorf("%s: index platforms %v", b.Name, got)
		}
	}
}

// compressed is the size of the image's layers as pushed.
func compressed(t *testing.T, b Built) int64 {
	t.Helper()
	layers, err := b.Image.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, l := range layers {
		sz, err := l.Size()
		if err != nil {
			t.Fatal(err)
		}
		n += sz
	}
	return n
}

// layerFiles reads the regular files of the image's layers by path.
func layerFiles(t *testing.T, b Built) map[string][]byte {
	t.Helper()
	entries, err := ociimage.Contents(b.Image)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for path, e := range entries {
		if e.Typeflag == tar.TypeReg {
			files[path] = e.Data
		}
	}
	return files
}

// TestDockerfilesMatch: the Dockerfiles, which GitHub Actions and users build,
// lay the images out as Build does (same path, user, CA bundle,
// version stamp, cross-compiled per target architecture).
func TestDockerfilesMatch(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range Binaries {
		data, err := os.ReadFile(filepath.Join(root, b.Module, "Dockerfile"))
		if err != nil {
			t.Fatal(err)
		}
		df := string(data)
		for _, want := range []string{
			"FROM --platform=$BUILDPLATFORM golang:",
			"GOARCH=$TARGETARCH",
			"CGO_ENABLED=0",
			"GOWORK=off",
			"-X github.com/kube-sts/kube-sts/shared/buildinfo.Version=${VERSION}",
			"FROM scratch",
			"COPY --from=build " + CABundle + " " + CABundle,
			"COPY --from=build /out/" + b.Name + " /" + b.Name,
			"USER " + User,
			`ENTRYPOINT ["/` + b.Name + `"]`,
			"./" + strings.TrimPrefix(b.Package, "./"),
		} {
			if !strings.Contains(df, want) {
				t.Errorf("%s/Dockerfile lacks %q", b.Module, want)
			}
		}
		// The builder is pinned by digest, with its tag for readers.
		if !regexp.MustCompile(`(?m)^FROM --platform=\$BUILDPLATFORM golang:[0-9.]+@sha256:[0-9a-f]{64} AS build$`).MatchString(df) {
			t.Errorf("%s/Dockerfile: the builder image is not pinned by digest (FROM ... golang:<version>@sha256:<digest> AS build)", b.Module)
		}
		if regexp.MustCompile(`(?m)^FROM [a-z0-9.-]+\.[a-z]+(:[0-9]+)?/`).MatchString(df) {
			t.Errorf("%s/Dockerfile names a registry host", b.Module)
		}
	}
}
