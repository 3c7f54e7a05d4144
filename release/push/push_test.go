package push

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kube-sts/kube-sts/release/bundle"
	"github.com/kube-sts/kube-sts/release/images"
	"github.com/kube-sts/kube-sts/release/ociimage"
)

// TestPushReadsBackWithHelm: a release folder pushed to a registry (an
// in-process one on loopback) can be read back as a user's tools read it:
// each image as one index with both platforms, and the chart by the pinned
// helm's own `helm pull oci://...`, byte for byte what was packaged.
func TestPushReadsBackWithHelm(t *testing.T) {
	root, err := images.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(registry.New(registry.Logger(discard())))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	host := u.Host + "/mirror" // a registry path, as many registries have

	// A release folder like make release-local's: two-platform layouts and
	// the real chart packaged by the pinned helm.
	dir := t.TempDir()
	names := []string{"sts-issuer", "sts-webhook"}
	for _, n := range names {
		var imgs []v1.Image
		for _, arch := range []string{"amd64", "arm64"} {
			f := filepath.Join(t.TempDir(), n)
			if err := os.WriteFile(f, []byte(n+" for "+arch), 0o755); err != nil {
				t.Fatal(err)
			}
			img, err := ociimage.Build(ociimage.Spec{Arch: arch, Files: []ociimage.File{{Src: f, Dst: "/" + n}}, Entrypoint: []string{"/" + n}})
			if err != nil {
				t.Fatal(err)
			}
			imgs = append(imgs, img)
		}
		if err := ociimage.WriteIndex(filepath.Join(dir, "images", n+".oci"), "local/"+n+":v0.1.0", imgs); err != nil {
			t.Fatal(err)
		}
	}
	helm := helmBinary(t, root)
	if out, err := exec.Command(helm, "package", filepath.Join(root, bundle.ChartDir), "--destination", dir).CombinedOutput(); err != nil {
		t.Fatalf("helm package: %v\n%s", err, out)
	}
	chartVersion, _, err := bundle.ChartVersions(root)
	if err != nil {
		t.Fatal(err)
	}

	pushed, err := Push(context.Background(), Options{Dir: dir, Registry: host, Version: "v0.1.0", Binaries: names, Insecure: true, Keychain: authn.NewMultiKeychain()})
	if err != nil {
		t.Fatal(err)
	}
	if len(pushed) != 3 {
		t.Fatalf("pushed %v, want two images and the chart", pushed)
	}
	for _, n := range names {
		ref, _ := name.NewTag(host+"/kube-sts/"+n+":v0.1.0", name.Insecure)
		idx, err := remote.Index(ref)
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		m, err := idx.IndexManifest()
		if err != nil || len(m.Manifests) != 2 {
			t.Fatalf("%s: %d manifests (%v), want amd64 and arm64", ref, len(m.Manifests), err)
		}
		for _, d := range m.Manifests {
			if d.Platform == nil || d.Platform.OS != "linux" {
				t.Errorf("%s: manifest without its platform: %+v", ref, d)
			}
		}
	}

	// helm reads the chart as it reads any OCI chart.
	pullDir := t.TempDir()
	out, err := exec.Command(helm, "pull", "oci://"+host+"/kube-sts/charts/kube-sts", "--version", chartVersion,
		"--plain-http", "--destination", pullDir).CombinedOutput()
	if err != nil {
		t.Fatalf("helm pull: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(pullDir, "kube-sts-"+chartVersion+".tgz"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(filepath.Join(dir, "kube-sts-"+chartVersion+".tgz"))
	if !bytes.Equal(got, want) {
		t.Errorf("helm pulled %d bytes, not the %d packaged", len(got), len(want))
	}
	if show, err := exec.Command(helm, "show", "chart", "oci://"+host+"/kube-sts/charts/kube-sts", "--version", chartVersion, "--plain-http").CombinedOutput(); err != nil || !strings.Contains(string(show), "name: kube-sts") {
		t.Errorf("helm show chart: %v\n%s", err, show)
	}
}

func TestPushRefusesWhatItCannotDo(t *testing.T) {
	ctx := context.Background()
	for _, o := range []Options{
		{Dir: t.TempDir(), Registry: "https://reg.example", Version: "v0.1.0", Binaries: []string{"sts-issuer"}},
		{Dir: t.TempDir(), Registry: "", Version: "v0.1.0", Binaries: []string{"sts-issuer"}},
		{Dir: t.TempDir(), Registry: "127.0.0.1:1", Version: "v0.1.0", Binaries: []string{"sts-issuer"}}, // no release there
	} {
		if _, err := Push(ctx, o); err == nil {
			t.Errorf("%+v: pushed", o)
		}
	}
}

// helmBinary is the pinned helm (e2e/hack/toolchain.sh builds it, cached).
func helmBinary(t *testing.T, root string) string {
	t.Helper()
	out, err := exec.Command("bash", filepath.Join(root, "e2e/hack/toolchain.sh"), "--print-bin=helm").Output()
	if err != nil {
		t.Fatalf("toolchain.sh --print-bin=helm: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func discard() *log.Logger { return log.New(io.Discard, "", 0) }
