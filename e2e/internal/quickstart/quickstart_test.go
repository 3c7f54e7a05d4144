package quickstart

import (
	"slices"
	"strings"
	"testing"
)

// The README's quick start is these blocks, in this order: e2e/install runs
// each with what it needs on the node (a block added, renamed or moved is
// a change that test must be told about).
func TestREADMEBlocks(t *testing.T) {
	blocks, err := FromREADME()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range blocks {
		names = append(names, b.Name)
		if strings.TrimSpace(b.Script) == "" {
			t.Errorf("block %q is empty", b.Name)
		}
	}
	if want := []string{"push", "values", "expose", "vault", "secret", "pod", "check"}; !slices.Equal(names, want) {
		t.Errorf("the README's quick start blocks are %v, want %v", names, want)
	}
}

func TestBlocksRefuseMalformedMarkers(t *testing.T) {
	for doc, want := range map[string]string{
		"<!-- quickstart:a -->\n```sh\necho\n```\n<!-- quickstart:a -->\n```sh\necho\n```\n": "marked twice",
		"<!-- quickstart:a -->\n\n```sh\necho\n```\n":                                        "not followed by a ```sh block",
		"<!-- quickstart:a -->\n```sh\necho\n":                                               "not closed",
		"<!-- quickstart: -->\n```sh\necho\n```\n":                                           "without a name",
	} {
		if _, err := Blocks(doc); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Blocks(%q) = %v, want an error saying %q", doc, err, want)
		}
	}
	blocks, err := Blocks("text\n<!-- quickstart:one -->\n```sh\ncat <<'X'\nbody\nX\n```\nmore\n")
	if err != nil || len(blocks) != 1 || blocks[0].Script != "cat <<'X'\nbody\nX\n" {
		t.Fatalf("Blocks = %+v, %v", blocks, err)
	}
	if h, err := Heredoc(blocks[0].Script, "X"); err != nil || h != "body\n" {
		t.Errorf("Heredoc = %q, %v", h, err)
	}
}
