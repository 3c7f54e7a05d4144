// Package cli reads a kube-sts binary's command line the same way for every
// binary: flags, then what the environment supplies, then one validation
// that reports every problem.
package cli

import (
	"flag"
	"fmt"
	"io"
)

// Options is a binary's typed options.
type Options interface {
	// AddFlags binds the options to flags (their defaults are the current values).
	AddFlags(*flag.FlagSet)
	// Complete fills what the environment supplies.
	Complete(getenv func(string) string)
	// Validate reports every problem at once.
	Validate() error
}

// Parse reads args into o for the binary called name; usage and flag errors
// go to out. Positional arguments are refused.
func Parse(name string, o Options, args []string, getenv func(string) string, out io.Writer) error {
	flags := flag.NewFlagSet(name, flag.ContinueOnError)
	flags.SetOutput(out)
	o.AddFlags(flags)
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", flags.Arg(0))
	}
	o.Complete(getenv)
	return o.Validate()
}

// Off reports whether a listen address turns its server off. Every binary
// reads --metrics-listen the same way: empty or "0" (controller-runtime's
// spelling) is off, and Complete stores it as empty.
func Off(addr string) bool { return addr == "" || addr == "0" }
