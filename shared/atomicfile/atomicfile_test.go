package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestWriteReplacesAndSetsMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token.jwt")
	for i, content := range []string{"first.token.sig", "second.token.sig"} {
		if err := Write(path, []byte(content), 0o440); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Fatalf("read %d = %q, %v; want %q", i, got, err, content)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o440 {
			t.Fatalf("mode = %v, want 0440", st.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want only the token: %v", len(entries), entries)
	}
}

func TestWriteIntoMissingDirFails(t *testing.T) {
	err := Write(filepath.Join(t.TempDir(), "nope", "token.jwt"), []byte("x"), 0o440)
	if err == nil {
		t.Fatal("Write into a missing directory succeeded")
	}
}

func TestRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token.jwt")
	if err := Remove(path); err != nil {
		t.Fatalf("remove missing: %v", err)
	}
	if err := Write(path, []byte("x"), 0o440); err != nil {
		t.Fatal(err)
	}
	if err := Remove(path); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file still there: %v", err)
	}
}

func TestCleanTemps(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token.jwt")
	stale := filepath.Join(dir, tempPrefix+"token.jwt-123")
	other := filepath.Join(dir, "keep.me")
	for _, p := range []string{stale, other} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	CleanTemps(path)
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stale temp file kept: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatalf("unrelated file removed: %v", err)
	}
}

// TestReaderNeverSeesPartialFile rotates the file 1,000 times with contents of
// different lengths while a reader reads it 100,000 times: every read must be
// one complete version.
func TestReaderNeverSeesPartialFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token.jwt")
	versions := make([][]byte, 8)
	valid := map[string]bool{}
	for i := range versions {
		versions[i] = bytes.Repeat([]byte{byte('a' + i)}, 500+i*300)
		valid[string(versions[i])] = true
	}
	if err := Write(path, versions[0], 0o440); err != nil {
		t.Fatal(err)
	}
	const writes, reads = 1000, 100000
	var done atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer done.Store(true)
		for i := 1; i <= writes; i++ {
			if err := Write(path, versions[i%len(versions)], 0o440); err != nil {
				t.Errorf("write %d: %v", i, err)
				return
			}
		}
	}()
	bad := 0
	n := 0
	for ; n < reads || !done.Load(); n++ {
		got, err := os.ReadFile(path)
		if err != nil || !valid[string(got)] {
			bad++
			if bad < 5 {
				t.Errorf("read %d: %d bytes, err %v: not a complete version", n, len(got), err)
			}
		}
	}
	wg.Wait()
	if bad > 0 {
		t.Fatalf("%d of %d reads saw a partial, empty or missing file", bad, n)
	}
}

// TestWriteSyncsFileAndFolder: the bytes are synced before the rename and
// the folder after it, so that a crash leaves the old file or the new one.
func TestWriteSyncsFileAndFolder(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "jwks")
	var synced []string
	was := fsync
	fsync = func(f *os.File) error {
		_, err := os.Stat(path)
		synced = append(synced, fmt.Sprintf("%s (target exists: %v)", filepath.Base(f.Name()), err == nil))
		return was(f)
	}
	t.Cleanup(func() { fsync = was })
	if err := Write(path, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if len(synced) != 2 || !strings.HasPrefix(synced[0], tempPrefix+"jwks-") || !strings.HasSuffix(synced[0], "(target exists: false)") ||
		synced[1] != filepath.Base(dir)+" (target exists: true)" {
		t.Errorf("synced %q; want the temporary file before the rename, then the folder", synced)
	}
	synced = nil
	if err := Remove(path); err != nil {
		t.Fatal(err)
	}
	if len(synced) != 1 || !strings.HasPrefix(synced[0], filepath.Base(dir)+" ") {
		t.Errorf("Remove synced %q; want the folder", synced)
	}
}
