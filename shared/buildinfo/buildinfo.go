// Package buildinfo carries the version stamped into every binary at build time:
//
//	go build -ldflags "-X github.com/kube-sts/kube-sts/shared/buildinfo.Version=v0.1.0"
package buildinfo

// Version is the release this binary was built from; "dev" when not stamped.
var Version = "dev"
