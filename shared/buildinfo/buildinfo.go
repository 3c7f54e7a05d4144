// Package buildinfo carries what a binary knows about its build, stamped at
// build time:
//
//	go build -ldflags "-X github.com/kube-sts/kube-sts/shared/buildinfo.Version=v0.1.0 \
//	  -X github.com/kube-sts/kube-sts/shared/buildinfo.Commit=$(git rev-parse HEAD) \
//	  -X github.com/kube-sts/kube-sts/shared/buildinfo.Date=$(git log -1 --format=%cI)"
//
// `--version` prints it and the issuer and webhook export it as a metric.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// Version is the release this binary was built from; "dev" when not stamped.
var Version = "dev"

// Commit and Date are the source revision and its commit time (RFC 3339; the
// commit's, not the build's, so that builds stay reproducible), stamped like
// Version. Unstamped, Get reads them from the Go build information's VCS stamp
// (a `go build` in a git checkout); else they are "unknown".
var (
	Commit = ""
	Date   = ""
)

// Info is one binary's build.
type Info struct {
	Version   string
	Commit    string
	Date      string
	Modified  bool // built from a checkout with uncommitted changes (VCS stamp only)
	GoVersion string
	Platform  string // GOOS/GOARCH
}

// Get returns this binary's build information.
func Get() Info {
	i := Info{Version: Version, Commit: Commit, Date: Date, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if i.Commit == "" {
					i.Commit = s.Value
				}
			case "vcs.time":
				if i.Date == "" {
					i.Date = s.Value
				}
			case "vcs.modified":
				i.Modified = s.Value == "true"
			}
		}
	}
	if i.Commit == "" {
		i.Commit = "unknown"
	}
	if i.Date == "" {
		i.Date = "unknown"
	}
	return i
}

// Text is what `--version` prints: "<binary> <version>" on the first line
// (what scripts read), then one "key: value" line each.
func (i Info) Text(binary string) string {
	var b strings.Builder
	b.WriteString(binary + " " + i.Version + "\n")
	commit := i.Commit
	if i.Modified {
		commit += " (modified)"
	}
	b.WriteString("commit:   " + commit + "\n")
	b.WriteString("date:     " + i.Date + "\n")
	b.WriteString("go:       " + i.GoVersion + "\n")
	b.WriteString("platform: " + i.Platform + "\n")
	return b.String()
}

// LabelNames and LabelValues are the labels of the binaries' *_build_info
// metrics, in this order.
func LabelNames() []string { return []string{"version", "commit", "date", "go_version", "platform"} }

// LabelValues are i's values for LabelNames.
func (i Info) LabelValues() []string {
	return []string{i.Version, i.Commit, i.Date, i.GoVersion, i.Platform}
}
