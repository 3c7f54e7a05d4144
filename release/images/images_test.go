package images

// The release images' checks (Verify) on small images, and the Dockerfiles
// against Build's layout. The real images are built once, by release/bundle's
// test, which verifies them with Verify too.

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/kube-sts/kube-sts/release/ociimage"
)

// tinyBinary builds a small static program for arch.
func tinyBinary(t *testing.T, arch string) []byte {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module tiny\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", "tiny", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch, "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	data, err := os.ReadFile(filepath.Join(dir, "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestVerify: Verify (which release-local runs on the images it built, and
// release/bundle's test on the real images) passes images laid out as the
// Dockerfiles lay them out, and names each way an image can be wrong: the
// other architecture's binary, root, a stray file, a missing CA bundle, an
// index without arm64, layouts of fewer architectures than were built.
func TestVerify(t *testing.T) {
	work := t.TempDir()
	bins := map[string]string{}
	for _, arch := range Arches {
		bins[arch] = filepath.Join(work, "tiny-"+arch)
		if err := os.WriteFile(bins[arch], tinyBinary(t, arch), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	image := func(name, arch, bin, user string, extra ...ociimage.File) Built {
		t.Helper()
		files := append([]ociimage.File{{Src: bin, Dst: "/" + name, Mode: 0o755}, {Src: CABundle, Dst: CABundle, Mode: 0o644}}, extra...)
		img, err := ociimage.Build(ociimage.Spec{Arch: arch, Files: files, Entrypoint: []string{"/" + name}, User: user})
		if err != nil {
			t.Fatal(err)
		}
		return Built{Binary: Binary{Name: name}, Arch: arch, Image: img}
	}
	good := func(dir string) []Built {
		t.Helper()
		var all []Built
		for _, b := range Binaries {
			var imgs []v1.Image
			for _, arch := range Arches {
				bi := image(b.Name, arch, bins[arch], User)
				all = append(all, bi)
				imgs = append(imgs, bi.Image)
			}
			if err := ociimage.WriteIndex(filepath.Join(dir, b.Name+".oci"), "example.invalid/"+b.Name+":v0", imgs); err != nil {
				t.Fatal(err)
			}
		}
		return all
	}
	dir := t.TempDir()
	built := good(dir)
	if err := Verify(built, dir); err != nil {
		t.Fatalf("images laid out as the Dockerfiles say: %v", err)
	}
	wrong := slices.Clone(built)
	wrong[1] = image(built[1].Name, "arm64", bins["amd64"], User)
	wrong[2] = image(built[2].Name, "amd64", bins["amd64"], "0:0")
	wrong[3] = image(built[3].Name, "arm64", bins["arm64"], User, ociimage.File{Src: bins["arm64"], Dst: "/bin/sh", Mode: 0o755})
	err := Verify(wrong, t.TempDir())
	for _, want := range []string{
		built[1].Name + " arm64: the image carries a EM_X86_64 binary",
		built[2].Name + ` amd64: user "0:0"`,
		built[3].Name + " arm64: the image holds 3 files",
		"sts-issuer: OCI layout:",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Verify of wrong images: %v; want it to say %q", err, want)
		}
	}
	// One architecture's layouts (release-local RELEASE_ARCHES=amd64, what
	// push sends) pass for that architecture, and not for two.
	oneDir := t.TempDir()
	var amd64 []Built
	for _, b := range built {
		if b.Arch == "amd64" {
			amd64 = append(amd64, b)
			if err := ociimage.WriteIndex(filepath.Join(oneDir, b.Name+".oci"), "example.invalid/"+b.Name+":v0", []v1.Image{b.Image}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := Verify(amd64, oneDir); err != nil {
		t.Errorf("amd64 images with amd64 layouts: %v", err)
	}
	if err := Verify(built, oneDir); err == nil || !strings.Contains(err.Error(), "OCI index platforms linux/amd64, want linux/amd64,linux/arm64") {
		t.Errorf("two architectures' images with one architecture's layouts: %v", err)
	}
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
