// Package quickstart reads the README's quick start as a user copies it:
// every shell block after a "<!-- quickstart:NAME -->" marker, in the order
// the README shows them. e2e/manifests compares them with the chart;
// e2e/install runs them on the node.
package quickstart

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kube-sts/kube-sts/e2e/internal/procs"
)

// Block is one marked shell block.
type Block struct {
	Name string
	// Script is the block's text without its fences, ending in a newline.
	Script string
}

const (
	markerStart = "<!-- quickstart:"
	fence       = "```sh\n"
)

// README returns the repository's README.md.
func README() (string, error) {
	b, err := os.ReadFile(filepath.Join(procs.RepoRoot(), "README.md"))
	return string(b), err
}

// Blocks returns every marked block of doc, in order. A marker not directly
// followed by a ```sh block, an unclosed block or a name used twice is an
// error.
func Blocks(doc string) ([]Block, error) {
	var out []Block
	seen := map[string]bool{}
	rest := doc
	for {
		i := strings.Index(rest, markerStart)
		if i < 0 {
			return out, nil
		}
		rest = rest[i+len(markerStart):]
		name, after, ok := strings.Cut(rest, " -->\n")
		if !ok || name == "" || strings.ContainsAny(name, " \n") {
			return nil, fmt.Errorf("README: a quick start marker without a name: %.40q", rest)
		}
		if seen[name] {
			return nil, fmt.Errorf("README: quick start block %q marked twice", name)
		}
		seen[name] = true
		if !strings.HasPrefix(after, fence) {
			return nil, fmt.Errorf("README: the quick start marker %q is not followed by a ```sh block", name)
		}
		body := after[len(fence):]
		end := strings.Index(body, "\n```")
		if end < 0 {
			return nil, fmt.Errorf("README: quick start block %q is not closed", name)
		}
		out = append(out, Block{Name: name, Script: body[:end+1]})
		rest = body[end:]
	}
}

// FromREADME returns the README's blocks.
func FromREADME() ([]Block, error) {
	doc, err := README()
	if err != nil {
		return nil, err
	}
	return Blocks(doc)
}

// Find returns the block called name.
func Find(blocks []Block, name string) (string, error) {
	for _, b := range blocks {
		if b.Name == name {
			return b.Script, nil
		}
	}
	return "", fmt.Errorf("README has no quick start block %q", name)
}

// Text is the block called name or, when heredoc is not "", the text of its
// here-document <<'heredoc'.
func Text(blocks []Block, name, heredoc string) (string, error) {
	b, err := Find(blocks, name)
	if err == nil && heredoc != "" {
		b, err = Heredoc(b, heredoc)
	}
	return b, err
}

// Heredoc returns the text of the here-document `<<'TAG'` in a block.
func Heredoc(block, tag string) (string, error) {
	start := strings.Index(block, "<<'"+tag+"'\n")
	if start < 0 {
		return "", fmt.Errorf("no here-document %s in:\n%s", tag, block)
	}
	body := block[start+len("<<'"+tag+"'\n"):]
	end := strings.Index(body, "\n"+tag+"\n")
	if end < 0 {
		return "", fmt.Errorf("here-document %s is not closed", tag)
	}
	return body[:end+1], nil
}
