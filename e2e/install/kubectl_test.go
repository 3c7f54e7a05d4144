package install

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	corev1 "k8s.io/api/core/v1"
)

// kubectlShim is the quick start's kubectl on the test node (see
// quickStart): `logs POD -c C [--tail=N]` and `exec POD -c C -- cat FILE`
// (FILE in an emptyDir) are answered from the node's disk, as this node's
// kubelet serves no API; everything else runs the real kubectl (real).
func kubectlShim(real string, args []string) int {
	ns, verb, rest := "default", "", []string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case (a == "-n" || a == "--namespace") && i+1 < len(args):
			ns = args[i+1]
			i++
		case strings.HasPrefix(a, "--namespace="):
			ns = strings.TrimPrefix(a, "--namespace=")
		case verb == "" && !strings.HasPrefix(a, "-"):
			verb = a
		default:
			rest = append(rest, a)
		}
	}
	var err error
	switch verb {
	case "logs":
		err = shimLogs(real, ns, rest)
	case "exec":
		err = shimExec(real, ns, rest)
	default:
		err = syscall.Exec(real, append([]string{real}, args...), os.Environ())
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubectl (the quick start's, on the test node): %v\n", err)
		return 1
	}
	return 0
}

// podAndContainer reads "POD -c C" from args (the rest returned).
func podAndContainer(real, ns string, args []string) (*corev1.Pod, string, []string, error) {
	var name, container string
	var rest []string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-c" && i+1 < len(args):
			container = args[i+1]
			i++
		case name == "" && !strings.HasPrefix(a, "-"):
			name = strings.TrimPrefix(a, "pod/")
		default:
			rest = append(rest, a)
		}
	}
	if name == "" || container == "" {
		return nil, "", nil, fmt.Errorf("want POD -c CONTAINER in %q", args)
	}
	out, err := exec.Command(real, "-n", ns, "get", "pod", name, "-o", "json").Output()
	if err != nil {
		return nil, "", nil, fmt.Errorf("get pod %s/%s: %v", ns, name, err)
	}
	var p corev1.Pod
	if err := json.Unmarshal(out, &p); err != nil {
		return nil, "", nil, err
	}
	return &p, container, rest, nil
}

func shimLogs(real, ns string, args []string) error {
	p, container, rest, err := podAndContainer(real, ns, args)
	if err != nil {
		return err
	}
	tail := -1
	for _, a := range rest {
		if v, ok := strings.CutPrefix(a, "--tail="); ok {
			if tail, err = strconv.Atoi(v); err != nil {
				return fmt.Errorf("--tail=%s: %v", v, err)
			}
		} else {
			return fmt.Errorf("logs: %q is not answered on the test node", a)
		}
	}
	dir := filepath.Join(os.Getenv("KUBE_STS_NODE_POD_LOGS"), p.Namespace+"_"+p.Name+"_"+string(p.UID), container)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	// CRI log lines: "<time> <stream> <P|F> <text>"; P parts join the next.
	var lines []string
	var partial strings.Builder
	for _, e := range entries {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.SplitN(sc.Text(), " ", 4)
			if len(fields) < 3 {
				continue
			}
			if len(fields) == 4 {
				partial.WriteString(fields[3])
			}
			if fields[2] == "F" {
				lines = append(lines, partial.String())
				partial.Reset()
			}
		}
		f.Close()
	}
	if tail >= 0 && len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	for _, l := range lines {
		fmt.Println(l)
	}
	return nil
}

func shimExec(real, ns string, args []string) error {
	p, container, rest, err := podAndContainer(real, ns, args)
	if err != nil {
		return err
	}
	if len(rest) != 3 || rest[0] != "--" || rest[1] != "cat" {
		return fmt.Errorf("exec: only `-- cat FILE` is answered on the test node, not %q", rest)
	}
	file := rest[2]
	var mounts []corev1.VolumeMount
	for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		if c.Name == container {
			mounts = c.VolumeMounts
		}
	}
	for _, m := range mounts {
		rel, ok := strings.CutPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok {
			continue
		}
		for _, v := range p.Spec.Volumes {
			if v.Name == m.Name && v.EmptyDir != nil {
				b, err := os.ReadFile(filepath.Join(os.Getenv("KUBE_STS_NODE_KUBELET_DIR"), "pods", string(p.UID), "volumes", "kubernetes.io~empty-dir", v.Name, rel))
				if err != nil {
					return err
				}
				_, err = os.Stdout.Write(b)
				return err
			}
		}
	}
	return fmt.Errorf("exec: %s is in no emptyDir of container %s", file, container)
}
