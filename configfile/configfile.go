// Package configfile decodes the binaries' YAML configuration files strictly
// and makes every error say where: the file, the line and the field path.
//
//	issuer.yaml:14: endpoints[0].ttl: unknown unit "min" in duration "15min"
//	issuer.yaml:9: endpoints[0]: unknown field "algoritm" (did you mean "algorithm"?)
//	webhook.yaml:7: injectors[0].nativeSidecar: "yes" is not a boolean: write true or false
//
// Decode walks the YAML document (go.yaml.in/yaml/v3, which keeps positions)
// against the Go type the file decodes into, with the field names
// sigs.k8s.io/yaml reads (json tags), before decoding it with
// sigs.k8s.io/yaml as before: unknown fields, values of the wrong kind, values
// a field's own JSON decoding refuses (a metav1.Duration of "15min"), and YAML
// 1.1 booleans (yes, no, on, off, which YAML 1.2 and this walk read as
// strings) are reported with their position, every one of them, not only the
// first. The Positions it returns put the same prefix on the errors of the
// caller's own validation, which name fields by the same paths.
//
// It is a module of its own so that shared stays standard library only.
package configfile

import (
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

// Positions maps the field paths of a decoded file ("endpoints[0].ttl") to
// the lines they are on.
type Positions struct {
	name  string
	lines map[string]int
}

// Decode decodes the YAML in data into out (a pointer), strictly. name is the
// file's name as errors should show it (empty: errors say "line N").
func Decode(name string, data []byte, out any) (*Positions, error) {
	p := &Positions{name: name, lines: map[string]int{}}
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(data, &doc); err != nil {
		return p, p.syntax(err)
	}
	if doc.Kind == yamlv3.DocumentNode && len(doc.Content) == 1 {
		w := walker{p: p}
		w.value(doc.Content[0], reflect.TypeOf(out).Elem(), "")
		if len(w.errs) > 0 {
			return p, errors.Join(w.errs...)
		}
	}
	if err := yaml.UnmarshalStrict(data, out); err != nil {
		// The walk above catches what it knows; what it does not is still
		// refused, with the file named.
		return p, fmt.Errorf("%s: %w", p.where(0), err)
	}
	return p, nil
}

// Line is the line of path, or of its nearest ancestor the file has (a
// missing required field is reported at the mapping that lacks it); 0 when
// the file has none of them.
func (p *Positions) Line(path string) int {
	for {
		if l, ok := p.lines[path]; ok {
			return l
		}
		if path == "" {
			return 0
		}
		path = parent(path)
	}
}

// Annotate puts "file:line: " before each of err's errors whose text starts
// with a field path the file has ("endpoints[0].ttl: ..."), the form the
// binaries' Validate methods use; an errors.Join is annotated error by error.
// Other errors get the file name alone.
func (p *Positions) Annotate(err error) error {
	if err == nil {
		return nil
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range joined.Unwrap() {
			out = append(out, p.Annotate(e))
		}
		return errors.Join(out...)
	}
	field, _, ok := strings.Cut(err.Error(), ": ")
	if !ok || strings.ContainsAny(field, " \t\"") {
		return fmt.Errorf("%s: %w", p.where(0), err)
	}
	return fmt.Errorf("%s: %w", p.where(p.Line(field)), err)
}

// where is "file:line", "file", "line N" or "configuration".
func (p *Positions) where(line int) string {
	switch {
	case p.name != "" && line > 0:
		return p.name + ":" + strconv.Itoa(line)
	case p.name != "":
		return p.name
	case line > 0:
		return "line " + strconv.Itoa(line)
	}
	return "configuration"
}

// syntax rewrites the YAML parser's "yaml: line 3: ..." as "file:3: ...".
func (p *Positions) syntax(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, tail, ok := strings.Cut(rest, ": "); ok {
			if line, e := strconv.Atoi(n); e == nil {
				return fmt.Errorf("%s: %s", p.where(line), tail)
			}
		}
	}
	return fmt.Errorf("%s: %s", p.where(0), msg)
}

func parent(path string) string {
	if i := strings.LastIndexAny(path, ".["); i >= 0 {
		return path[:i]
	}
	return ""
}

// walker checks a YAML node against a Go type and records positions.
type walker struct {
	p    *Positions
	errs []error
}

func (w *walker) fail(n *yamlv3.Node, path, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	w.errs = append(w.errs, fmt.Errorf("%s: %s", w.p.where(n.Line), msg))
}

var (
	jsonUnmarshaler = reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()
	textUnmarshaler = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
)

