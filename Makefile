# kube-sts — run `make help` for the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Modules of the workspace; BINARY_MODULES each build one binary and must build
# on their own (GOWORK=off), as images are built per module.
MODULES        := shared logging configfile issuer webhook sidecar release e2e
BINARY_MODULES := issuer webhook sidecar
UNIT_MODULES   := shared logging configfile issuer webhook sidecar release

export KUBE_STS_CACHE ?= $(HOME)/.cache/kube-sts
TOOLCHAIN      := e2e/hack/toolchain.sh
# Lint tools, pinned here and installed from the Go module proxy into the cache.
STATICCHECK_VERSION := v0.8.2
STATICCHECK    := $(KUBE_STS_CACHE)/bin/staticcheck-$(STATICCHECK_VERSION)/staticcheck

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Images: <IMAGE_PREFIX>/<binary>:<VERSION>. `make images` builds them with
# docker buildx for PLATFORMS and hands them to IMAGE_OUTPUT (default: one OCI
# archive per image in dist/images; type=registry pushes, type=docker loads a
# single-platform build into the local engine).
IMAGE_PREFIX ?= kube-sts
PLATFORMS    ?= linux/amd64,linux/arm64
IMAGE_OUTPUT ?=
IMAGES       := issuer:sts-issuer webhook:sts-webhook sidecar:sts-creds-sidecar
# The commit and its time (not the build's: builds stay reproducible), for
# --version and the *_build_info metrics.
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
DATE   ?= $(shell git log -1 --format=%cI 2>/dev/null)
BUILDINFO := github.com/kube-sts/kube-sts/shared/buildinfo
LDFLAGS := -s -w -X $(BUILDINFO).Version=$(VERSION) -X $(BUILDINFO).Commit=$(COMMIT) -X $(BUILDINFO).Date=$(DATE)
GO_TEST_FLAGS ?=

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "; printf "Usage: make <target>\n\n"} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build sts-issuer, sts-webhook and sts-creds-sidecar (static) into bin/.
	@mkdir -p bin
	cd issuer  && CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o ../bin/sts-issuer ./cmd/sts-issuer
	cd webhook && CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o ../bin/sts-webhook ./cmd/sts-webhook
	cd sidecar && CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o ../bin/sts-creds-sidecar ./cmd/sts-creds-sidecar

.PHONY: build-standalone
# With the release's flags (static, trimmed: release/images goBuild), so the
# release images and the e2e suites' binaries reuse what this compiles.
build-standalone: ## Check that every binary module builds on its own (GOWORK=off, static, as the release builds it).
	@for m in $(BINARY_MODULES); do echo "GOWORK=off CGO_ENABLED=0 go build -trimpath ./... in $$m"; (cd $$m && GOWORK=off CGO_ENABLED=0 go build -trimpath -o /dev/null ./...); done

.PHONY: toolchain
toolchain: ## Build the pinned kube-apiserver and etcd into $(KUBE_STS_CACHE) (cached).
	bash $(TOOLCHAIN) all

.PHONY: toolchain-node
toolchain-node: ## Build the pinned kubelet, Vault and vault-k8s (cached) for the node suite.
	bash $(TOOLCHAIN) node

.PHONY: toolchain-deploy
toolchain-deploy: ## Build the pinned kube-scheduler, kube-controller-manager, helm, kustomize, actionlint and promcheck (Prometheus's rule loader), and fetch the Prometheus Operator's and the Gateway API's CRDs (cached).
	bash $(TOOLCHAIN) deploy

.PHONY: toolchain-publish
toolchain-publish: ## Build the pinned SeaweedFS (weed) and fake-gcs-server, install Azurite from npm (cached): the S3, GCS and Azure Blob servers the publishing tests write to.
	bash $(TOOLCHAIN) weed fake-gcs-server azurite

.PHONY: toolchain-release
toolchain-release: ## Build the pinned helm and cyclonedx-gomod (cached): what `make release-local` and its test need.
	bash $(TOOLCHAIN) release

# What the tests run before any suite starts (staticcheck is the linters'
# alone). SeaweedFS, which only e2e/othercluster runs, is built beside the
# suites instead (e2e/hack/lanes.sh: its "tools" lane), in the CPU the node
# suites leave idle: 5 minutes of two busy cores off a cold `make test`.
TEST_TOOLS := toolchain toolchain-node toolchain-deploy toolchain-release

