package cli

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
)

type opts struct {
	Name, Env string
}

func (o *opts) AddFlags(f *flag.FlagSet)            { f.StringVar(&o.Name, "name", o.Name, "a name") }
func (o *opts) Complete(getenv func(string) string) { o.Env = getenv("X") }
func (o *opts) Validate() error {
	if o.Name == "" {
		return errors.New("--name is required")
	}
	return nil
}

func TestParse(t *testing.T) {
	env := func(k string) string { return map[string]string{"X": "from-env"}[k] }
	o := &opts{Name: "default"}
	if err := Parse("t", o, []string{"--name", "n"}, env, io.Discard); err != nil || o.Name != "n" || o.Env != "from-env" {
		t.Fatalf("Parse = %v, %+v", err, o)
	}
	if err := Parse("t", &opts{}, nil, env, io.Discard); err == nil || !strings.Contains(err.Error(), "--name is required") {
		t.Fatalf("validation: %v", err)
	}
	if err := Parse("t", &opts{Name: "d"}, []string{"stray"}, env, io.Discard); err == nil || !strings.Contains(err.Error(), `unexpected argument "stray"`) {
		t.Fatalf("stray argument: %v", err)
	}
	if err := Parse("t", &opts{}, []string{"--nope"}, env, io.Discard); err == nil {
		t.Fatal("unknown flag accepted")
	}
}
