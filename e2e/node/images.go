package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

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

// BuildImage writes img as a docker-archive into dir with the mkimage tool.
func BuildImage(ctx context.Context, dir string, img Image) (string, error) {
	out := filepath.Join(dir, filepath.Base(img.Tag)+".tar")
	args := []string{"run", "./cmd/mkimage", "--tag", img.Tag, "--out", out}
	for _, a := range img.Add {
		args = append(args, "--add", a)
	}
	for _, l := range img.Symlinks {
		args = append(args, "--symlink", l)
	}
	if img.Entrypoint != "" {
		args = append(args, "--entrypoint", img.Entrypoint)
	}
	if img.User != "" {
		args = append(args, "--user", img.User)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = filepath.Join(procs.RepoRoot(), "e2e")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("mkimage %s: %v\n%s", img.Tag, err, b)
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
