#!/usr/bin/env bash
# toolchain.sh builds the pinned third-party binaries the tests run for real
# (kube-apiserver, etcd, Vault, ...) from the Go module proxy and caches them.
#
#   e2e/hack/toolchain.sh [--print-dir] [--print-bin=NAME] [--fetch] TARGET...
#
# Targets: kube-apiserver etcd kubelet kube-scheduler kube-controller-manager
# vault vault-k8s helm kustomize actionlint weed fake-gcs-server azurite cyclonedx-gomod promcheck
# prometheus-operator-crds gateway-api-crds; all (= kube-apiserver etcd),
# node (= kubelet vault vault-k8s, what the end-to-end suite adds),
# deploy (= kube-scheduler kube-controller-manager helm kustomize actionlint
# promcheck prometheus-operator-crds gateway-api-crds, what the manifest checks and
# the in-cluster install add), release (= helm cyclonedx-gomod, what
# `make release-local` and its test need).
# Each binary lands in $KUBE_STS_CACHE/bin/<name>-<version>/<name> (default cache:
# $HOME/.cache/kube-sts). A target that is already there is not rebuilt.
# --fetch only downloads the modules the targets' builds will compile (into the
# Go module cache, in wrapper modules of their own under src/fetch), builds
# nothing and takes no lock: hack/warm.sh runs it in the background so that the
# downloads of later targets overlap the compiling of earlier ones.
#
# Why wrapper modules: `go install pkg@version` refuses modules whose go.mod has
# replace directives, and both Kubernetes and etcd have them. A throwaway module
# that requires the real one and repeats its replaces (pointing at published
# versions instead of in-tree folders) builds the same code.
set -euo pipefail

# Versions: the one place they are pinned. The Makefile and CI cache keys read them.
KUBERNETES_VERSION="${KUBERNETES_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
VAULT_VERSION="${VAULT_VERSION:-v1.21.0}"
VAULT_K8S_VERSION="${VAULT_K8S_VERSION:-v1.6.2}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.8.1}"
ACTIONLINT_VERSION="${ACTIONLINT_VERSION:-v1.7.12}"
# The SBOM generator of the release (release/bundle): CycloneDX from a Go binary's build information.
CYCLONEDX_GOMOD_VERSION="${CYCLONEDX_GOMOD_VERSION:-v1.10.0}"
# Prometheus's rule loader and PromQL parser check the chart's alerting rules
# and dashboard (e2e/hack/promcheck; Prometheus v3.x is module v0.3xx).
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"
# The Prometheus Operator's CRDs (ServiceMonitor, PrometheusRule) the chart's
# monitoring objects are dry-run against, from the module's example/ folder.
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.94.0}"
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.6.3}"
# SeaweedFS publishes no tagged Go module versions; this is its commit of
# 2026-11-09 (weed 4.53), the S3 server the publishing tests write to.
SEAWEEDFS_VERSION="${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
# Google Cloud Storage's emulator (its JSON API), the GCS publishing tests' server.
FAKE_GCS_SERVER_VERSION="${FAKE_GCS_SERVER_VERSION:-v1.56.1}"
# Azure Storage's emulator (Node.js, from npm), the Azure Blob publishing
# tests' server; 3.35.0 is the newest that runs on Node 20 (3.36 wants 21).
AZURITE_VERSION="${AZURITE_VERSION:-3.35.0}"

LDFLAGS_EXTRA=""
# Every binary is linked without debug information (-ldflags -w); compiling
# none either saves a tenth of the compile (etcd from an empty build cache:
# 88 s with, 79 s without, 2026-12-04). Stack traces do not need it.
NO_DWARF="-gcflags=all=-dwarf=false"
CACHE="${KUBE_STS_CACHE:-$HOME/.cache/kube-sts}"
BIN="$CACHE/bin"
SRC="$CACHE/src"

