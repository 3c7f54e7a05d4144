package bundle

// The local release, checked as a user of the release would check it: every
// image's SBOM lists each Go module compiled into the binary that image
// carries, with its version; the chart's appVersion, the binaries' version
// stamps and the tag are one; SHA256SUMS covers every file and verifies.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"debug/buildinfo"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"sigs.k8s.io/yaml"

	"github.com/kube-sts/kube-sts/release/images"
)

// chartTag is the repository's root and the tag its chart names (appVersion).
func chartTag(t *testing.T) (root, version string) {
	t.Helper()
	root, err := images.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	_, version, err = ChartVersions(root)
	if err != nil {
		t.Fatal(err)
	}
	return root, version
}

// tool builds (once, cached) and returns a pinned tool of the toolchain script.
func tool(t *testing.T, root, name string) string {
	t.Helper()
	out, err := exec.Command("bash", filepath.Join(root, "e2e/hack/toolchain.sh"), "--print-bin="+name).Output()
	if err != nil {
		t.Fatalf("toolchain.sh --print-bin=%s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

func TestReleaseLocal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	root, version := chartTag(t)
	dir := t.TempDir()
	res, err := Build(ctx, Options{Root: root, Dir: dir, Version: version, Prefix: "example.invalid/kube-sts",
		Helm: tool(t, root, "helm"), CycloneDX: tool(t, root, "cyclonedx-gomod")})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("chart", func(t *testing.T) {
		c := chartYAML(t, filepath.Join(dir, res.Chart))
		if c.AppVersion != version || c.Version != strings.TrimPrefix(version, "v") {
			t.Errorf("packaged chart: version %q appVersion %q; the tag is %s", c.Version, c.AppVersion, version)
		}
	})

	if want := len(images.Binaries) * len(images.Arches); len(res.Images) != want || len(res.SBOMs) != want {
		t.Fatalf("%d images and %d SBOMs, want %d of each", len(res.Images), len(res.SBOMs), want)
	}
	for _, b := range res.Images {
		t.Run("image "+b.Name+"/"+b.Arch, func(t *testing.T) {
			bin := binaryInImage(t, b.Archive, b.Name)
			// Build ran images.Verify on them (layout, user, architecture,
			// the sidecar's size); their sizes go into docs/performance.md,
			// beside their floor: the binary the image carries.
			unpacked, compressed, err := images.Size(b)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s %s: %.1f MB unpacked, %.1f MB compressed; its binary %.1f MB: unpacked %.3fx the binary",
				b.Name, b.Arch, float64(unpacked)/1e6, float64(compressed)/1e6, float64(len(bin))/1e6, float64(unpacked)/float64(len(bin)))
			bi, err := buildinfo.Read(bytes.NewReader(bin))
			if err != nil {
				t.Fatalf("build information of the image's binary: %v", err)
			}
			if got := setting(bi, "GOARCH"); got != b.Arch {
				t.Errorf("the %s image's binary was built for %s", b.Arch, got)
			}
			// The version stamp (-X, which -trimpath keeps out of the build
			// information): run the binary where it can run, else find the
			// string in it.
			if b.Arch == runtime.GOARCH {
				p := filepath.Join(t.TempDir(), b.Name)
				if err := os.WriteFile(p, bin, 0o755); err != nil {
					t.Fatal(err)
				}
				out, err := exec.Command(p, "--version").CombinedOutput()
				first, rest, _ := strings.Cut(string(out), "\n")
				if err != nil || first != b.Name+" "+version {
					t.Errorf("the image's %s --version says %q (%v); want %q first", b.Name, out, err, b.Name+" "+version)
				}
				// The commit is stamped from the checkout the release was built from.
				if head, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil && !strings.Contains(rest, "commit:   "+strings.TrimSpace(string(head))) {
					t.Errorf("the image's %s --version does not name the commit %s:\n%s", b.Name, head, out)
				}
			} else if !bytes.Contains(bin, []byte(version)) {
				t.Errorf("the %s image's binary does not contain its version %s", b.Arch, version)
			}
			archive, _ := filepath.Rel(dir, b.Archive)
			sbom := readSBOM(t, filepath.Join(dir, res.SBOMs[archive]))
			if sbom.Metadata.Component.Name != bi.Main.Path || sbom.Metadata.Component.Version != version {
				t.Errorf("SBOM describes %s %s; want %s %s", sbom.Metadata.Component.Name, sbom.Metadata.Component.Version, bi.Main.Path, version)
			}
			listed := map[string]bool{}
			for _, c := range sbom.all() {
				listed[c.Name+"@"+c.Version] = true
			}
			if len(bi.Deps) < 3 {
				t.Fatalf("the binary names %d modules; every kube-sts binary uses at least shared, logging and zap", len(bi.Deps))
			}
			for _, d := range bi.Deps {
				m := d
				if d.Replace != nil {
					m = d.Replace
				}
				if !listed[m.Path+"@"+m.Version] && !listed[d.Path+"@"+m.Version] {
					t.Errorf("the SBOM does not list %s %s, which the binary was built with", m.Path, m.Version)
				}
			}
		})
	}

	t.Run("SHA256SUMS", func(t *testing.T) {
		f, err := os.Open(filepath.Join(dir, res.Sums))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		listed := map[string]bool{}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			sum, name, ok := strings.Cut(sc.Text(), "  ")
			if !ok {
				t.Fatalf("line %q is not in sha256sum format", sc.Text())
			}
			got, err := fileSHA256(filepath.Join(dir, name))
			if err != nil || got != sum {
				t.Errorf("%s: sum %s, file %s (%v)", name, sum, got, err)
			}
			listed[name] = true
		}
		err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			if rel != res.Sums && !listed[filepath.ToSlash(rel)] {
				t.Errorf("%s is not in %s", rel, res.Sums)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{res.Chart, "images/sts-issuer-arm64.tar", "images/sts-creds-sidecar.oci/index.json", "sbom/sts-webhook-amd64.cdx.json"} {
			if !listed[want] {
				t.Errorf("%s is not in %s", want, res.Sums)
			}
		}
	})
}

// TestCheckVersion: a release is refused before anything is built when the
// tag is not a version or the chart names another one.
func TestCheckVersion(t *testing.T) {
	root, version := chartTag(t)
	if err := CheckVersion(root, version); err != nil {
		t.Fatalf("the chart's own appVersion %s: %v", version, err)
	}
	for tag, want := range map[string]string{
		"v99.0.0":         `Chart.yaml says version`,
		"0.1.0":           `is not a release tag`,
		"v0.1.0-3-gabcde": `Chart.yaml says version`,
		"main":            `is not a release tag`,
	} {
		if err := CheckVersion(root, tag); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckVersion(%q) = %v, want an error containing %q", tag, err, want)
		}
	}
	_, err := Build(context.Background(), Options{Root: root, Dir: t.TempDir(), Version: "v99.0.0"})
	if err == nil || !strings.Contains(err.Error(), "bump the chart") {
		t.Fatalf("Build with a version the chart does not name: %v", err)
	}
}

