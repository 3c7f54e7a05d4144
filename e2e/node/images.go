package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/kube-sts/kube-sts/e2e/internal/ociimage"
	"github.com/kube-sts/kube-sts/e2e/internal/procs"
)

// Image names the suite uses; containerd stores them normalized.
const (
	SidecarImage = "local/sts-creds-sidecar:e2e"
	AppImage     = "local/testapp:e2e"
	VaultImage   = "local/vault:e2e"
)

// Image is one image to build: files, entrypoint, user.
type Image struct {
	Tag        string
	Add        []string // SRC:DST[:MODE]
	Symlinks   []string // DST:TARGET
	Entrypoint string
	User       string
}

// BuildImage writes img as a docker-archive into dir.
func BuildImage(_ context.Context, dir string, img Image) (string, error) {
	out := filepath.Join(dir, filepath.Base(img.Tag)+".tar")
	spec := ociimage.Spec{Arch: runtime.GOARCH, User: img.User}
	if img.Entrypoint != "" {
		spec.Entrypoint = []string{img.Entrypoint}
	}
	for _, a := range img.Add {
		f, err := ociimage.ParseFile(a)
		if err != nil {
			return "", fmt.Errorf("image %s: %w", img.Tag, err)
		}
		spec.Files = append(spec.Files, f)
	}
	for _, l := range img.Symlinks {
		dst, target, ok := strings.Cut(l, ":")
		if !ok {
			return "", fmt.Errorf("image %s: symlink %q: want DST:TARGET", img.Tag, l)
		}
		spec.Links = append(spec.Links, ociimage.Link{Dst: dst, Target: target})
	}
	built, err := ociimage.Build(spec)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", img.Tag, err)
	}
	if err := ociimage.WriteArchive(out, img.Tag, built); err != nil {
		return "", fmt.Errorf("image %s: %w", img.Tag, err)
	}
	return out, nil
}

// GoBinary builds a static binary of a package in module (e.g. "e2e",
// "./cmd/pause") into dir.
func GoBinary(ctx context.Context, dir, module, pkg string) (string, error) {
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, pkg)
	cmd.Dir = filepath.Join(procs.RepoRoot(), module)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %v\n%s", pkg, err, b)
	}
	return out, nil
}