log() { printf '[toolchain] %s\n' "$*" >&2; }
die() { printf '[toolchain] error: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null || die "go is not on PATH; install Go 1.26 first"

# staging_version maps a Kubernetes version to its staging modules' version: v1.37.2 -> v0.37.2.
staging_version() { echo "v0.${1#v1.}"; }

# bindir NAME VERSION prints the cache directory of one binary.
bindir() { echo "$BIN/$1-$2"; }

# have NAME VERSION succeeds when the binary is cached and runs. A build
# takes the cache's lock first (one build at a time per cache: parallel runs
# wait instead of racing) and looks again, since the holder may have built
# it; a cached binary is answered without the lock, so that a suite asking
# for one never waits for a build of another (make test builds weed beside
# the suites).
LOCKED=false
have() {
  [ -x "$(bindir "$1" "$2")/$1" ] && return 0
  $FETCH && return 1
  if ! $LOCKED; then
    exec 9>"$CACHE/.toolchain.lock"
    flock 9
    LOCKED=true
  fi
  [ -x "$(bindir "$1" "$2")/$1" ]
}

# wrapper DIR MODULE writes a fresh wrapper module into DIR.
wrapper() {
  local dir="$1" module="$2"
  rm -rf "$dir"
  mkdir -p "$dir"
  (cd "$dir" && go mod init "$module" >/dev/null 2>&1 && go mod edit -go=1.26)
}

# install_bin NAME VERSION BUILT moves a built binary into the cache atomically,
# so an interrupted build never leaves a half-written binary behind.
install_bin() {
  local name="$1" version="$2" built="$3" dest
  dest="$(bindir "$name" "$version")"
  mkdir -p "$dest"
  mv -f "$built" "$dest/.$name.tmp"
  mv -f "$dest/.$name.tmp" "$dest/$name"
  log "$name $version ready: $dest/$name"
}

# kube_wrapper prints the wrapper module the Kubernetes components build in,
# writing it first when needed.
kube_wrapper() {
  local v="$KUBERNETES_VERSION" sv dir gomod
  sv="$(staging_version "$v")"
  dir="$WORK/kubernetes-$v"
  if [ ! -f "$dir/.ready" ]; then
    wrapper "$dir" kube-sts.local/toolchain/kubernetes
    gomod="$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
    [ -f "$gomod" ] || die "cannot download k8s.io/kubernetes@$v"
    # Every staging module the release replaces with ./staging/src/... is pinned
    # to its published twin instead.
    local args=()
    while read -r mod; do
      args+=("-replace=$mod=$mod@$sv")
    done < <(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$gomod")
    [ "${#args[@]}" -gt 10 ] || die "found no staging replaces in $gomod"
    (cd "$dir" && go mod edit "${args[@]}" -require="k8s.io/kubernetes@$v") >&2
    touch "$dir/.ready"
  fi
  echo "$dir"
}

# kube_component NAME builds k8s.io/kubernetes/cmd/NAME at $KUBERNETES_VERSION.
kube_component() {
  local name="$1" v="$KUBERNETES_VERSION" dir minor
  have "$name" "$v" && { log "$name $v cached"; return; }
  if $FETCH; then log "fetching the modules of $name $v"; else log "building $name $v from the Go module proxy (several minutes on 2 cores)"; fi
  dir="$(kube_wrapper)"
  minor="${v#v1.}"; minor="${minor%%.*}"
  (cd "$dir" && GOFLAGS=-mod=mod go get "k8s.io/kubernetes/cmd/$name@$v" >/dev/null 2>&1 || true)
  if $FETCH; then fetch_deps "$dir" "k8s.io/kubernetes/cmd/$name"; return; fi
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath $NO_DWARF -o "$dir/$name" \
    -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=$v \
      -X k8s.io/component-base/version.gitMajor=1 \
      -X k8s.io/component-base/version.gitMinor=$minor \
      -X k8s.io/component-base/version.gitTreeState=clean \
      -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z" \
    "k8s.io/kubernetes/cmd/$name") || die "build of $name $v failed"
  install_bin "$name" "$v" "$dir/$name"
}

# fetch_deps DIR PKG downloads the modules that building PKG in the wrapper
# module DIR needs, with the build's own settings (tags, CGO_ENABLED=0), so
# exactly what the build will read and no more.
fetch_deps() {
  (cd "$1" && CGO_ENABLED=0 GOFLAGS=-mod=mod go list -deps -tags "${BUILD_TAGS:-}" "$2" >/dev/null) \
    || log "fetching the modules of $2 failed (the build will try again)"
}

# align DIR MODULE raises, in the wrapper module DIR, every module it shares
# with the Kubernetes components' build to at least the version Kubernetes
# selects (go mod edit -require; the module graph keeps whichever is newer),
# except MODULE itself and what DIR replaces. A package whose module versions
# all match is then found in the Go build cache instead of compiled again:
# helm, Vault and vault-k8s compile client-go, k8s.io/api, gRPC, protobuf
# and golang.org/x/... at the same versions as the Kubernetes components
# (built first). From a build cache holding only the Kubernetes components,
# helm compiled 163 packages instead of about 960; Vault 474 of about 1,650
# (2026-12-04). What changes in those binaries: newer patch and minor
# versions of shared libraries, as Go's minimal version selection would pick
# for a program importing both; their own code is the pinned release. The
# list of Kubernetes' modules is computed once per version (modules.txt
# beside its wrapper module).
align() {
  local dir="$1" self="$2" kdir list args
  kdir="$(kube_wrapper)"
  list="$kdir/modules.txt"
  if [ ! -s "$list" ]; then
    (cd "$kdir" && GOFLAGS=-mod=mod go list -m -f '{{if not .Main}}{{.Path}} {{with .Replace}}{{.Version}}{{else}}{{.Version}}{{end}}{{end}}' all) \
      | awk 'NF == 2' | sort >"$list.tmp" || { log "listing the modules of Kubernetes failed (not aligning)"; return 0; }
    mv -f "$list.tmp" "$list"
  fi
  args="$(cd "$dir" && join "$list" <(GOFLAGS=-mod=mod go list -m -f '{{if not .Main}}{{if not .Replace}}{{.Path}}{{end}}{{end}}' all | sort) \
    | awk -v self="$self" '$1 != self && $1 != "k8s.io/kubernetes" {printf "-require=%s@%s\n", $1, $2}')" \
    || { log "listing the modules of $self failed (not aligning)"; return 0; }
  [ -n "$args" ] || return 0
  # shellcheck disable=SC2086 # one argument per line
  (cd "$dir" && go mod edit $args)
}

# module_build NAME VERSION MODULE[//SUBPKG] [go mod edit args...] builds the
# main package at the root of MODULE@VERSION (or at SUBPKG inside it) through a
# wrapper module; the extra args repeat the module's own replace directives
# (pinned to published versions).
# BUILD_TAGS, when set, are go build tags; the cached binary's version then
# carries them (e.g. vault v1.21.0-minimal), so a change of tags rebuilds.
module_build() {
  local name="$1" v="$2" module="${3%%//*}" pkg="${3/\/\//\/}" dir key
  shift 3
  key="$v${BUILD_TAGS:+-${BUILD_TAGS// /-}}"
  have "$name" "$key" && { log "$name $key cached"; return; }
  dir="$WORK/$name-$v"
  if $FETCH; then log "fetching the modules of $name $key"; else log "building $name $key from the Go module proxy"; fi
  wrapper "$dir" "kube-sts.local/toolchain/$name"
  (cd "$dir" && go mod edit -require="$module@$v" "$@")
  (cd "$dir" && GOFLAGS=-mod=mod go get "$module@$v" >/dev/null 2>&1 || true)
  ${ALIGN:-true} && align "$dir" "$module"
  if $FETCH; then fetch_deps "$dir" "$pkg"; return; fi
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath $NO_DWARF -tags "${BUILD_TAGS:-}" -ldflags "-s -w $LDFLAGS_EXTRA" -o "$dir/$name" "$pkg") \
    || die "build of $name $key failed"
  install_bin "$name" "$key" "$dir/$name"
}

etcd() {
  local v="$ETCD_VERSION"
  # The server module's main package is the etcd binary. Not aligned: the
  # Kubernetes components select etcd's own modules (raft among them) at
  # another release.
  ALIGN=false module_build etcd "$v" go.etcd.io/etcd/server/v3 \
    -replace="go.etcd.io/etcd/api/v3=go.etcd.io/etcd/api/v3@$v" \
    -replace="go.etcd.io/etcd/client/pkg/v3=go.etcd.io/etcd/client/pkg/v3@$v" \
    -replace="go.etcd.io/etcd/client/v3=go.etcd.io/etcd/client/v3@$v" \
    -replace="go.etcd.io/etcd/pkg/v3=go.etcd.io/etcd/pkg/v3@$v"
}

# Vault is built with its own `minimal` tag (its Makefile's BUILD_MINIMAL):
# the core, the token, userpass, approle, cert and JWT/OIDC auth methods, the
# KV, PKI, SSH and transit engines, and file/inmem/raft storage; no cloud
# auth methods, database plugins or cloud storage backends. That is all the
# tests use (dev server, JWT auth, KV v2, the agent with JWT auto-auth), and
# it builds in 7 minutes instead of 16 on 2 cores (139 MB instead of 361).
VAULT_TAGS=minimal
vault() {
  # Vault's own go.mod has two third-party replaces; without them its
  # dependency graph does not resolve.
  BUILD_TAGS="$VAULT_TAGS" module_build vault "$VAULT_VERSION" github.com/hashicorp/vault \
    -replace="github.com/99designs/keyring=github.com/Jeffail/keyring@v1.2.3" \
    -replace="github.com/ma314smith/signedxml@v1.1.1=github.com/moov-io/signedxml@v1.1.1"
}

# weed is SeaweedFS in one binary; the tests run its S3 gateway (weed mini).
# Its go.mod has one third-party replace.
weed() {
  module_build weed "$SEAWEEDFS_VERSION" github.com/seaweedfs/seaweedfs//weed \
    -replace="github.com/tyler-smith/go-bip39=github.com/cosmos/go-bip39@v1.0.0"
}

fake_gcs_server() { module_build fake-gcs-server "$FAKE_GCS_SERVER_VERSION" github.com/fsouza/fake-gcs-server; }

# azurite is not Go: npm installs it (node and npm from Debian's packages
# when missing, as root) into the cache, and a launcher script named azurite
# runs its Blob service.
azurite() {
  local name=azurite v="$AZURITE_VERSION" dir
  have "$name" "$v" && { log "$name $v cached"; return; }
  $FETCH && return # npm downloads while it installs
  if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || die "azurite needs node and npm on PATH"
    log "installing node and npm from Debian's packages"
    (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq nodejs npm) >&2 || die "apt-get install nodejs npm failed"
  fi
  dir="$(bindir "$name" "$v")"
  log "installing azurite $v from npm"
  rm -rf "$dir" && mkdir -p "$dir"
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "azurite@$v" >&2 || die "npm install azurite@$v failed"
  [ -f "$dir/node_modules/azurite/dist/src/blob/main.js" ] || die "azurite@$v has no dist/src/blob/main.js"
  printf '#!/bin/sh\n# Azurite %s: the Blob service.\nexec node "%s/node_modules/azurite/dist/src/blob/main.js" "$@"\n' "$v" "$dir" >"$dir/.$name.tmp"
  chmod +x "$dir/.$name.tmp"
  mv -f "$dir/.$name.tmp" "$dir/$name"
  log "$name $v ready: $dir/$name"
}

# vault-k8s is Vault's agent injector.
vault_k8s() { module_build vault-k8s "$VAULT_K8S_VERSION" github.com/hashicorp/vault-k8s; }

# helm, kustomize and actionlint render and check what manifests/ ships.
helm() {
  # The Kubernetes version helm assumes without a cluster (helm template),
  # as helm's own Makefile stamps it from its client-go: 1.37 for v3.22.
  LDFLAGS_EXTRA="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37 \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37" \
    module_build helm "$HELM_VERSION" helm.sh/helm/v3//cmd/helm
}
kustomize() { module_build kustomize "$KUSTOMIZE_VERSION" sigs.k8s.io/kustomize/kustomize/v5; }
# module_files NAME VERSION MODULE DIR copies the YAML files in DIR of the
# module MODULE@VERSION (downloaded from the module proxy) into the cache as
# NAME: CRDs the tests apply, from the project that ships them.
module_files() {
  local name="$1" v="$2" module="$3" sub="$4" mod dest
  have "$name" "$v" && { log "$name $v cached"; return; }
  $FETCH && return # one small download, done by the build itself
  mod="$(cd "$SRC" && GOFLAGS=-mod=mod go mod download -json "$module@$v" \
    | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
  [ -d "$mod/$sub" ] || die "no $sub in $module@$v"
  dest="$(bindir "$name" "$v")"
  rm -rf "$dest" && mkdir -p "$dest/.tmp"
  cp "$mod/$sub/"*.yaml "$dest/.tmp/"
  mv "$dest/.tmp" "$dest/$name"
  log "$name $v ready: $dest/$name"
}
# prometheus-operator-crds is a folder, not a binary: the CRDs as the
# Prometheus Operator's module ships them.
prometheus_operator_crds() {
  module_files prometheus-operator-crds "$PROMETHEUS_OPERATOR_VERSION" github.com/prometheus-operator/prometheus-operator example/prometheus-operator-crd
}

# promcheck (e2e/hack/promcheck) checks rules files and lists the metrics
# PromQL expressions select, with the pinned Prometheus's own rule loader and
# parser, in a module of its own.
promcheck() {
  local name=promcheck v="$PROMETHEUS_VERSION" dir src
  src="$(cd "$(dirname "$0")" && pwd)/promcheck/main.go"
  # The cache key includes the source's hash: an edit rebuilds it.
  v="$v-$(sha256sum "$src" | cut -c1-12)"
  have "$name" "$v" && { log "$name $v cached"; return; }
  dir="$WORK/$name-$v"
  if $FETCH; then log "fetching the modules of $name $v"; else log "building $name $v"; fi
  wrapper "$dir" "kube-sts.local/toolchain/$name"
  cp "$src" "$dir/main.go"
  (cd "$dir" && go mod edit -require="github.com/prometheus/prometheus@$PROMETHEUS_VERSION" \
    && GOFLAGS=-mod=mod go get "github.com/prometheus/prometheus@$PROMETHEUS_VERSION" >/dev/null 2>&1 || true)
  align "$dir" github.com/prometheus/prometheus
  if $FETCH; then fetch_deps "$dir" .; return; fi
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath $NO_DWARF -ldflags "-s -w" -o "$dir/$name" .) \
    || die "build of $name failed"
  install_bin "$name" "$v" "$dir/$name"
}
# The Gateway API's standard-channel CRDs (HTTPRoute, BackendTLSPolicy, ...),
# as its module ships them: the chart's HTTPRoute is dry-run against them.
gateway_api_crds() {
  module_files gateway-api-crds "$GATEWAY_API_VERSION" sigs.k8s.io/gateway-api config/crd/standard
}
cyclonedx_gomod() { module_build cyclonedx-gomod "$CYCLONEDX_GOMOD_VERSION" github.com/CycloneDX/cyclonedx-gomod//cmd/cyclonedx-gomod; }
actionlint() {
  LDFLAGS_EXTRA="-X main.version=$ACTIONLINT_VERSION" \
    module_build actionlint "$ACTIONLINT_VERSION" github.com/rhysd/actionlint//cmd/actionlint
}

version_of() {
  case "$1" in
    kube-apiserver|kubelet|kube-scheduler|kube-controller-manager) echo "$KUBERNETES_VERSION" ;;
    etcd) echo "$ETCD_VERSION" ;;
    vault) echo "$VAULT_VERSION-$VAULT_TAGS" ;;
    vault-k8s) echo "$VAULT_K8S_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
    kustomize) echo "$KUSTOMIZE_VERSION" ;;
    actionlint) echo "$ACTIONLINT_VERSION" ;;
    weed) echo "$SEAWEEDFS_VERSION" ;;
    fake-gcs-server) echo "$FAKE_GCS_SERVER_VERSION" ;;
    azurite) echo "$AZURITE_VERSION" ;;
    cyclonedx-gomod) echo "$CYCLONEDX_GOMOD_VERSION" ;;
    prometheus-operator-crds) echo "$PROMETHEUS_OPERATOR_VERSION" ;;
    gateway-api-crds) echo "$GATEWAY_API_VERSION" ;;
    promcheck) echo "$PROMETHEUS_VERSION-$(sha256sum "$(cd "$(dirname "$0")" && pwd)/promcheck/main.go" | cut -c1-12)" ;;
    *) die "unknown binary '$1'" ;;
  esac
}

