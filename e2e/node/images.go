package node

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

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

// BuildImage writes img as a docker-archive into dir with the release
// module's mkimage tool, in its own process: the suites run with -race, under
// which compressing Vault's 400 MB binary in the test process takes minutes
// and gigabytes.
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
	if err := goRun(ctx, args); err != nil {
		return "", fmt.Errorf("mkimage %s: %w", img.Tag, err)
	}
	return out, nil
}

// ReleaseImages builds our release images (release/cmd/images, as
// `make images-local` does) for this machine's architecture, tagged
// local/<name>:e2e, in their own process like BuildImage, and returns the
// docker-archives.
func ReleaseImages(ctx context.Context, dir string, names ...string) ([]string, error) {
	if err := goRun(ctx, []string{"run", "./cmd/images", "--out", dir, "--prefix", "local", "--version", "e2e",
		"--arch", runtime.GOARCH, "--only", strings.Join(names, ",")}); err != nil {
		return nil, fmt.Errorf("release images: %w", err)
	}
	var out []string
	for _, n := range names {
		out = append(out, filepath.Join(dir, n+"-"+runtime.GOARCH+".tar"))
	}
	return out, nil
}

func goRun(ctx context.Context, args []string) error {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = filepath.Join(procs.RepoRoot(), "release")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v\n%s", err, b)
	}
	return nil
}
