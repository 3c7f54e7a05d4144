// Package inject decides what a labeled Pod gets: a pure function on
// *corev1.Pod, with no client and no HTTP. The admission handler copies the
// Pod, calls Mutate, and lets controller-runtime compute the JSON patch.
//
// Mutate is idempotent: our parts are identified by name, removed and added
// again in their canonical place, so a re-invocation after another webhook
// (Vault's injector) changed the Pod puts our sidecar back in front and mounts
// /tokens into the containers that webhook added.
package inject

import (
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/kube-sts/kube-sts/shared/contract"
	"github.com/kube-sts/kube-sts/webhook/internal/config"
)

// Denied is a refusal; its message tells the user what to change.
type Denied struct{ Msg string }

func (d *Denied) Error() string { return d.Msg }

func deny(format string, args ...any) error { return &Denied{Msg: fmt.Sprintf(format, args...)} }

// Select returns the injector a Pod's labels ask for, or nil when none does.
// A label naming no configured injector, or several injectors, is refused.
func Select(pod *corev1.Pod, injectors []config.Injector) (*config.Injector, error) {
	var asked []string
	for k, v := range pod.Labels {
		name, ok := strings.CutPrefix(k, contract.Prefix)
		if !ok || v != contract.SelectionValue || contract.ValidateSTSName(name) != nil {
			continue
		}
		asked = append(asked, name)
	}
	sort.Strings(asked)
	var found []*config.Injector
	for _, name := range asked {
		i := slices.IndexFunc(injectors, func(in config.Injector) bool { return in.Name == name })
		if i < 0 {
			var known []string
			for _, in := range injectors {
				known = append(known, in.Name)
			}
			return nil, deny("label %s%s=true names no kube-sts injector; the configured ones are: %s", contract.Prefix, name, strings.Join(known, ", "))
		}
		found = append(found, &injectors[i])
	}
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
		return found[0], nil
	}
	return nil, deny("the Pod asks for %d kube-sts injectors (%s); one Pod can use one", len(found), strings.Join(asked, ", "))
}

// Mutate injects inj into pod. native selects a native sidecar (an init
// container with restartPolicy Always and a startup probe) over an init
// container running `once` plus a regular container.
func Mutate(pod *corev1.Pod, inj *config.Injector, native bool) error {
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	opts, err := readOptions(pod)
	if err != nil {
		return err
	}
	owner := pod.Annotations[contract.InjectedAnnotation]
	switch {
	case owner != "" && owner != inj.Name:
		return deny("the Pod was already injected by kube-sts injector %q; it cannot also use %q", owner, inj.Name)
	case owner == "":
		if err := checkNamesFree(pod, opts); err != nil {
			return err
		}
	}
	if err := checkOwnVolume(pod, opts); err != nil {
		return err
	}
	uid, gid, err := ids(pod, inj)
	if err != nil {
		return err
	}

	// The projected token needs a ServiceAccount name; the ServiceAccount
	// admission plugin normally sets "default" before webhooks run, but not
	// every API server has that plugin on.
	if pod.Spec.ServiceAccountName == "" {
		pod.Spec.ServiceAccountName = "default"
	}

	// Remove what we added before, then add it again in its place (a token
	// volume the Pod brings stays).
	pod.Spec.Volumes = slices.DeleteFunc(pod.Spec.Volumes, func(v corev1.Volume) bool {
		return ours(v.Name, volumeNames) && (opts.createVolume || v.Name != contract.VolumeName)
	})
	pod.Spec.InitContainers = slices.DeleteFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return ours(c.Name, containerNames) })
	pod.Spec.Containers = slices.DeleteFunc(pod.Spec.Containers, func(c corev1.Container) bool { return ours(c.Name, containerNames) })

	if err := mountIntoTargets(pod, inj, opts.skip); err != nil {
		return err
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, volumes(inj, opts.createVolume)...)
	if native {
		c := sidecar(inj, uid, gid, contract.ContainerName, contract.ModeRun)
		c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
		// Later init containers (Vault's vault-agent-init) start only once
		// the first token is on disk: the kubelet completes a postStart hook
		// before it starts the next init container. A startupProbe would do
		// the same a probe period later (about a second on every Pod start);
		// await polls the tmpfs file every 20 ms, gives up after 5 minutes,
		// and the kubelet then restarts the sidecar.
		c.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{
			Exec: &corev1.ExecAction{Command: []string{contract.SidecarBinary, contract.ModeAwait}},
		}}
		pod.Spec.InitContainers = append([]corev1.Container{c}, pod.Spec.InitContainers...)
	} else {
		initC := sidecar(inj, uid, gid, contract.InitContainerName, contract.ModeOnce)
		pod.Spec.InitContainers = append([]corev1.Container{initC}, pod.Spec.InitContainers...)
		pod.Spec.Containers = append(pod.Spec.Containers, sidecar(inj, uid, gid, contract.ContainerName, contract.ModeRun))
	}
	pod.Annotations[contract.InjectedAnnotation] = inj.Name
	return nil
}