print_dir=false
print_bin=""
FETCH=false
targets=()
for a in "$@"; do
  case "$a" in
    --print-dir) print_dir=true ;;
    --fetch) FETCH=true ;;
    --print-bin=*) print_bin="${a#--print-bin=}"; targets+=("$print_bin") ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) targets+=("$a") ;;
  esac
done
[ "${#targets[@]}" -gt 0 ] || targets=(all)

mkdir -p "$BIN" "$SRC"
# Where the wrapper modules live: src/ for builds, src/fetch/ for --fetch, so
# a fetch running beside a build never edits the build's go.mod.
WORK="$SRC"
if $FETCH; then
  WORK="$SRC/fetch"
  mkdir -p "$WORK"
fi

for t in "${targets[@]}"; do
  case "$t" in
    all) kube_component kube-apiserver; etcd ;;
    kube-apiserver) kube_component kube-apiserver ;;
    etcd) etcd ;;
    kubelet|kube-scheduler|kube-controller-manager) kube_component "$t" ;;
    vault) vault ;;
    vault-k8s) vault_k8s ;;
    helm) helm ;;
    kustomize) kustomize ;;
    actionlint) actionlint ;;
    weed) weed ;;
    fake-gcs-server) fake_gcs_server ;;
    azurite) azurite ;;
    cyclonedx-gomod) cyclonedx_gomod ;;
    promcheck) promcheck ;;
    prometheus-operator-crds) prometheus_operator_crds ;;
    gateway-api-crds) gateway_api_crds ;;
    release) helm; cyclonedx_gomod ;;
    node) kube_component kubelet; vault; vault_k8s ;;
    deploy) kube_component kube-scheduler; kube_component kube-controller-manager; helm; kustomize; actionlint; promcheck; prometheus_operator_crds; gateway_api_crds ;;
    versions) echo "KUBERNETES_VERSION=$KUBERNETES_VERSION ETCD_VERSION=$ETCD_VERSION VAULT_VERSION=$VAULT_VERSION VAULT_K8S_VERSION=$VAULT_K8S_VERSION HELM_VERSION=$HELM_VERSION KUSTOMIZE_VERSION=$KUSTOMIZE_VERSION ACTIONLINT_VERSION=$ACTIONLINT_VERSION SEAWEEDFS_VERSION=$SEAWEEDFS_VERSION FAKE_GCS_SERVER_VERSION=$FAKE_GCS_SERVER_VERSION AZURITE_VERSION=$AZURITE_VERSION CYCLONEDX_GOMOD_VERSION=$CYCLONEDX_GOMOD_VERSION PROMETHEUS_VERSION=$PROMETHEUS_VERSION PROMETHEUS_OPERATOR_VERSION=$PROMETHEUS_OPERATOR_VERSION GATEWAY_API_VERSION=$GATEWAY_API_VERSION" ;;
    *) die "unknown target '$t' (known: all node deploy kube-apiserver etcd kubelet kube-scheduler kube-controller-manager vault vault-k8s helm kustomize actionlint weed fake-gcs-server azurite cyclonedx-gomod promcheck prometheus-operator-crds gateway-api-crds release versions)" ;;
  esac
done

# --print-bin=NAME builds NAME when needed and prints its path.
if [ -n "$print_bin" ]; then
  echo "$(bindir "$print_bin" "$(version_of "$print_bin")")/$print_bin"
fi

# --print-dir prints the directory envtest reads (KUBEBUILDER_ASSETS): the
# control-plane binaries side by side.
if $print_dir; then
  assets="$BIN/envtest-$KUBERNETES_VERSION-etcd-$ETCD_VERSION"
  mkdir -p "$assets"
  ln -sf "$(bindir kube-apiserver "$KUBERNETES_VERSION")/kube-apiserver" "$assets/kube-apiserver"
  ln -sf "$(bindir etcd "$ETCD_VERSION")/etcd" "$assets/etcd"
  echo "$assets"
fi
