module github.com/kube-sts/kube-sts/shared

go 1.26
