module github.com/kube-sts/kube-sts/sidecar

go 1.26.0

require (
	github.com/cenkalti/backoff/v4 v4.3.0
	github.com/fsnotify/fsnotify v1.9.0
	github.com/kube-sts/kube-sts/shared v0.0.0
	go.uber.org/zap v1.28.0
)

require (
	github.com/kube-sts/kube-sts/logging v0.0.0
	go.uber.org/multierr v1.10.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
)

replace github.com/kube-sts/kube-sts/shared => ../shared

replace github.com/kube-sts/kube-sts/logging => ../logging
