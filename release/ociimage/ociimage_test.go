package ociimage

import (
	"archive/tar"
	"os"
	"path/filepath"
	"testing"
)

func TestParseFile(t *testing.T) {
	for in, want := range map[string]File{
		"bin/x:/x":           {Src: "bin/x", Dst: "/x"},
		"ca.pem:/etc/ca:644": {Src: "ca.pem", Dst: "/etc/ca", Mode: 0o644},
	} {
		got, err := ParseFile(in)
		if err != nil || got != want {
			t.Errorf("ParseFile(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"x", "a:b:c:d", "a:/b:9z"} {
		if _, err := ParseFile(bad); err == nil {
			t.Errorf("ParseFile(%q) accepted", bad)
		}
	}
}

// TestBuild: the layer holds parent folders, files with their modes, and
// symlinks; the config says platform, entrypoint, user and environment.
func TestBuild(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "tool")
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	img, err := Build(Spec{Arch: "arm64", Files: []File{{Src: bin, Dst: "/usr/bin/tool"}, {Src: bin, Dst: "/etc/tool.conf", Mode: 0o644}},
		Links: []Link{{Dst: "/bin/t", Target: "/usr/bin/tool"}}, Entrypoint: []string{"/usr/bin/tool"}, User: "65532:65532", Env: []string{"A=b"}})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "arm64" || cf.Variant != "v8" || cf.Config.User != "65532:65532" ||
		len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/usr/bin/tool" || len(cf.Config.Env) != 2 || cf.Config.Env[1] != "A=b" {
		t.Fatalf("config %+v / %+v", cf, cf.Config)
	}
	if layers, err := img.Layers(); err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d %v", len(layers), err)
	}
	got, err := Contents(img)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]struct {
		typ  byte
		mode int64
	}{
		"/tmp": {tar.TypeDir, 0o1777}, "/usr": {tar.TypeDir, 0o755}, "/usr/bin": {tar.TypeDir, 0o755},
		"/usr/bin/tool": {tar.TypeReg, 0o755}, "/etc/tool.conf": {tar.TypeReg, 0o644}, "/bin/t": {tar.TypeSymlink, 0o777},
	} {
		e, ok := got[name]
		if !ok || e.Typeflag != want.typ || e.Mode != want.mode {
			t.Errorf("%s: %+v, want type %c mode %o", name, e.Header, want.typ, want.mode)
		}
	}
	if e := got["/bin/t"]; e.Header == nil || e.Linkname != "/usr/bin/tool" {
		t.Errorf("symlink: %+v", e.Header)
	}
	if string(got["/etc/tool.conf"].Data) != "#!/bin/true\n" {
		t.Errorf("file content %q", got["/etc/tool.conf"].Data)
	}
	if _, err := Build(Spec{Arch: "amd64", Files: []File{{Src: filepath.Join(dir, "missing"), Dst: "/x"}}}); err == nil {
		t.Error("a missing source file was accepted")
	}
}
