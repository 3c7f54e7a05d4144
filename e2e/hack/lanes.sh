#!/usr/bin/env bash
# lanes.sh runs the e2e suites in two lanes at once (make test-integration):
#
#   node  the suites that run a real node (containerd + kubelet), one at a
#         time: two kubelets on one machine would fight over the same
#         cgroups;
#   api   every other package with tests, one at a time: each suite starts
#         its own API server(s), issuers, Vault or nginx and needs no node.
#
# The node suites spend most of their time waiting for Pods, rollouts and
# faults (a third of two cores busy, measured), which is where the api lane
# runs. Each lane picks its loopback ports from a range of its own
# (KUBE_STS_E2E_PORTS), so a port handed out in one lane and not yet bound
# is never picked by the other. hack/together.sh runs the two, prefixes every
# output line with its lane and fails when either lane fails.
#
#   lanes.sh [go test flags...]     run both lanes
#   lanes.sh --list node|api        print a lane's packages
set -euo pipefail

cd "$(dirname "$0")/.."

# A package with tests is in the node lane when its test binary links the
# node harness (e2e/internal/node, directly or through another harness
# package), else in the api lane. Printed as ./dir, in go list's order.
lane() {
  local want="$1" module
  module="$(awk '$1 == "module" {print $2}' go.mod)"
  go list -test -f '{{if not .ForTest}}{{.ImportPath}} {{join .Deps " "}}{{end}}' ./... |
    awk -v want="$want" -v node="$module/internal/node" -v module="$module" '
      $1 ~ /\.test$/ {
        is_node = 0
        for (i = 2; i <= NF; i++) if ($i == node) is_node = 1
        if ((want == "node") == is_node) {
          dir = substr($1, length(module) + 2)
          sub(/\.test$/, "", dir)
          print "./" dir
        }
      }'
}

if [ "${1:-}" = --list ]; then
  case "${2:-}" in
    node) lane node ;;
    api) lane api ;;
    *) echo "usage: $0 --list node|api" >&2; exit 2 ;;
  esac
  exit 0
fi

mapfile -t node < <(lane node)
mapfile -t api < <(lane api)
[ "${#node[@]}" -gt 0 ] && [ "${#api[@]}" -gt 0 ] || { echo "lanes.sh: found no suites (node: ${#node[@]}, api: ${#api[@]})" >&2; exit 1; }

# go test's flags, quoted for the command lines below.
flags="$(printf '%q ' "$@")"
exec bash ../hack/together.sh \
  "node=KUBE_STS_E2E_PORTS=20000-26000 go test -race -count=1 -v -p 1 $flags${node[*]}" \
  "api=KUBE_STS_E2E_PORTS=26000-32000 go test -race -count=1 -v -p 1 $flags${api[*]}"
