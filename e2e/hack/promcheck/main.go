// Command promcheck checks Prometheus rules and queries with Prometheus's own
// code, the way Prometheus loads them:
//
//	promcheck rules FILE...   parse and validate rules files (rulefmt: the
//	                          checks promtool check rules and Prometheus make)
//	promcheck names           read a JSON list of PromQL expressions on stdin,
//	                          print the metric names they select, sorted
//
// It exits 1 naming what does not pass. e2e/hack/toolchain.sh builds it in a
// module of its own that requires the pinned Prometheus (target promcheck);
// the go.mod beside it keeps it out of the e2e module, so e2e does not carry
// Prometheus's dependencies. It compiles a small part of Prometheus, where
// promtool compiles every service discovery.
package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	if len(os.Args) < 2 {
		fail(2, "usage: promcheck rules FILE... | promcheck names < exprs.json")
	}
	p := parser.NewParser(parser.Options{})
	switch os.Args[1] {
	case "rules":
		rules(p, os.Args[2:])
	case "names":
		names(p)
	default:
		fail(2, "unknown command %q", os.Args[1])
	}
}

func rules(p parser.Parser, files []string) {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	bad := false
	for _, f := range files {
		groups, errs := rulefmt.ParseFile(f, false, model.UTF8Validation, p, log)
		for _, err := range errs {
			fmt.Fprintf(os.Stderr, "promcheck: %v\n", err)
			bad = true
		}
		if groups == nil {
			continue
		}
		n := 0
		for _, g := range groups.Groups {
			seen := map[string]bool{}
			for _, r := range g.Rules {
				n++
				// promtool's lint: the same alert or record twice in a group.
				key := r.Alert + r.Record + "\x00" + r.Expr
				if seen[key] {
					fmt.Fprintf(os.Stderr, "promcheck: %s: group %q: rule %s%s appears twice\n", f, g.Name, r.Alert, r.Record)
					bad = true
				}
				seen[key] = true
			}
		}
		fmt.Printf("%s: %d rules in %d groups\n", f, n, len(groups.Groups))
	}
	if bad {
		os.Exit(1)
	}
}

func names(p parser.Parser) {
	var exprs []string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fail(2, "stdin is not a JSON list of expressions: %v", err)
	}
	seen := map[string]bool{}
	for _, e := range exprs {
		expr, err := p.ParseExpr(e)
		if err != nil {
			fail(1, "%q: %v", e, err)
		}
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			vs, ok := n.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			name := vs.Name
			for _, m := range vs.LabelMatchers {
				if name == "" && m.Name == labels.MetricName && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
			if name == "" {
				fail(1, "%q selects series without naming a metric", e)
			}
			seen[name] = true
			return nil
		})
	}
	var out []string
	for n := range seen {
		out = append(out, n)
	}
	slices.Sort(out)
	for _, n := range out {
		fmt.Println(n)
	}
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "promcheck: "+format+"\n", args...)
	os.Exit(code)
}