.PHONY: tools
tools: $(TEST_TOOLS) toolchain-publish $(STATICCHECK) ## Install everything the tests and linters need (cached).

$(STATICCHECK):
	@echo "installing staticcheck $(STATICCHECK_VERSION)"
	GOBIN=$(dir $(STATICCHECK)) GOWORK=off go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

.PHONY: demo
demo: ## The reference scenario narrated on a local node with real Vault (first run builds kubelet and Vault).
	$(call with_warm,--fetch-only all node,$(MAKE) --no-print-directory toolchain toolchain-node \
	  && cd e2e && KUBEBUILDER_ASSETS="$$(bash hack/toolchain.sh --print-dir all)" KUBE_STS_REQUIRE_CONTROLPLANE=1 \
		go test -tags demo -run TestDemo -count=1 -v -timeout 30m ./demo/)

# `make test` starts hack/warm.sh in the background (its own process group,
# stopped when the foreground ends; log in dist/warm.log): it downloads every
# module the toolchain and the workspace need while the foreground compiles,
# and compiles our code's three flavours at the lowest priority with the cores
# the foreground leaves idle. WARM=0 runs without it.
#
# After the toolchain, the foreground compiles the -race flavour once and the
# release flavour for arm64 (test-compile), then runs the e2e suites (two lanes, test-integration) and
# the unit tests together (hack/together.sh): the suites mostly wait for
# Pods, rollouts and faults (a third of two cores busy), and the unit tests,
# at the lowest CPU priority, take what the suites leave idle without
# slowing what they time. The release module's unit tests run last in the
# unit lane (release/bundle builds the arm64 images: compiled before the
# lanes, since at the lowest priority beside the suites that compile took
# 5 of its 7 cold minutes and ended `make test` alone).
WARM ?= 1
WARM_TARGETS := all node deploy weed fake-gcs-server release
define with_warm
	@mkdir -p dist; warm=; \
	if [ "$(WARM)" = 1 ]; then setsid bash hack/warm.sh $(1) >dist/warm.log 2>&1 & warm=$$!; fi; \
	trap '[ -n "$$warm" ] && kill -- -$$warm 2>/dev/null || true' EXIT; \
	$(2)
endef

.PHONY: test
test: ## Run every test: unit (-race), the real API server and the manifests, a second API server and Vault trusting the issuer (directly, and through discovery published to nginx, SeaweedFS, and the GCS and Azure Blob emulators), the reference scenario (with the AWS SDK), the Helm chart, an upgrade from v0.1.0 and back, the short scale run, and a 3-minute soak on a real node (needs root).
	$(call with_warm,$(WARM_TARGETS),$(MAKE) --no-print-directory $(TEST_TOOLS) build-standalone test-compile \
	  && bash hack/together.sh "e2e=$(MAKE) --no-print-directory test-integration" "unit:19=$(MAKE) --no-print-directory test-unit" \
	  && $(MAKE) --no-print-directory testdata-check)

.PHONY: test-compile
test-compile: ## Compile the -race flavour of every module and of every package their tests import (what test-unit and test-integration link), and the arm64 release flavour (what release/bundle's test builds).
	bash hack/compile.sh race
	bash hack/compile.sh release-arm64

# A golden blessed by `go test -update` must be committed; a test run that
# leaves testdata/ changed fails, so CI can never bless a regression.
.PHONY: testdata-check
testdata-check: ## Fail when a test run changed or added files under testdata/ (goldens are committed, never rewritten by CI).
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  out=$$(git status --porcelain --untracked-files=all -- ':(glob)**/testdata/**'); \
	  if [ -n "$$out" ]; then echo "testdata/ differs from the commit (a golden rewritten by -update?):"; echo "$$out"; exit 1; fi; \
	fi

# Every module runs even when one fails (a failure is listed at the end).
# The release module cross-compiles the six images once (release/bundle's
# test); its packages run one at a time (-p 1) so that images' small test
# builds do not compete with it. From an empty build cache that took longer
# than go test's default 10-minute limit on this kind of machine, hence
# -timeout 30m.
.PHONY: test-unit
test-unit: ## Unit tests of every module, with -race (the release module builds the six release images, and a local release with SBOMs and the chart).
	@failed=; for m in $(UNIT_MODULES); do echo "== unit: $$m"; p=; [ $$m = release ] && p="-p 1"; \
	  (cd $$m && go test -race -count=1 -timeout 30m $$p $(GO_TEST_FLAGS) ./...) || failed="$$failed $$m"; done; \
	  if [ -n "$$failed" ]; then echo "== unit: failed in$$failed"; exit 1; fi

