package admit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
)

// injectionPatch returns the JSON patch that turns the Pod the API server
// sent (raw) into the mutated Pod, touching only what injection changed.
//
// Diffing raw against the re-encoded Go type would remove every field that
// the compiled-in k8s.io/api does not know (a newer API server's Pod fields,
// security fields among them). So the change is computed between two
// encodings of the same Go type, before and after injection, and laid onto
// raw: a field that raw has and the type does not is never looked at.
// Lists are matched by element identity (name, mountPath), not position, so
// an element that shifts because ours went in front keeps its unknown fields.
func injectionPatch(raw []byte, before, after any) ([]jsonpatch.JsonPatchOperation, error) {
	orig, err := decode(raw)
	if err != nil {
		return nil, fmt.Errorf("decode the admitted object: %w", err)
	}
	b, err := reencode(before)
	if err != nil {
		return nil, err
	}
	a, err := reencode(after)
	if err != nil {
		return nil, err
	}
	var ops []jsonpatch.JsonPatchOperation
	diffValue("", orig, b, a, &ops)
	return ops, nil
}

func decode(data []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

func reencode(v any) (any, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return decode(data)
}

// diffValue appends the operations that turn o (raw, at path p) into what
// injection made of it: b is o's typed encoding before injection, a after.
func diffValue(p string, o, b, a any, ops *[]jsonpatch.JsonPatchOperation) {
	if reflect.DeepEqual(b, a) {
		return
	}
	switch av := a.(type) {
	case map[string]any:
		bm, okB := b.(map[string]any)
		om, okO := o.(map[string]any)
		if okB && okO {
			diffObject(p, om, bm, av, ops)
			return
		}
	case []any:
		bs, okB := b.([]any)
		ol, okO := o.([]any)
		if okB && okO && len(bs) == len(ol) {
			diffArray(p, ol, bs, av, ops)
			return
		}
	}
	*ops = append(*ops, jsonpatch.NewOperation("replace", p, a))
}

func diffObject(p string, o, b, a map[string]any, ops *[]jsonpatch.JsonPatchOperation) {
	for _, k := range sortedKeys(a) {
		av := a[k]
		bv, inB := b[k]
		ov, inO := o[k]
		switch {
		case inB && reflect.DeepEqual(bv, av):
		case !inO:
			// Absent from raw (the type may have invented a zero value for it).
			*ops = append(*ops, jsonpatch.NewOperation("add", child(p, k), av))
		case !inB:
			// Raw holds a value the type omits (null, an empty list).
			*ops = append(*ops, jsonpatch.NewOperation("replace", child(p, k), av))
		default:
			diffValue(child(p, k), ov, bv, av, ops)
		}
	}
	for _, k := range sortedKeys(b) {
		if _, inA := a[k]; !inA {
			if _, inO := o[k]; inO {
				*ops = append(*ops, jsonpatch.NewOperation("remove", child(p, k), nil))
			}
		}
	}
}

// diffArray removes the elements injection dropped, then walks the result in
// order: an element that stayed in place is diffed where it now stands, a new
// one is added. An element that injection moved (ours, put back in front on
// re-invocation) is removed and added again with its raw fields merged in.
func diffArray(p string, o, b, a []any, ops *[]jsonpatch.JsonPatchOperation) {
	origin := match(b, a)
	kept := inPlace(origin)
	stays := make([]bool, len(b))
	for k, j := range origin {
		if kept[k] {
			stays[j] = true
		}
	}
	for j := len(b) - 1; j >= 0; j-- {
		if !stays[j] {
			*ops = append(*ops, jsonpatch.NewOperation("remove", child(p, strconv.Itoa(j)), nil))
		}
	}
	for i, av := range a {
		at := child(p, strconv.Itoa(i))
		switch j := origin[i]; {
		case kept[i]:
			diffValue(at, o[j], b[j], av, ops)
		case j >= 0:
			*ops = append(*ops, jsonpatch.NewOperation("add", at, merge(o[j], b[j], av)))
		default:
			*ops = append(*ops, jsonpatch.NewOperation("add", at, av))
		}
	}
}

// merge returns o with injection's change from b to a applied.
func merge(o, b, a any) any {
	if reflect.DeepEqual(b, a) {
		return o
	}
	switch av := a.(type) {
	case map[string]any:
		bm, okB := b.(map[string]any)
		om, okO := o.(map[string]any)
		if !okB || !okO {
			return a
		}
		out := make(map[string]any, len(om))
		for k, v := range om {
			if _, inB := bm[k]; inB {
				if _, inA := av[k]; !inA {
					continue
				}
			}
			out[k] = v
		}
		for k, v := range av {
			ov, inO := om[k]
			bv, inB := bm[k]
			if inO && inB {
				out[k] = merge(ov, bv, v)
			} else {
				out[k] = v
			}
		}
		return out
	case []any:
		bs, okB := b.([]any)
		ol, okO := o.([]any)
		if !okB || !okO || len(bs) != len(ol) {
			return a
		}
		out := make([]any, len(av))
		for i, j := range match(bs, av) {
			if j >= 0 {
				out[i] = merge(ol[j], bs[j], av[i])
			} else {
				out[i] = av[i]
			}
		}
		return out
	}
	return a
}

// match returns, for each element of a, the index of the element of b it
// came from, or -1 for a new one. Objects are matched by name and mountPath
// (containers, volumes, env, mounts); anything else by equal value.
func match(b, a []any) []int {
	used := make([]bool, len(b))
	origin := make([]int, len(a))
	for i, av := range a {
		origin[i] = -1
		id, hasID := identity(av)
		for j, bv := range b {
			if used[j] {
				continue
			}
			bid, bHasID := identity(bv)
			if hasID && bHasID && id == bid || !hasID && !bHasID && reflect.DeepEqual(av, bv) {
				used[j], origin[i] = true, j
				break
			}
		}
	}
	return origin
}

func identity(v any) (string, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		return "", false
	}
	name, hasName := m["name"].(string)
	mount, hasMount := m["mountPath"].(string)
	if !hasName && !hasMount {
		return "", false
	}
	return name + "\x00" + mount, true
}

// inPlace marks the longest run of matched elements whose origins keep their
// order; only those can be patched where they stand.
func inPlace(origin []int) []bool {
	n := len(origin)
	length, prev := make([]int, n), make([]int, n)
	best := -1
	for i := range n {
		prev[i] = -1
		if origin[i] < 0 {
			continue
		}
		length[i] = 1
		for j := range i {
			if origin[j] >= 0 && origin[j] < origin[i] && length[j]+1 > length[i] {
				length[i], prev[i] = length[j]+1, j
			}
		}
		if best < 0 || length[i] > length[best] {
			best = i
		}
	}
	kept := make([]bool, n)
	for i := best; i >= 0; i = prev[i] {
		kept[i] = true
	}
	return kept
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// child appends an RFC 6901 reference token to a JSON pointer.
func child(p, token string) string {
	return p + "/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(token)
}
