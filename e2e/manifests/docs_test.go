package manifests

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"github.com/kube-sts/kube-sts/e2e/internal/procs"
)

// TestDocsLinks keeps the documentation navigable: every relative link of the
// README, docs/, CHANGELOG, SECURITY and the chart's README names a file that
// exists and, for a Markdown file, a heading it has (GitHub's anchors).
func TestDocsLinks(t *testing.T) {
	root := procs.RepoRoot()
	files := []string{"README.md", "CHANGELOG.md", "SECURITY.md", "manifests/charts/kube-sts/README.md"}
	err := filepath.WalkDir(filepath.Join(root, "docs"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".md") {
			rel, _ := filepath.Rel(root, p)
			files = append(files, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]map[string]bool{}
	// read returns the lines of f, with those of code blocks blanked.
	read := func(f string) []string {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		fence := false
		s := bufio.NewScanner(strings.NewReader(string(b)))
		s.Buffer(nil, 1<<20)
		for s.Scan() {
			l := s.Text()
			if strings.HasPrefix(l, "```") {
				fence = !fence
			}
			if fence || strings.HasPrefix(l, "```") {
				l = "" // code is not Markdown: no headings, no links
			}
			lines = append(lines, l)
		}
		return lines
	}
	heading := regexp.MustCompile(`^#{1,6} (.*)$`)
	anchorsOf := func(f string) map[string]bool {
		if a, ok := anchors[f]; ok {
			return a
		}
		a := map[string]bool{}
		for _, l := range read(f) {
			if m := heading.FindStringSubmatch(l); m != nil {
				a[githubAnchor(m[1])] = true
			}
		}
		anchors[f] = a
		return a
	}
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	scheme := regexp.MustCompile(`^[a-z]+:`)
	links := 0
	for _, f := range files {
		for n, l := range read(f) {
			for _, m := range link.FindAllStringSubmatch(l, -1) {
				target := m[1]
				if scheme.MatchString(target) {
					continue
				}
				links++
				path, anchor, _ := strings.Cut(target, "#")
				dest := f
				if path != "" {
					dest = filepath.Clean(filepath.Join(filepath.Dir(f), path))
				}
				if _, err := os.Stat(filepath.Join(root, dest)); err != nil {
					t.Errorf("%s line %d: link %q: no file %s", f, n+1, target, dest)
					continue
				}
				if anchor == "" || !strings.HasSuffix(dest, ".md") {
					continue
				}
				if !anchorsOf(dest)[anchor] {
					t.Errorf("%s line %d: link %q: %s has no heading with anchor #%s", f, n+1, target, dest, anchor)
				}
			}
		}
	}
	if links < 50 {
		t.Fatalf("found %d relative links; the documentation has many more (is the parser broken?)", links)
	}
}

// githubAnchor is the id GitHub gives a heading: lower case, punctuation other
// than '-' and '_' dropped, spaces to '-'.
func githubAnchor(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
