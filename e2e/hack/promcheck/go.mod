// promcheck is built by e2e/hack/toolchain.sh in a wrapper module that
// requires the pinned Prometheus; this file only keeps main.go out of the e2e
// module (and its go.mod free of Prometheus's dependencies).
module kube-sts.local/toolchain/promcheck

go 1.26
