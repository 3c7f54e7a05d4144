#!/usr/bin/env bash
# lanes.sh runs the e2e suites for make test-integration: two lanes at once,
# then the suites that must run alone.
#
#   node  the suites that run a real node (containerd + kubelet), one at a
#         time: two kubelets on one machine would fight over the same
#         cgroups; without go test's vet (see vet_node below);
#   api   every other package with tests, one at a time: each suite starts
#         its own API server(s), issuers, Vault or nginx and needs no node;
#         then go test's vet of the node lane's packages;
#   tools beside them, at nice 10: the pinned tools only late suites need
#         (SeaweedFS for othercluster, the GCS and Azure emulators for
#         cloudpublish, last in the api lane; make test does not build them
#         first). A suite that asks for one still being built
#         waits for the toolchain's lock (controlplane.Binary);
#   solo  after the lanes, alone: the load tests (scale), whose short
#         version drives the API server to what 2 cores give and whose
#         invariants (API calls per exchange, refusal and recovery bounds)
#         do not hold beside another suite's load (measured: mode
#         tokenreview beside the soak met APF rejections and 429s).
#
# The node suites spend most of their time waiting for Pods, rollouts and
# faults (a fifth to a half of two cores busy, measured per suite), which is
# where the api lane runs. Each lane picks its loopback ports from a range of
# its own (KUBE_STS_E2E_PORTS), so a port handed out in one lane and not yet
# bound is never picked by the other. hack/together.sh runs the two lanes,
# prefixes every output line with its lane and fails when either fails; the
# solo suites run whatever the lanes did, and the script fails when anything
# failed.
#
#   lanes.sh [go test flags...]     run everything
#   lanes.sh --list node|api|solo   print a lane's packages
set -euo pipefail

cd "$(dirname "$0")/.."

SOLO=(./scale)
# Built in the tools lane; the api lane runs the suites that need them last
# (othercluster: weed; cloudpublish: azurite, fake-gcs-server), in this
# order, so each finds its tools built.
LATE_TOOLS=(azurite weed fake-gcs-server)
LAST=(./othercluster ./cloudpublish)

# A package with tests is in the node lane when its test binary links the
# node harness (e2e/internal/node, directly or through another harness
# package), else in the api lane; the SOLO packages are in neither. Printed
# as ./dir, in go list's order.
lane() {
  local want="$1" module
  module="$(awk '$1 == "module" {print $2}' go.mod)"
  go list -test -f '{{if not .ForTest}}{{.ImportPath}} {{join .Deps " "}}{{end}}' ./... |
    awk -v want="$want" -v node="$module/internal/node" -v module="$module" -v solo="${SOLO[*]}" '
      BEGIN { n = split(solo, s, " "); for (i = 1; i <= n; i++) is_solo[s[i]] = 1 }
      $1 ~ /\.test$/ {
        dir = substr($1, length(module) + 2)
        sub(/\.test$/, "", dir)
        dir = "./" dir
        is_node = 0
        for (i = 2; i <= NF; i++) if ($i == node) is_node = 1
        kind = is_solo[dir] ? "solo" : (is_node ? "node" : "api")
        if (kind == want) print dir
      }'
}

if [ "${1:-}" = --list ]; then
  case "${2:-}" in
    node | api | solo) lane "$2" ;;
    *) echo "usage: $0 --list node|api|solo" >&2; exit 2 ;;
  esac
  exit 0
fi

mapfile -t node < <(lane node)
mapfile -t api < <(lane api)
# The LAST suites at the end of the api lane, so that the late tools have
# the longest time to build.
for last in "${LAST[@]}"; do
  found=false
  for i in "${!api[@]}"; do
    if [ "${api[$i]}" = "$last" ]; then unset 'api[i]'; found=true; fi
  done
  $found || { echo "lanes.sh: $last (LAST) is not in the api lane" >&2; exit 1; }
  api+=("$last")
done
api=("${api[@]}")
mapfile -t solo < <(lane solo)
if [ "${#node[@]}" -eq 0 ] || [ "${#api[@]}" -eq 0 ] || [ "${#solo[@]}" -ne "${#SOLO[@]}" ]; then
  echo "lanes.sh: found node: ${node[*]}; api: ${api[*]}; solo: ${solo[*]} (want ${SOLO[*]})" >&2
  exit 1
fi

# go test's flags, quoted for the command lines below.
flags="$(printf '%q ' "$@")"
# go test vets what it tests, and to vet a package it first computes the
# analyzers' facts for all its dependencies: about 900 packages here, 53 s of
# two idle cores before the first suite's binary links (6 s). Both lanes
# starting with that at once, beside the unit tests, kept the first node
# suite waiting 3 minutes. So the node lane runs with -vet=off, and the api
# lane, whose first suite computes those facts anyway, vets the node lane's
# packages after its own suites with go test's own vet (go test -c, the same
# analyzers, the facts already cached): every package is still vetted, once.
vet_node=""
for p in "${node[@]}"; do
  vet_node+=" && go test -race -c -o /dev/null $p"
done
rc=0
bash ../hack/together.sh \
  "node=KUBE_STS_E2E_PORTS=20000-26000 go test -race -vet=off -count=1 -v -p 1 $flags${node[*]}" \
  "api=KUBE_STS_E2E_PORTS=26000-32000 go test -race -count=1 -v -p 1 $flags${api[*]}$vet_node" \
  "tools:10=bash hack/toolchain.sh ${LATE_TOOLS[*]}" || rc=$?
bash ../hack/together.sh "solo=go test -race -count=1 -v -p 1 $flags${solo[*]}" || rc=$?
exit "$rc"