var (
	volumeNames    = []string{contract.VolumeName, contract.SubjectVolumeName, contract.CAVolumeName}
	containerNames = []string{contract.ContainerName, contract.InitContainerName}
)

func ours(name string, names []string) bool { return slices.Contains(names, name) }

// options are what a Pod's annotations ask of the injection.
type options struct {
	// createVolume is false when the Pod brings its own token volume.
	createVolume bool
	// skip are containers that get neither the mount nor the env vars.
	skip []string
}

// readOptions reads tremolo.io/create-volume, tremolo.io/non-root and
// kube-sts.io/skip-containers, refusing values it cannot read.
func readOptions(pod *corev1.Pod) (options, error) {
	o := options{createVolume: true}
	for _, key := range []string{contract.AnnotationCreateVolume, contract.AnnotationNonRoot} {
		v, ok := pod.Annotations[key]
		if !ok {
			continue
		}
		if v != "true" && v != "false" {
			return o, deny("annotation %s=%q: use \"true\" or \"false\"", key, v)
		}
		if key == contract.AnnotationCreateVolume {
			o.createVolume = v == "true"
		}
	}
	if v, ok := pod.Annotations[contract.SkipContainersAnnotation]; ok {
		for _, name := range strings.Split(v, ",") {
			name = strings.TrimSpace(name)
			if name == "" {
				continue
			}
			if !hasContainer(pod, name) {
				return o, deny("annotation %s names container %q, which the Pod does not have", contract.SkipContainersAnnotation, name)
			}
			o.skip = append(o.skip, name)
		}
	}
	return o, nil
}

func hasContainer(pod *corev1.Pod, name string) bool {
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		if slices.ContainsFunc(list, func(c corev1.Container) bool { return c.Name == name }) {
			return true
		}
	}
	return false
}

// checkOwnVolume: with create-volume "false" the Pod's token volume must
// exist and be one the sidecar can write.
func checkOwnVolume(pod *corev1.Pod, o options) error {
	if o.createVolume {
		return nil
	}
	i := slices.IndexFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == contract.VolumeName })
	if i < 0 {
		return deny("annotation %s=false: the Pod must bring a volume named %q (e.g. an emptyDir), and it has none", contract.AnnotationCreateVolume, contract.VolumeName)
	}
	src := pod.Spec.Volumes[i].VolumeSource
	if src.EmptyDir == nil && src.Ephemeral == nil && src.PersistentVolumeClaim == nil {
		return deny("volume %q must be writable by the sidecar: use an emptyDir, an ephemeral or a persistentVolumeClaim volume, not %s", contract.VolumeName, volumeKind(src))
	}
	return nil
}

// volumeKind names a volume's source as it is written in a Pod.
func volumeKind(src corev1.VolumeSource) string {
	switch {
	case src.ConfigMap != nil:
		return "a configMap"
	case src.Secret != nil:
		return "a secret"
	case src.Projected != nil:
		return "a projected volume"
	case src.DownwardAPI != nil:
		return "a downwardAPI volume"
	case src.HostPath != nil:
		return "a hostPath"
	}
	return "this kind of volume"
}

// checkNamesFree refuses a Pod that uses our names for something of its own
// (its own token volume is allowed with create-volume "false").
func checkNamesFree(pod *corev1.Pod, o options) error {
	for _, v := range pod.Spec.Volumes {
		if ours(v.Name, volumeNames) && (o.createVolume || v.Name != contract.VolumeName) {
			return deny("the Pod already has a volume named %q; kube-sts needs that name for its own volume, rename yours", v.Name)
		}
	}
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range list {
			if ours(c.Name, containerNames) {
				return deny("the Pod already has a container named %q; kube-sts needs that name for its sidecar, rename yours", c.Name)
			}
		}
	}
	return nil
}

