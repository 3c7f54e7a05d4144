// Package images builds kube-sts's three release images without Docker, laid out as
// the Dockerfiles lay them out: the static binary at /<name>, the CA bundle at
// /etc/ssl/certs/ca-certificates.crt, user 65532:65532, nothing else. Each
// architecture's image carries a binary compiled for that architecture.
package images

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kube-sts/kube-sts/release/ociimage"
)

// Binary is one of our binaries: its name, its module folder and its package.
type Binary struct{ Name, Module, Package string }

// Binaries are the three images, by binary.
var Binaries = []Binary{
	{"sts-issuer", "issuer", "./cmd/sts-issuer"},
	{"sts-webhook", "webhook", "./cmd/sts-webhook"},
	{"sts-creds-sidecar", "sidecar", "./cmd/sts-creds-sidecar"},
}

// Arches are the architectures we ship.
var Arches = []string{"amd64", "arm64"}

// CABundle is where Debian (and the golang build image) keep the system roots.
const CABundle = "/etc/ssl/certs/ca-certificates.crt"

// User is the uid:gid the images run as (distroless's "nonroot").
const User = "65532:65532"

// Built is one image for one architecture.
type Built struct {
	Binary
	Arch    string
	Tag     string
	Archive string // docker-archive
	Bin     string // the binary the image carries, as compiled (kept in <Dir>/bin/<arch>/)
	Image   v1.Image
}

// Options of Build.
type Options struct {
	Root    string   // the repository's root (default: found from the working directory)
	Dir     string   // output folder
	Prefix  string   // image name prefix, e.g. kube-sts (tag: <prefix>/<name>:<version>)
	Version string   // stamped into the binary and used as the tag
	Commit  string   // stamped into the binary; default: the checkout's HEAD (git), else none
	Date    string   // stamped into the binary: the commit's time, RFC 3339; default: HEAD's (git)
	Arches  []string // default: Arches
	Only    []string // binary names; default: all
	// Layouts writes the OCI layouts (what push sends) for one architecture
	// too; with more than one they are always written.
	Layouts bool
}

// Build compiles the binaries and builds the images, writes one docker-archive per image
// (<name>-<arch>.tar) and, for more than one architecture or with Layouts,
// one OCI layout per binary with every architecture behind an index
// (<name>.oci).
func Build(ctx context.Context, o Options) ([]Built, error) {
	if o.Root == "" {
		root, err := RepoRoot()
		if err != nil {
			return nil, err
		}
		o.Root = root
	}
	if o.Prefix == "" {
		o.Prefix = "kube-sts"
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.Commit == "" {
		o.Commit = gitOutput(ctx, o.Root, "rev-parse", "HEAD")
	}
	if o.Date == "" {
		o.Date = gitOutput(ctx, o.Root, "log", "-1", "--format=%cI")
	}
	if len(o.Arches) == 0 {
		o.Arches = Arches
	}
	if _, err := os.Stat(CABundle); err != nil {
		return nil, fmt.Errorf("the CA bundle for the images: %w (install Debian's ca-certificates)", err)
	}
	for _, n := range o.Only {
		if !slices.ContainsFunc(Binaries, func(b Binary) bool { return b.Name == n }) {
			return nil, fmt.Errorf("no image named %q (known: sts-issuer, sts-webhook, sts-creds-sidecar)", n)
		}
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	var out []Built
	for _, b := range Binaries {
		if len(o.Only) > 0 && !slices.Contains(o.Only, b.Name) {
			continue
		}
		tag := fmt.Sprintf("%s/%s:%s", o.Prefix, b.Name, o.Version)
		var imgs []v1.Image
		for _, arch := range o.Arches {
			bin := filepath.Join(o.Dir, "bin", arch, b.Name)
			if err := goBuild(ctx, o, b, arch, bin); err != nil {
				return nil, err
			}
			img, err := ociimage.Build(ociimage.Spec{
				Arch:       arch,
				Files:      []ociimage.File{{Src: CABundle, Dst: CABundle, Mode: 0o644}, {Src: bin, Dst: "/" + b.Name}},
				Entrypoint: []string{"/" + b.Name},
				User:       User,
			})
			if err != nil {
				return nil, fmt.Errorf("%s/%s: %w", b.Name, arch, err)
			}
			archive := filepath.Join(o.Dir, fmt.Sprintf("%s-%s.tar", b.Name, arch))
			if err := ociimage.WriteArchive(archive, tag, img); err != nil {
				return nil, fmt.Errorf("%s/%s: %w", b.Name, arch, err)
			}
			imgs = append(imgs, img)
			out = append(out, Built{Binary: b, Arch: arch, Tag: tag, Archive: archive, Bin: bin, Image: img})
		}
		if len(imgs) < 2 && !o.Layouts {
			continue // one architecture (the test node's): the archive is all it needs
		}
		if err := ociimage.WriteIndex(filepath.Join(o.Dir, b.Name+".oci"), tag, imgs); err != nil {
			return nil, fmt.Errorf("%s: OCI layout: %w", b.Name, err)
		}
	}
	return out, nil
}

// goBuild cross-compiles like the Dockerfiles do: static, trimmed, stamped,
// the module on its own (GOWORK=off).
func goBuild(ctx context.Context, o Options, b Binary, arch, out string) error {
	const pkg = "github.com/kube-sts/kube-sts/shared/buildinfo"
	ldflags := "-s -w -X " + pkg + ".Version=" + o.Version
	if o.Commit != "" {
		ldflags += " -X " + pkg + ".Commit=" + o.Commit
	}
	if o.Date != "" {
		ldflags += " -X " + pkg + ".Date=" + o.Date
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, b.Package)
	cmd.Dir = filepath.Join(o.Root, b.Module)
	cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if o, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s for %s: %v\n%s", b.Name, arch, err, o)
	}
	return nil
}

// RepoRoot is the nearest folder at or above the working directory that holds
// go.work: the workspace whose modules Build compiles.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.work at or above the working directory: run from inside the kube-sts repository")
		}
		dir = parent
	}
}

// gitOutput is the trimmed output of git in dir, or "" when git cannot say
// (no git, not a checkout: an unpacked source archive).
func gitOutput(ctx context.Context, dir string, args ...string) string {
	out, err := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