# Two lanes at once (e2e/hack/lanes.sh): the suites that run a real node one
# at a time (two kubelets on one machine would fight over the same cgroups),
# beside them the suites that need only API servers, one at a time; then the
# short scale run alone (a load test).
.PHONY: test-integration
test-integration: toolchain ## The e2e suites in two lanes (node suites | API-server suites, SeaweedFS and the GCS and Azure emulators built beside them), then the short scale run alone: real kube-apiserver + etcd (and a second one for othercluster); the manifests; a real node (containerd, kubelet) with Vault, the chart installed on it, the short soak.
	cd e2e && KUBEBUILDER_ASSETS="$$(bash hack/toolchain.sh --print-dir all)" KUBE_STS_REQUIRE_CONTROLPLANE=1 \
		bash hack/lanes.sh -timeout 30m $(GO_TEST_FLAGS)

# The soak (e2e/soak): the chart on the real node with faults for
# SOAK_DURATION; `make test` runs it for 3 minutes with 20 Pods.
SOAK_DURATION ?= 15m
SOAK_PODS     ?= 30
.PHONY: soak
soak: toolchain toolchain-node toolchain-deploy ## The long soak on the real node with faults (SOAK_DURATION=15m, SOAK_PODS=30): dist/soak/{timeline.svg,events.jsonl,summary.txt}.
	cd e2e && KUBEBUILDER_ASSETS="$$(bash hack/toolchain.sh --print-dir all)" KUBE_STS_REQUIRE_CONTROLPLANE=1 \
		SOAK_DURATION=$(SOAK_DURATION) SOAK_PODS=$(SOAK_PODS) SOAK_START_SAMPLES=40 go test -count=1 -v -timeout 90m -run TestSoak ./soak/

# The scale run (e2e/scale): SCALE_PODS Pods on the real API server, one
# sidecar refresh loop each in one load generator, two issuer replicas, both
# review modes; `make test` runs it with 2,000 Pods, 1-minute tokens, the
# outage only and review mode watch only.
SCALE_PODS   ?= 10000
SCALE_LOOPS  ?=
SCALE_TTL    ?= 1m
SCALE_STEADY ?= 60s
SCALE_FAULTS ?= outage,apiserver,replica
SCALE_MODES  ?= tokenreview,watch
.PHONY: scale
scale: toolchain ## Scale run on the real API server (SCALE_PODS=10000 [SCALE_LOOPS=SCALE_PODS], SCALE_TTL=1m, SCALE_FAULTS=outage,apiserver,replica, SCALE_MODES=tokenreview,watch): dist/scale/{summary.txt,results.json,<mode>.jsonl,<mode>.svg}.
	cd e2e && KUBEBUILDER_ASSETS="$$(bash hack/toolchain.sh --print-dir all)" KUBE_STS_REQUIRE_CONTROLPLANE=1 \
		SCALE_PODS=$(SCALE_PODS) SCALE_LOOPS=$(SCALE_LOOPS) SCALE_TTL=$(SCALE_TTL) SCALE_STEADY=$(SCALE_STEADY) SCALE_FAULTS=$(SCALE_FAULTS) SCALE_MODES=$(SCALE_MODES) \
		go test -count=1 -v -timeout 120m -run TestScale ./scale/

