package node

import (
	"context"
	"fmt"
	"os"
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

// Previous is a released version of kube-sts built from its sources for the
// upgrade test: its images for this machine's architecture (tagged
// local/<name>:<Version>) and its chart.
type Previous struct {
	Version string
	// Archives are the images' docker-archives.
	Archives []string
	// Chart is the release's chart directory.
	Chart string
}

// PreviousRelease builds the release version (a tag of this repository, at
// commit) from the commit's own sources, with that tree's release tooling, and
// keeps the result in the cache: the first run takes about as long as
// building the current images, later runs nothing. The sources come from
// git archive, so the clone must hold the commit (not a shallow clone).
func PreviousRelease(ctx context.Context, version, commit string) (*Previous, error) {
	root := procs.RepoRoot()
	if out, err := exec.CommandContext(ctx, "git", "-C", root, "cat-file", "-e", commit+"^{commit}").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("release %s is commit %s, which this clone does not hold (a shallow clone? git fetch --unshallow --tags): %v %s", version, commit, err, out)
	}
	// The tag, when the clone has it, must name that commit.
	if out, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "-q", "--verify", "refs/tags/"+version+"^{commit}").Output(); err == nil {
		if got := strings.TrimSpace(string(out)); got != commit {
			return nil, fmt.Errorf("tag %s is commit %s, not %s as the upgrade test expects", version, got, commit)
		}
	}
	dir := filepath.Join(procs.CacheDir(), "releases", version+"-"+commit[:12], runtime.GOARCH)
	p := &Previous{Version: version, Chart: filepath.Join(dir, "chart")}
	names := []string{"sts-issuer", "sts-webhook", "sts-creds-sidecar"}
	for _, n := range names {
		p.Archives = append(p.Archives, filepath.Join(dir, n+"-"+runtime.GOARCH+".tar"))
	}
	done := filepath.Join(dir, "complete")
	if _, err := os.Stat(done); err == nil {
		return p, nil
	}

	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	src := dir + ".src"
	_ = os.RemoveAll(src)
	if err := os.MkdirAll(src, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(src)
	archive := exec.CommandContext(ctx, "sh", "-c", `git -C "$1" archive --format=tar "$2" | tar -x -C "$3"`, "sh", root, commit, src)
	if out, err := archive.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("git archive %s: %v %s", commit, err, out)
	}
	build := exec.CommandContext(ctx, "go", "run", "./cmd/images", "--out", dir, "--prefix", "local", "--version", version,
		"--arch", runtime.GOARCH, "--only", strings.Join(names, ","))
	build.Dir = filepath.Join(src, "release")
	// The old tree's own workspace, not this one's.
	build.Env = append(os.Environ(), "GOWORK="+filepath.Join(src, "go.work"))
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build the images of %s: %v\n%s", version, err, out)
	}
	if out, err := exec.CommandContext(ctx, "cp", "-a", filepath.Join(src, "manifests", "charts", "kube-sts"), p.Chart).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("keep the chart of %s: %v %s", version, err, out)
	}
	if err := os.WriteFile(done, []byte(commit+"\n"), 0o644); err != nil {
		return nil, err
	}
	return p, nil
}
