#!/usr/bin/env bash
# warm.sh fills the caches a cold `make test` (or `make demo`) reads, in the
# background, while the foreground builds and tests:
#
#   hack/warm.sh [--fetch-only] TOOLCHAIN_TARGET...
#
# 1. Downloads (network, little CPU): the Go modules of the toolchain targets'
#    builds (e2e/hack/toolchain.sh --fetch), then of every module of the
#    workspace, on their own and together. The foreground builds the toolchain
#    one piece after another; each piece's modules are then already here.
#    As root, Debian's packages the node suites will install (download only).
# 2. Unless --fetch-only, compiles (hack/compile.sh) the three flavours of our
#    own code the tests build, in the order they are needed: the release flavour for amd64
#    (static, trimmed, GOWORK=off: `make build-standalone`, the e2e suites'
#    binaries and the release images), the -race flavour of the workspace with
#    its test dependencies (the unit and e2e tests), and the release flavour
#    for arm64 (release/bundle).
#
# The downloads run at the normal priority, the compiles at the lowest (below),
# so these use what the foreground leaves idle (link steps, tests that wait);
# what they have compiled, the foreground finds in the Go build cache.
#
# Nothing here is needed for correctness: a failure is logged and ignored, as
# the foreground builds whatever is missing itself. The Makefile starts it in
# its own process group and stops it when the foreground ends.
set -uo pipefail
cd "$(dirname "$0")/.."

fetch_only=false
targets=()
for a in "$@"; do
  case "$a" in
    --fetch-only) fetch_only=true ;;
    *) targets+=("$a") ;;
  esac
done

MODULES=(shared logging configfile issuer webhook sidecar release e2e)

step() { printf '[warm] %s %s\n' "$(date +%T)" "$*"; }

step "start: toolchain ${targets[*]:-none}"
if [ "${#targets[@]}" -gt 0 ]; then
  bash e2e/hack/toolchain.sh --fetch "${targets[@]}" || step "toolchain fetch failed (ignored)"
fi
for m in "${MODULES[@]}"; do
  (cd "$m" && GOWORK=off go mod download) || step "go mod download in $m failed (ignored)"
done
go mod download || step "go mod download in the workspace failed (ignored)"
# Debian's packages the node suites and othercluster install when missing
# (e2e/internal/node.EnsurePackages, e2e/internal/nginx.Ensure): downloaded
# into apt's cache only, so that their install later unpacks and does not
# wait on the network (about half a minute of the first node suite from a
# fresh machine). Nothing is installed here.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  debs=()
  for pair in containerd:containerd runc:runc busybox:busybox-static; do
    command -v "${pair%%:*}" >/dev/null || debs+=("${pair#*:}")
  done
  [ -e /usr/lib/cni/loopback ] || debs+=(containernetworking-plugins)
  nginx=false
  command -v nginx >/dev/null || nginx=true
  if [ "${#debs[@]}" -gt 0 ] || $nginx; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null 2>&1 || step "apt-get update failed (ignored)"
    if [ "${#debs[@]}" -gt 0 ]; then
      apt-get install -y -qq --download-only "${debs[@]}" >/dev/null 2>&1 || step "downloading ${debs[*]} failed (ignored)"
    fi
    if $nginx; then
      apt-get install -y -qq --download-only --no-install-recommends nginx >/dev/null 2>&1 || step "downloading nginx failed (ignored)"
    fi
  fi
fi
step "downloads done"
$fetch_only && exit 0

# The compiles are speculative: the lowest CPU priority, so they take only
# what the foreground leaves idle. (The downloads above ran at the normal
# one: their CPU, unzipping and hashing, is work the foreground would do
# anyway, and starving it would make the downloads trail the foreground.)
# With the kernel's autogroup scheduling (sched_autogroup_enabled), nice only
# ranks processes within one session's group, and the Makefile starts this in
# a session of its own (setsid, so that it can stop the whole tree): the
# group's own nice value is what ranks it against the foreground's session.
# Set it only when this script leads its session, never the caller's.
renice -n 19 -p $$ >/dev/null 2>&1 || true
if [ -w /proc/self/autogroup ] && [ "$(ps -o sid= -p $$ | tr -d ' ')" = "$$" ]; then
  echo 19 > /proc/self/autogroup 2>/dev/null || true
fi

for flavour in release-amd64 race release-arm64; do
  if bash hack/compile.sh "$flavour"; then
    step "$flavour flavour compiled"
  else
    step "compiling the $flavour flavour failed (ignored)"
  fi
done