# The dependency rules of the Architecture section: shared uses only the
# standard library, the sidecar never links client-go (or any k8s.io
# module), no module imports the e2e module, and no product module imports
# the release tooling.
.PHONY: import-rules
import-rules: ## Fail when a module breaks the architecture's dependency rules.
	@bad=$$(cd shared && go list -deps -f '{{if not .Standard}}{{.ImportPath}}{{end}}' ./... | grep -v '^github.com/kube-sts/kube-sts/shared' || true); \
	  if [ -n "$$bad" ]; then echo "shared must use only the standard library; it imports:"; echo "$$bad"; exit 1; fi
	@bad=$$(cd sidecar && go list -deps ./... | grep '^k8s.io/' || true); \
	  if [ -n "$$bad" ]; then echo "the sidecar must not link Kubernetes client libraries; it imports:"; echo "$$bad"; exit 1; fi
	@for m in $(UNIT_MODULES); do \
	  bad=$$(cd $$m && go list -deps -test ./... | grep '^github.com/kube-sts/kube-sts/e2e' || true); \
	  if [ -n "$$bad" ]; then echo "$$m must not import the e2e module:"; echo "$$bad"; exit 1; fi; \
	done
	@for m in shared logging configfile $(BINARY_MODULES); do \
	  bad=$$(cd $$m && go list -deps -test ./... | grep '^github.com/kube-sts/kube-sts/release' || true); \
	  if [ -n "$$bad" ]; then echo "$$m must not import the release tooling:"; echo "$$bad"; exit 1; fi; \
	done
	@bad=$$(cd e2e && go list -tags demo,kind -f '{{if .GoFiles}}{{.ImportPath}}{{end}}' ./... | grep -v '^github.com/kube-sts/kube-sts/e2e/\(internal\|cmd\|hack\)/' || true); \
	  if [ -n "$$bad" ]; then echo "e2e suites hold tests only (harness code belongs under e2e/internal/); these have non-test files:"; echo "$$bad"; exit 1; fi
	@echo "import rules hold: shared stdlib-only, sidecar without k8s.io, nothing imports e2e, no product module imports release, e2e harness only under e2e/internal"

.PHONY: lint
lint: $(STATICCHECK) import-rules pin-check ## gofmt, go vet and staticcheck on every module (with the demo and kind build tags), the import rules, and pinned actions and base images.
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@for m in $(MODULES); do echo "== vet + staticcheck: $$m"; (cd $$m && go vet -tags demo,kind ./... && $(STATICCHECK) -tags demo,kind ./...); done

.PHONY: pin-check
pin-check: ## Fail when a workflow uses an action not pinned by commit SHA, or a Dockerfile a base image not pinned by digest.
	@bash hack/check-pins.sh

.PHONY: tidy-check
tidy-check: ## Fail when `go mod tidy` would change any module.
	@for m in $(MODULES); do (cd $$m && go mod tidy -diff) || { echo "go mod tidy changes $$m: run 'make tidy'"; exit 1; }; done

.PHONY: tidy
tidy: ## Run `go mod tidy` in every module.
	@for m in $(MODULES); do (cd $$m && go mod tidy); done

.PHONY: fuzz
fuzz: ## Fuzz the network-facing parsers, and the JSON writer of tokens and responses, for FUZZTIME each (default 30s).
	cd shared && go test -run '^$$' -fuzz FuzzParseRequest -fuzztime $${FUZZTIME:-30s} ./exchange
	cd shared && go test -run '^$$' -fuzz FuzzAppend -fuzztime $${FUZZTIME:-30s} ./jsonstr
	cd shared && go test -run '^$$' -fuzz FuzzParseID -fuzztime $${FUZZTIME:-30s} ./contract
	cd sidecar && go test -run '^$$' -fuzz FuzzParse -fuzztime $${FUZZTIME:-30s} ./internal/jwtinfo
	cd issuer && go test -run '^$$' -fuzz FuzzPrecheck -fuzztime $${FUZZTIME:-30s} ./internal/server
	cd issuer && go test -run '^$$' -fuzz FuzzExchangeForm -fuzztime $${FUZZTIME:-30s} ./internal/server
	cd issuer && go test -run '^$$' -fuzz FuzzVerify -fuzztime $${FUZZTIME:-30s} ./internal/satoken
	cd issuer && go test -run '^$$' -fuzz FuzzDecodeHeader -fuzztime $${FUZZTIME:-30s} ./internal/satoken
	cd webhook && go test -run '^$$' -fuzz FuzzAnnotations -fuzztime $${FUZZTIME:-30s} ./internal/inject

.PHONY: bench
bench: toolchain ## Run every benchmark (issuer in-process and on the real API server, sidecar resources); numbers go into docs/performance.md.
	cd issuer && go test -run '^$$' -bench . -benchtime $${BENCHTIME:-2s} ./internal/server/
	cd webhook && go test -run '^$$' -bench . -benchtime $${BENCHTIME:-2s} ./internal/inject/ ./internal/admit/
	cd e2e && KUBEBUILDER_ASSETS="$$(bash hack/toolchain.sh --print-dir all)" go test -run '^$$' -bench . -benchtime $${BENCHTIME:-5s} ./issuer/
	cd e2e && KUBEBUILDER_ASSETS="$$(bash hack/toolchain.sh --print-dir all)" go test -run '^$$' -bench . -benchtime 300x ./webhook/
	bash sidecar/hack/bench-sidecar.sh $${IDLE:-30}

