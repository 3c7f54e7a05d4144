// Package bundle assembles, without Docker and without pushing or signing,
// everything a kube-sts release publishes: the images of every architecture
// (docker-archives and OCI layouts), a CycloneDX SBOM per image made by
// cyclonedx-gomod from the binary the image carries, the packaged Helm
// chart, and SHA256SUMS over all of it. The release workflow runs the same
// code for the GitHub release's files; `make release-local` runs it here.
package bundle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/kube-sts/kube-sts/release/images"
)

// ChartDir is the Helm chart, relative to the repository's root.
const ChartDir = "manifests/charts/kube-sts"

// Options of Build.
type Options struct {
	Root    string // the repository's root (default: found from the working directory)
	Dir     string // output folder; emptied first
	Version string // the tag: vMAJOR.MINOR.PATCH[-PRERELEASE]
	Prefix  string // image name prefix (default kube-sts)
	Arches  []string
	// Helm and CycloneDX are the paths of the pinned helm and cyclonedx-gomod
	// (e2e/hack/toolchain.sh builds both).
	Helm, CycloneDX string
}

// Result is what Build wrote, paths relative to Options.Dir.
type Result struct {
	Images []images.Built
	// SBOMs by image archive (e.g. images/sts-issuer-amd64.tar -> sbom/sts-issuer-amd64.cdx.json).
	SBOMs map[string]string
	Chart string
	Sums  string
}

var semver = regexp.MustCompile(`^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$`)

// ChartVersions reads the chart's version and appVersion.
func ChartVersions(root string) (version, appVersion string, err error) {
	data, err := os.ReadFile(filepath.Join(root, ChartDir, "Chart.yaml"))
	if err != nil {
		return "", "", err
	}
	var c struct {
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(data, &c); err != nil {
		return "", "", fmt.Errorf("%s/Chart.yaml: %w", ChartDir, err)
	}
	return c.Version, c.AppVersion, nil
}

// CheckVersion fails unless version is a release tag that the chart agrees
// with: Chart.yaml's appVersion is the tag and its version the tag without v.
func CheckVersion(root, version string) error {
	if !semver.MatchString(version) {
		return fmt.Errorf("version %q is not a release tag such as v0.1.0 or v0.2.0-rc.1", version)
	}
	cv, av, err := ChartVersions(root)
	if err != nil {
		return err
	}
	if av != version || cv != strings.TrimPrefix(version, "v") {
		return fmt.Errorf("%s/Chart.yaml says version %q, appVersion %q; a release %s needs %q and %q: bump the chart (and CHANGELOG.md) first",
			ChartDir, cv, av, version, strings.TrimPrefix(version, "v"), version)
	}
	return nil
}

// Build writes the release into o.Dir.
func Build(ctx context.Context, o Options) (*Result, error) {
	if o.Root == "" {
		root, err := images.RepoRoot()
		if err != nil {
			return nil, err
		}
		o.Root = root
	}
	if err := CheckVersion(o.Root, o.Version); err != nil {
		return nil, err
	}
	for name, p := range map[string]string{"helm": o.Helm, "cyclonedx-gomod": o.CycloneDX} {
		if p == "" {
			return nil, fmt.Errorf("no %s given (e2e/hack/toolchain.sh --print-bin=%s builds the pinned one)", name, name)
		}
	}
	if err := os.RemoveAll(o.Dir); err != nil {
		return nil, err
	}
	imgDir := filepath.Join(o.Dir, "images")
	built, err := images.Build(ctx, images.Options{Root: o.Root, Dir: imgDir, Prefix: o.Prefix, Version: o.Version, Arches: o.Arches, Layouts: true})
	if err != nil {
		return nil, err
	}
	if err := images.Verify(built, imgDir); err != nil {
		return nil, fmt.Errorf("the images built are not what we ship: %w", err)
	}
	res := &Result{Images: built, SBOMs: map[string]string{}}
	if err := os.MkdirAll(filepath.Join(o.Dir, "sbom"), 0o755); err != nil {
		return nil, err
	}
	for _, b := range built {
		sbom := filepath.Join("sbom", fmt.Sprintf("%s-%s.cdx.json", b.Name, b.Arch))
		// bin: from the build information compiled into the binary, which is
		// what the image carries; -version names the component as released.
		cmd := exec.CommandContext(ctx, o.CycloneDX, "bin", "-json", "-output", filepath.Join(o.Dir, sbom), "-version", o.Version, b.Bin)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("SBOM of %s/%s: %v\n%s", b.Name, b.Arch, err, out)
		}
		archive, err := filepath.Rel(o.Dir, b.Archive)
		if err != nil {
			return nil, err
		}
		res.SBOMs[archive] = sbom
	}
	// The raw binaries are inside the images; the release does not ship them apart.
	if err := os.RemoveAll(filepath.Join(imgDir, "bin")); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, o.Helm, "package", filepath.Join(o.Root, ChartDir), "--destination", o.Dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("helm package: %v\n%s", err, out)
	}
	res.Chart = fmt.Sprintf("kube-sts-%s.tgz", strings.TrimPrefix(o.Version, "v"))
	if _, err := os.Stat(filepath.Join(o.Dir, res.Chart)); err != nil {
		return nil, fmt.Errorf("helm package wrote no %s: %w", res.Chart, err)
	}
	res.Sums = "SHA256SUMS"
	if err := writeSums(o.Dir, res.Sums); err != nil {
		return nil, err
	}
	return res, nil
}

// writeSums writes name in dir: "<sha256>  <path>" for every file below dir,
// in `sha256sum -c` format, sorted by path. An OCI layout's blobs are listed
// like any file.
func writeSums(dir, name string) error {
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == name {
			return err
		}
		sum, err := fileSHA256(p)
		if err != nil {
			return err
		}
		lines = append(lines, sum+"  "+filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(lines, func(a, b string) int { return strings.Compare(a[66:], b[66:]) })
	return os.WriteFile(filepath.Join(dir, name), []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
