module github.com/kube-sts/kube-sts/sidecar

go 1.26

require github.com/kube-sts/kube-sts/shared v0.0.0

replace github.com/kube-sts/kube-sts/shared => ../shared
