package manifests

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/kube-sts/kube-sts/e2e/internal/procs"
)

var update = flag.Bool("update", false, "rewrite docs/reference/values.md from the chart's schema (make docs)")

// valuesReference is where the generated values reference lives.
const valuesReference = "docs/reference/values.md"

// TestValuesReference keeps docs/reference/values.md what the chart's
// values.schema.json and values.yaml say: every value with its type, default
// and description. The schema is the one place a value is described; a value
// without a description fails here, and so does a reference edited by hand or
// left behind by a schema change (`make docs` rewrites it).
func TestValuesReference(t *testing.T) {
	got, err := renderValuesReference(chartDir())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(procs.RepoRoot(), valuesReference)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run `make docs`)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from what the chart's schema and values say; run `make docs` and commit it.\n--- generated:\n%s", valuesReference, got)
	}
}

// schemaNode is the part of JSON Schema (draft-07) the chart's schema uses.
type schemaNode struct {
	Ref         string                 `json:"$ref"`
	Type        any                    `json:"type"`
	Enum        []any                  `json:"enum"`
	Description string                 `json:"description"`
	Properties  map[string]*schemaNode `json:"properties"`
	Items       *schemaNode            `json:"items"`
	AllOf       []*schemaNode          `json:"allOf"`
	Definitions map[string]*schemaNode `json:"definitions"`
}

// valueDoc is one row of the reference.
type valueDoc struct {
	path, typ, def, desc string
}

func renderValuesReference(chart string) ([]byte, error) {
	raw, err := os.ReadFile(filepath.Join(chart, "values.schema.json"))
	if err != nil {
		return nil, err
	}
	var root schemaNode
	if err := json.Unmarshal(raw, &root); err != nil {
		return nil, fmt.Errorf("values.schema.json: %w", err)
	}
	rawValues, err := os.ReadFile(filepath.Join(chart, "values.yaml"))
	if err != nil {
		return nil, err
	}
	var values map[string]any
	if err := yaml.Unmarshal(rawValues, &values); err != nil {
		return nil, fmt.Errorf("values.yaml: %w", err)
	}
	deref := func(n *schemaNode) *schemaNode {
		if name, ok := strings.CutPrefix(n.Ref, "#/definitions/"); ok && root.Definitions[name] != nil {
			d := *root.Definitions[name]
			if n.Description != "" {
				d.Description = n.Description
			}
			return &d
		}
		return n
	}
	var rows []valueDoc
	var missing []string
	var walk func(n *schemaNode, path string, def any, hasDef bool)
	walk = func(n *schemaNode, path string, def any, hasDef bool) {
		n = deref(n)
		props := map[string]*schemaNode{}
		for _, a := range n.AllOf {
			for k, v := range deref(a).Properties {
				props[k] = v
			}
		}
		for k, v := range n.Properties {
			props[k] = v
		}
		keys := make([]string, 0, len(props))
		for k := range props {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		defMap, _ := def.(map[string]any)
		for _, k := range keys {
			p := k
			if path != "" {
				p = path + "." + k
			}
			child := deref(props[k])
			v, ok := defMap[k]
			if child.Description == "" {
				missing = append(missing, p)
			}
			typ := typeOf(child)
			switch props[k].Ref {
			case "#/definitions/duration":
				typ = "duration"
			case "#/definitions/port":
				typ = "port"
			}
			def := defaultOf(v, ok && hasDef)
			if len(child.Properties) > 0 || len(child.AllOf) > 0 {
				def = "" // its values follow, each with its default
			}
			rows = append(rows, valueDoc{path: p, typ: typ, def: def, desc: child.Description})
			walk(child, p, v, ok && hasDef)
			if child.Items != nil {
				item := deref(child.Items)
				var first any
				list, _ := v.([]any)
				if len(list) > 0 {
					first = list[0]
				}
				walk(item, p+"[]", first, len(list) > 0)
			}
		}
	}
	walk(&root, "", values, true)
	if len(missing) > 0 {
		return nil, fmt.Errorf("values.schema.json: no description for %s", strings.Join(missing, ", "))
	}

	var b bytes.Buffer
	b.WriteString("<!-- Generated from manifests/charts/kube-sts/values.schema.json and values.yaml by\n" +
		"     e2e/manifests TestValuesReference (`make docs`); edit the schema, not this file. -->\n")
	b.WriteString("# Chart values\n\n")
	b.WriteString("Every value of the `kube-sts` chart (`manifests/charts/kube-sts`), with its type, its default\n" +
		"in `values.yaml` and what it does. `values.schema.json` refuses unknown keys and wrong types with\n" +
		"the path of the value. For a list (`sts.endpoints`), the defaults shown are those of the\n" +
		"default list's first item; a list you set replaces the default one whole.\n")
	section := ""
	for _, r := range rows {
		top, _, _ := strings.Cut(r.path, ".")
		top = strings.TrimSuffix(top, "[]")
		if top != section {
			section = top
			fmt.Fprintf(&b, "\n## `%s`\n\n| value | type | default | description |\n|---|---|---|---|\n", top)
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", r.path, r.typ, r.def, cell(r.desc))
	}
	return b.Bytes(), nil
}

// typeOf names a value's type as a reader of values.yaml thinks of it.
func typeOf(n *schemaNode) string {
	switch {
	case len(n.Enum) > 0:
		var vs []string
		for _, e := range n.Enum {
			j, _ := json.Marshal(e)
			vs = append(vs, "`"+string(j)+"`")
		}
		return "one of " + strings.Join(vs, ", ")
	}
	switch t := n.Type.(type) {
	case string:
		return t
	case []any:
		var ts []string
		for _, x := range t {
			ts = append(ts, fmt.Sprint(x))
		}
		return strings.Join(ts, " or ")
	}
	if n.Properties != nil {
		return "object"
	}
	return "any"
}

// defaultOf prints a default compactly (JSON: strings quoted, maps in braces).
func defaultOf(v any, ok bool) string {
	if !ok {
		return "—"
	}
	j, err := json.Marshal(v)
	if err != nil {
		return "?"
	}
	s := string(j)
	if len(s) > 60 {
		s = s[:57] + "…"
	}
	return "`" + strings.ReplaceAll(s, "|", `\|`) + "`"
}

// cell makes text safe inside a Markdown table cell.
func cell(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ")
}
