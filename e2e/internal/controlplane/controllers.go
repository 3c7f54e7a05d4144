package controlplane

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-sts/kube-sts/e2e/internal/procs"
)

// Controllers are kube-scheduler and kube-controller-manager (the pinned
// v1.37.2, built like the API server), for suites that install real
// workloads: Deployments, ReplicaSets, scheduling, the kube-root-ca.crt
// ConfigMap in every namespace.
type Controllers struct {
	LogDir string
	procs  []*controllerProc
}

type controllerProc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// StartControllers builds (when not cached) and starts both as administrators
// on loopback. Stop them with Stop; a crashed test binary's are reaped by the
// next Start.
func (e *Env) StartControllers(ctx context.Context) (c *Controllers, err error) {
	c = &Controllers{LogDir: e.LogDir}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	kubeconfig, err := e.KubeconfigFile(e.LogDir, "kube-sts:controllers", "system:masters")
	if err != nil {
		return nil, err
	}
	caFile := filepath.Join(e.LogDir, "apiserver-ca.crt")
	if err := os.WriteFile(caFile, e.Config.CAData, 0o644); err != nil {
		return nil, err
	}
	common := func() []string {
		port, err := procs.LoopbackPort()
		if err != nil {
			port = 0 // the component then serves no health endpoint; nothing here needs it
		}
		return []string{"--kubeconfig=" + kubeconfig, "--authentication-kubeconfig=" + kubeconfig, "--authorization-kubeconfig=" + kubeconfig,
			"--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port)}
	}
	for _, p := range []struct {
		name string
		args []string
	}{
		{"kube-scheduler", common()},
		// root-ca-file: the kube-root-ca.crt ConfigMap of every namespace,
		// which the Pods' API credentials project.
		{"kube-controller-manager", append(common(), "--root-ca-file="+caFile, "--use-service-account-credentials=false")},
	} {
		bin, err := Binary(ctx, p.name)
		if err != nil {
			return nil, err
		}
		log, err := os.Create(filepath.Join(e.LogDir, p.name+".log"))
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(bin, p.args...)
		cmd.Stdout, cmd.Stderr = log, log
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start %s: %w", p.name, err)
		}
		cp := &controllerProc{cmd: cmd, done: make(chan struct{})}
		go func() { _ = cmd.Wait(); close(cp.done) }()
		c.procs = append(c.procs, cp)
	}
	recordChildren()
	// Ready when the controller manager has published kube-root-ca.crt.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := e.Clientset.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{}); err == nil {
			return c, nil
		}
		for _, p := range c.procs {
			select {
			case <-p.done:
				return nil, fmt.Errorf("%s exited (logs in %s)", filepath.Base(p.cmd.Path), e.LogDir)
			default:
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("kube-controller-manager published no kube-root-ca.crt in 2m (logs in %s)", e.LogDir)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// Stop ends both (idempotent).
func (c *Controllers) Stop() {
	for _, p := range c.procs {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	c.procs = nil
}