// ids reads tremolo.io/user and tremolo.io/group, or the injector's defaults.
func ids(pod *corev1.Pod, inj *config.Injector) (uid, gid int64, err error) {
	uid, gid = *inj.User, *inj.Group
	if v, ok := pod.Annotations[contract.AnnotationUser]; ok {
		if uid, err = contract.ParseID(contract.AnnotationUser, v); err != nil {
			return 0, 0, deny("%v", err)
		}
		if uid == 0 {
			return 0, 0, deny("annotation %s=%q: the sidecar does not run as root; use the uid of the container that reads the token (Vault agent: 100)", contract.AnnotationUser, v)
		}
	}
	// gid 0 is accepted: the sidecar still runs as a non-root uid, and images
	// built for arbitrary uids share files through group 0 (OpenShift's way).
	if v, ok := pod.Annotations[contract.AnnotationGroup]; ok {
		if gid, err = contract.ParseID(contract.AnnotationGroup, v); err != nil {
			return 0, 0, deny("%v", err)
		}
	}
	return uid, gid, nil
}

func volumes(inj *config.Injector, createVolume bool) []corev1.Volume {
	var v []corev1.Volume
	if createVolume {
		v = append(v, corev1.Volume{Name: contract.VolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: inj.TokenVolumeSizeLimit,
		}}})
	}
	v = append(v,
		corev1.Volume{Name: contract.SubjectVolumeName, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience:          inj.SubjectAudience,
				ExpirationSeconds: ptr.To(inj.ExpirationSeconds),
				Path:              contract.SubjectTokenFileName,
			}}},
		}}})
	if cm := inj.CAConfigMap; cm != nil {
		v = append(v, corev1.Volume{Name: contract.CAVolumeName, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: cm.Name},
			Items:                []corev1.KeyToPath{{Key: cm.Key, Path: "ca.crt"}},
		}}})
	}
	return v
}

func sidecar(inj *config.Injector, uid, gid int64, name, mode string) corev1.Container {
	env := []corev1.EnvVar{
		{Name: contract.EnvExchangeURL, Value: inj.ExchangeURL},
		{Name: contract.EnvSubjectTokenFile, Value: contract.SubjectTokenPath},
		{Name: contract.EnvOutputFile, Value: contract.TokenPath},
	}
	mounts := []corev1.VolumeMount{
		{Name: contract.VolumeName, MountPath: contract.MountPath},
		{Name: contract.SubjectVolumeName, MountPath: contract.SubjectMountPath, ReadOnly: true},
	}
	switch {
	case inj.CAPEM != "":
		env = append(env, corev1.EnvVar{Name: contract.EnvCAPEM, Value: inj.CAPEM})
	case inj.CAConfigMap != nil:
		env = append(env, corev1.EnvVar{Name: contract.EnvCAFile, Value: contract.CAMountPath + "/ca.crt"})
		mounts = append(mounts, corev1.VolumeMount{Name: contract.CAVolumeName, MountPath: contract.CAMountPath, ReadOnly: true})
	}
	return corev1.Container{
		Name:                     name,
		Image:                    inj.Image,
		ImagePullPolicy:          inj.ImagePullPolicy,
		Args:                     []string{mode},
		Env:                      env,
		VolumeMounts:             mounts,
		Resources:                *inj.Resources.DeepCopy(),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr.To(uid),
			RunAsGroup:               ptr.To(gid),
			RunAsNonRoot:             ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

// mountIntoTargets gives the chosen containers (the injector's, or all, less
// those skipped) the read-only /tokens mount and the env vars, leaving alone
// what they already have.
func mountIntoTargets(pod *corev1.Pod, inj *config.Injector, skip []string) error {
	value, hasValue := pod.Annotations[contract.ValueAnnotation(inj.Name)]
	for _, list := range []*[]corev1.Container{&pod.Spec.InitContainers, &pod.Spec.Containers} {
		for i := range *list {
			c := &(*list)[i]
			if (len(inj.Containers) > 0 && !slices.Contains(inj.Containers, c.Name)) || slices.Contains(skip, c.Name) {
				continue
			}
			if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == contract.VolumeName }) {
				// path.Clean: "/tokens/" and "/tokens/." are /tokens too.
				if j := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return path.Clean(m.MountPath) == contract.MountPath }); j >= 0 {
					return deny("container %q already mounts volume %q at %s, where kube-sts mounts the token; move it or list only other containers in the injector's containers", c.Name, c.VolumeMounts[j].Name, contract.MountPath)
				}
				c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: contract.VolumeName, MountPath: contract.MountPath, ReadOnly: true})
			}
			setEnv(c, inj.TokenPathEnv, contract.TokenPath)
			if hasValue {
				setEnv(c, inj.ValueEnv, value)
			}
		}
	}
	return nil
}

// setEnv adds name=value unless the container already sets name (theirs wins).
func setEnv(c *corev1.Container, name, value string) {
	if slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name }) {
		return
	}
	c.Env = append(c.Env, corev1.EnvVar{Name: name, Value: value})
}