.PHONY: bench-sidecar
bench-sidecar: ## Measure the sidecar beside its floor (sidecar/hack/floorsidecar): binary size, RSS while looping, wake-ups while idle (IDLE=30 seconds).
	bash sidecar/hack/bench-sidecar.sh $${IDLE:-30}

.PHONY: images
images: ## Build the three images with docker buildx for PLATFORMS (see IMAGE_PREFIX, VERSION, IMAGE_OUTPUT).
	@mkdir -p dist/images
	@for pair in $(IMAGES); do mod=$${pair%%:*}; name=$${pair#*:}; \
	  out="$(IMAGE_OUTPUT)"; [ -n "$$out" ] || out="type=oci,dest=dist/images/$$name-$(VERSION).oci.tar"; \
	  echo "== $(IMAGE_PREFIX)/$$name:$(VERSION) ($(PLATFORMS)) -> $$out"; \
	  docker buildx build -f $$mod/Dockerfile --platform $(PLATFORMS) --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) --build-arg DATE=$(DATE) \
	    -t $(IMAGE_PREFIX)/$$name:$(VERSION) --output "$$out" . ; done

.PHONY: images-local
images-local: ## The same images without Docker (amd64 and arm64): docker-archives and OCI layouts in dist/images.
	cd release && go run ./cmd/images --out ../dist/images --prefix $(IMAGE_PREFIX) --version $(VERSION)

# `make push REGISTRY=reg.example:5000 VERSION=v0.1.0`: release-local, then
# the images and the chart to the registry (no Docker, no helm needed), as
# the release workflow names them; the chart's image.registry=$(REGISTRY)
# then points an install at them. PUSH_FLAGS=--insecure for plain HTTP.
REGISTRY ?=
PUSH_FLAGS ?=
.PHONY: push
push: release-local ## Push a local release to REGISTRY: <REGISTRY>/kube-sts/<binary>:<VERSION> (RELEASE_ARCHES) and oci://<REGISTRY>/kube-sts/charts/kube-sts (credentials: docker login).
	@[ -n "$(REGISTRY)" ] || { echo "set REGISTRY=host[:port][/path]"; exit 1; }
	cd release && go run ./cmd/push --registry $(REGISTRY) --version $(VERSION) --dir ../dist/release/$(VERSION) $(PUSH_FLAGS)

# RELEASE_ARCHES: the platforms of release-local and push (a cluster of one
# architecture needs only its own; e2e/install pushes this machine's).
RELEASE_ARCHES ?= amd64,arm64
.PHONY: release-local
release-local: toolchain-release ## A release without pushing or signing: images (RELEASE_ARCHES=amd64,arm64), a CycloneDX SBOM per image, the chart, SHA256SUMS in dist/release/$(VERSION) (VERSION must be the tag Chart.yaml names, e.g. v0.1.0).
	cd release && go run ./cmd/release --version $(VERSION) --out ../dist/release/$(VERSION) --prefix $(IMAGE_PREFIX) --arch $(RELEASE_ARCHES) \
		--helm "$$(bash ../$(TOOLCHAIN) --print-bin=helm)" --cyclonedx "$$(bash ../$(TOOLCHAIN) --print-bin=cyclonedx-gomod)"

.PHONY: manifests
manifests: toolchain-deploy ## Render the Helm chart (default values) and every kustomize overlay into dist/manifests.
	@mkdir -p dist/manifests
	"$$(bash $(TOOLCHAIN) --print-bin=helm)" template kube-sts manifests/charts/kube-sts --namespace kube-sts > dist/manifests/chart-default.yaml
	@for o in base overlays/cert-manager overlays/self-managed; do \
	  f=dist/manifests/kustomize-$$(echo $$o | tr / -).yaml; \
	  "$$(bash $(TOOLCHAIN) --print-bin=kustomize)" build manifests/$$o > $$f; echo "wrote $$f"; done

.PHONY: docs
docs: ## Regenerate docs/reference/values.md from the chart's values.schema.json and values.yaml (make test fails when it differs).
	cd e2e && go test -count=1 -run '^TestValuesReference$$' ./manifests/ -update

.PHONY: clean
clean: ## Remove bin/ and dist/ (the toolchain cache in $(KUBE_STS_CACHE) is kept).
	rm -rf bin dist
