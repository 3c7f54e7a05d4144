#!/usr/bin/env bash
# compile.sh compiles one flavour of the workspace's code into the Go build
# cache, linking nothing:
#
#   hack/compile.sh release-amd64|race|release-arm64
#
#   release-amd64  what `make build-standalone`, the e2e suites' binaries and
#                  the release images build: each binary module on its own
#                  (GOWORK=off), static, trimmed
#   race           every package of every module and every package its tests
#                  import (test-only dependencies too), with -race: what the
#                  unit and e2e tests link
#   release-arm64  the release flavour for arm64 (release/bundle)
#
# `make test` runs the race flavour in the foreground before the tests (one
# go command per module compiles each package once, where the unit tests and
# the e2e suites started together would each compile the shared ones), then
# the arm64 one (release/bundle's test, last in the unit lane, would
# otherwise compile it at the lowest priority beside the suites and end the
# run minutes after them); hack/warm.sh runs all three in the background at
# the lowest priority.
set -euo pipefail
cd "$(dirname "$0")/.."

MODULES=(shared logging configfile issuer webhook sidecar release e2e)
BINARY_MODULES=(issuer webhook sidecar)

release() {
  local arch="$1" m
  for m in "${BINARY_MODULES[@]}"; do
    (cd "$m" && GOWORK=off CGO_ENABLED=0 GOOS=linux GOARCH="$arch" go build -trimpath -o /dev/null ./...)
  done
}

race() {
  local m pkgs
  for m in "${MODULES[@]}"; do
    pkgs="$(cd "$m" && go list -deps -test -f '{{if and (not .ForTest) (ne .Name "main") .GoFiles}}{{.ImportPath}}{{end}}' ./... | grep -v '\.test$')"
    # shellcheck disable=SC2086 # one word per package
    (cd "$m" && go build -race $pkgs)
  done
}

case "${1:-}" in
  release-amd64) release amd64 ;;
  release-arm64) release arm64 ;;
  race) race ;;
  *) echo "usage: $0 release-amd64|race|release-arm64" >&2; exit 2 ;;
esac