func (w *walker) value(n *yamlv3.Node, t reflect.Type, path string) {
	if n.Kind == yamlv3.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if _, seen := w.p.lines[path]; !seen || path == "" {
		w.p.lines[path] = n.Line
	}
	if n.Kind == yamlv3.ScalarNode && n.ShortTag() == "!!null" {
		return // null is the zero value of any type
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	// A type with its own JSON decoding (metav1.Duration, resource.Quantity)
	// decides for itself, as sigs.k8s.io/yaml will let it.
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		w.custom(n, t, path)
		return
	}
	if t.Kind() != reflect.String && reflect.PointerTo(t).Implements(textUnmarshaler) {
		w.custom(n, t, path)
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		w.object(n, t, path)
	case reflect.Map:
		if n.Kind != yamlv3.MappingNode {
			w.fail(n, path, "is %s, not a mapping", describe(n))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			child := k.Value
			if path != "" {
				child = path + "." + k.Value
			}
			w.p.lines[child] = k.Line
			w.value(v, t.Elem(), child)
		}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 && n.Kind == yamlv3.ScalarNode {
			return // []byte: base64 text
		}
		if n.Kind != yamlv3.SequenceNode {
			w.fail(n, path, "is %s, not a list", describe(n))
			return
		}
		for i, item := range n.Content {
			w.value(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Bool:
		if n.Kind != yamlv3.ScalarNode || n.ShortTag() != "!!bool" {
			if n.Kind == yamlv3.ScalarNode && yaml11Bool(n.Value) {
				w.fail(n, path, "%q is not a boolean: write true or false (YAML 1.1's yes, no, on and off are not read as booleans)", n.Value)
				return
			}
			w.fail(n, path, "is %s, not a boolean: write true or false", describe(n))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if n.Kind != yamlv3.ScalarNode || n.ShortTag() != "!!int" {
			w.fail(n, path, "is %s, not a whole number", describe(n))
		}
	case reflect.Float32, reflect.Float64:
		if tag := n.ShortTag(); n.Kind != yamlv3.ScalarNode || tag != "!!int" && tag != "!!float" {
			w.fail(n, path, "is %s, not a number", describe(n))
		}
	case reflect.String:
		if n.Kind != yamlv3.ScalarNode {
			w.fail(n, path, "is %s, not a string", describe(n))
		}
	}
	// Interfaces take anything.
}

// object checks a mapping against a struct's fields as encoding/json names
// them (json tags, embedded structs inlined, names matched without regard to
// case as encoding/json does).
func (w *walker) object(n *yamlv3.Node, t reflect.Type, path string) {
	if n.Kind != yamlv3.MappingNode {
		w.fail(n, path, "is %s, not a mapping", describe(n))
		return
	}
	fields := jsonFields(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		f, ok := fields[k.Value]
		if !ok {
			for name, cand := range fields {
				if strings.EqualFold(name, k.Value) {
					f, ok = cand, true
					break
				}
			}
		}
		if !ok {
			msg := fmt.Sprintf("unknown field %q", k.Value)
			if s := suggest(k.Value, fields); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			w.fail(k, path, "%s", msg)
			continue
		}
		child := f.name
		if path != "" {
			child = path + "." + f.name
		}
		w.p.lines[child] = k.Line
		w.value(v, f.typ, child)
	}
}

type jsonField struct {
	name string
	typ  reflect.Type
}

// jsonFields lists the fields encoding/json decodes into t, by name.
func jsonFields(t reflect.Type) map[string]jsonField {
	out := map[string]jsonField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		if f.Anonymous && name == "" {
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range jsonFields(ft) {
					if _, dup := out[k]; !dup {
						out[k] = v
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = jsonField{name: name, typ: f.Type}
	}
	return out
}

// custom lets a type's own JSON decoding judge the node.
func (w *walker) custom(n *yamlv3.Node, t reflect.Type, path string) {
	var v any
	if err := n.Decode(&v); err != nil {
		w.fail(n, path, "%v", err)
		return
	}
	if n.Kind == yamlv3.ScalarNode && n.ShortTag() != "!!str" {
		// sigs.k8s.io/yaml hands scalars to a string-shaped target as text.
		v = n.Value
	}
	raw, err := json.Marshal(v)
	if err != nil {
		w.fail(n, path, "%v", err)
		return
	}
	target := reflect.New(t).Interface()
	if u, ok := target.(json.Unmarshaler); ok {
		err = u.UnmarshalJSON(raw)
	} else if u, ok := target.(encoding.TextUnmarshaler); ok {
		err = u.UnmarshalText([]byte(n.Value))
	}
	if err != nil {
		w.fail(n, path, "%s", strings.TrimPrefix(err.Error(), "time: "))
	}
}

func describe(n *yamlv3.Node) string {
	switch n.Kind {
	case yamlv3.MappingNode:
		return "a mapping"
	case yamlv3.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

func yaml11Bool(s string) bool {
	switch strings.ToLower(s) {
	case "y", "yes", "n", "no", "on", "off":
		return true
	}
	return false
}

// suggest is the known field closest to an unknown one, when it is close.
func suggest(name string, fields map[string]jsonField) string {
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	best, bestD := "", 3
	for _, k := range names {
		if d := distance(strings.ToLower(name), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// distance is the Levenshtein distance of a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
