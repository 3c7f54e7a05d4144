package controlplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Faults for the soak: the API server restarted (same flags, certificates
// and etcd, so every client's credentials stay valid, as in a real restart)
// and etcd frozen. Both find their process among this test process's
// children.

// RestartAPIServer stops the API server with SIGTERM, starts it again with
// the same command line and waits until it is ready. It returns how long
// the API server was unreachable.
func (e *Env) RestartAPIServer(ctx context.Context) (time.Duration, error) {
	pid, err := e.child("kube-apiserver")
	if err != nil {
		return 0, err
	}
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return 0, err
	}
	argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		return 0, err
	}
	down := time.Now()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return 0, err
	}
	for alive(pid) && ppid(pid) == os.Getpid() {
		if time.Since(down) > 30*time.Second {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
	logf, err := os.OpenFile(filepath.Join(e.LogDir, "kube-apiserver.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd := exec.Command(exe, argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // like envtest's: its own process group
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start the API server again: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	e.restarted = append(e.restarted, cmd)
	recordChildren()
	for {
		if _, err := e.Clientset.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err == nil {
			return time.Since(down), nil
		}
		select {
		case <-ctx.Done():
			return time.Since(down), fmt.Errorf("the API server did not become ready after its restart: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// FreezeEtcd stops etcd (SIGSTOP) for d and then lets it go on (SIGCONT):
// the API server cannot read or write anything meanwhile.
func (e *Env) FreezeEtcd(ctx context.Context, d time.Duration) error {
	pid, err := e.child("etcd")
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return err
	}
	defer func() { _ = syscall.Kill(pid, syscall.SIGCONT) }()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// stopRestarted stops API servers started by RestartAPIServer.
func (e *Env) stopRestarted() {
	for _, cmd := range e.restarted {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, cmd := range e.restarted {
		for alive(cmd.Process.Pid) && ppid(cmd.Process.Pid) == os.Getpid() && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		_ = cmd.Process.Kill()
	}
	e.restarted = nil
}

// child finds this process's child running the named binary.
func (e *Env) child(name string) (int, error) {
	entries, _ := os.ReadDir("/proc")
	for _, d := range entries {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || ppid(pid) != os.Getpid() {
			continue
		}
		if exe, err := os.Readlink("/proc/" + d.Name() + "/exe"); err == nil && filepath.Base(exe) == name {
			return pid, nil
		}
	}
	return 0, errors.New("no " + name + " child of this test process")
}
