package admit

// Lists: the elements of a list in after are matched to those of before by
// identity (name and mountPath: containers, volumes, env, mounts; equal
// value otherwise), so that an element injection moved is found where raw
// has it. See the package documentation for a worked example.

import (
	"reflect"
	"strconv"

	"gomodules.xyz/jsonpatch/v2"
)

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