type chart struct {
	Version    string `json:"version"`
	AppVersion string `json:"appVersion"`
}

func chartYAML(t *testing.T, tgz string) chart {
	t.Helper()
	f, err := os.Open(tgz)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no kube-sts/Chart.yaml in %s: %v", tgz, err)
		}
		if h.Name != "kube-sts/Chart.yaml" {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		var c chart
		if err := yaml.Unmarshal(data, &c); err != nil {
			t.Fatal(err)
		}
		return c
	}
}

// binaryInImage reads /<name> from the image in a docker-archive.
func binaryInImage(t *testing.T, archive, name string) []byte {
	t.Helper()
	img, err := tarball.ImageFromPath(archive, nil)
	if err != nil {
		t.Fatal(err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no /%s in %s: %v", name, archive, err)
		}
		if strings.TrimPrefix(h.Name, "/") == name {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return data
		}
	}
}

func setting(bi *buildinfo.BuildInfo, key string) string {
	for _, s := range bi.Settings {
		if s.Key == key {
			return s.Value
		}
	}
	return ""
}

// cdx is the part of a CycloneDX document the test reads.
type cdx struct {
	BOMFormat string `json:"bomFormat"`
	Metadata  struct {
		Component component `json:"component"`
	} `json:"metadata"`
	Components []component `json:"components"`
}

type component struct {
	Name       string      `json:"name"`
	Version    string      `json:"version"`
	PURL       string      `json:"purl"`
	Components []component `json:"components"`
}

// all is every component, nested ones too.
func (c cdx) all() []component {
	var out []component
	var walk func([]component)
	walk = func(cs []component) {
		for _, c := range cs {
			out = append(out, c)
			walk(c.Components)
		}
	}
	walk(c.Components)
	walk(c.Metadata.Component.Components)
	return out
}

func readSBOM(t *testing.T, path string) cdx {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c cdx
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if c.BOMFormat != "CycloneDX" {
		t.Fatalf("%s: bomFormat %q", path, c.BOMFormat)
	}
	return c
}
