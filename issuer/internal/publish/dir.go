package publish

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/kube-sts/kube-sts/issuer/internal/config"
	"github.com/kube-sts/kube-sts/shared/atomicfile"
)

// GenerationFile is written beside a directory target's documents; it holds
// the generation of the key set they came from.
const GenerationFile = ".kube-sts-generation"

// Dir is a directory target. Files are replaced atomically and durably
// (atomicfile: a synced temporary file renamed over the old one, the folder
// synced), readable by everyone (0644): a web server serving the directory
// never reads half a document, and a crash never leaves one.
type Dir struct {
	Root string
}

func (d Dir) String() string {
	return config.PublishTarget{Directory: &config.DirectoryTarget{Path: d.Root}}.String()
}

// Read reads <root>/<base>/jwks and the generation file beside it.
func (d Dir) Read(_ context.Context, base string) (string, []byte, bool, error) {
	jwks, err := os.ReadFile(d.path(base, NameJWKS))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", nil, false, nil
	case err != nil:
		return "", nil, false, err
	}
	b, err := os.ReadFile(d.path(base, GenerationFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", jwks, true, nil
	case err != nil:
		return "", nil, false, err
	}
	return strings.TrimSpace(string(b)), jwks, true, nil
}

// Put writes the objects and then the generation file. A directory carries
// no Cache-Control: the web server serving it must set it (docs/relying-parties.md).
func (d Dir) Put(_ context.Context, base string, objs []Object, _ string, gen string) error {
	for _, o := range objs {
		if err := writeAtomic(d.path(base, o.Name), o.Body); err != nil {
			return err
		}
	}
	return writeAtomic(d.path(base, GenerationFile), []byte(gen+"\n"))
}

func (d Dir) path(base, name string) string {
	return filepath.Join(d.Root, filepath.FromSlash(Join(base, name)))
}

// writeAtomic writes path (and the folders above it) with
// atomicfile.Write: synced, renamed over the old file, the folder synced.
func writeAtomic(path string, body []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(path, body, 0o644)
}
