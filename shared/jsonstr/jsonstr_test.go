package jsonstr

import (
	"encoding/json"
	"testing"
)

// FuzzAppend: Append writes what encoding/json writes, for any string, and
// keeps what dst held.
func FuzzAppend(f *testing.F) {
	for _, s := range []string{"", "plain", "eyJhbGciOi.eyJzdWIi.c2ln", `quote " and \ backslash`, "<tag>&amp;", "tab\tnewline\n", "\x00\x1f\x7f", "ü€😀", "\xff\xfe invalid", "\u2028\u2029"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := Append([]byte("x:"), s); string(got) != "x:"+string(want) {
			t.Fatalf("Append(%q) = %s, want x:%s", s, got, want)
		}
	})
}

func BenchmarkAppend(b *testing.B) {
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = Append(buf[:0], "openunison-cp:test-vault:for-vault")
	}
}
