// Package inject decides what a labeled Pod gets: a pure function on
// *corev1.Pod, with no client and no HTTP. The admission handler (package
// admit) copies the Pod, calls Mutate, and computes the JSON patch itself,
// from the typed Pod before and after Mutate laid onto the raw Pod, so that
// fields k8s.io/api does not know survive (see admit's documentation).
//
// Mutate is idempotent: our parts are identified by name, removed and added
// again in their canonical place, so a re-invocation after another webhook
// (Vault's injector) changed the Pod puts our sidecar back in front and mounts
// /tokens into the containers that webhook added.
package inject

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"sort"
	"strconv"
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

// Select returns the injectors a Pod asks for, in the order of the
// configuration (the first keeps the single-injector names, see
// contract.FurtherTokenPath), or none. Per injector, the Pod's label
// tremolo.io/<name> decides when present ("true" asks, any other value opts
// out); without it, fromServiceAccount (the names of its ServiceAccount's
// kube-sts.io/inject annotation, see contract.ParseInject; nil where
// ServiceAccount opt-in is off) asks. A name that no configured injector
// has is refused, whether a label or the ServiceAccount asks for it.
func Select(pod *corev1.Pod, injectors []config.Injector, fromServiceAccount []string) ([]*config.Injector, error) {
	var asked []string
	for k, v := range pod.Labels {
		name, ok := strings.CutPrefix(k, contract.Prefix)
		if !ok || v != contract.SelectionValue || contract.ValidateName(name) != nil {
			continue
		}
		asked = append(asked, name)
	}
	sort.Strings(asked)
	known := func(name string) bool {
		return slices.ContainsFunc(injectors, func(in config.Injector) bool { return in.Name == name })
	}
	for _, name := range asked {
		if !known(name) {
			return nil, deny("label %s%s=true names no kube-sts injector; the configured ones are: %s", contract.Prefix, name, injectorNames(injectors))
		}
	}
	for _, name := range fromServiceAccount {
		if _, labeled := pod.Labels[contract.SelectionLabel(name)]; labeled {
			continue // the Pod's own label decides
		}
		if !known(name) {
			return nil, deny("ServiceAccount %s's annotation %s names %q, which is no kube-sts injector; the configured ones are: %s (a Pod label %s%s: \"false\" opts a Pod out)",
				ServiceAccountName(pod.Spec.ServiceAccountName), contract.AnnotationInject, name, injectorNames(injectors), contract.Prefix, name)
		}
		asked = append(asked, name)
	}
	var found []*config.Injector
	for i := range injectors {
		if slices.Contains(asked, injectors[i].Name) {
			found = append(found, &injectors[i])
		}
	}
	return found, nil
}

// ServiceAccountName is the ServiceAccount of a Pod whose
// spec.serviceAccountName is name: "default" when empty, as the API server's
// ServiceAccount admission plugin sets it before any webhook runs.
func ServiceAccountName(name string) string {
	if name != "" {
		return name
	}
	return "default"
}

func injectorNames(injectors []config.Injector) string {
	known := make([]string, len(injectors))
	for i, in := range injectors {
		known[i] = in.Name
	}
	return strings.Join(known, ", ")
}

// Names lists injectors' names, comma-separated: the InjectedAnnotation's
// value and the admission metrics' injector label.
func Names(injs []*config.Injector) string {
	names := make([]string, len(injs))
	for i, in := range injs {
		names[i] = in.Name
	}
	return strings.Join(names, ",")
}

// Mutate injects injs (as Select returns them, at least one) into pod: one
// sidecar keeping a token per injector. native selects a native sidecar (an
// init container with restartPolicy Always and a postStart hook) over an
// init container running `once` plus a regular container. The sidecar's
// image, resources, default uid/gid and token volume size are the first
// injector's.
func Mutate(pod *corev1.Pod, injs []*config.Injector, native bool) error {
	if len(injs) == 0 {
		return fmt.Errorf("inject: no injector")
	}
	inj := injs[0]
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	opts, err := readOptions(pod)
	if err != nil {
		return err
	}
	owner, names := pod.Annotations[contract.InjectedAnnotation], Names(injs)
	switch {
	case owner != "" && owner != names:
		return deny("the Pod was already injected by kube-sts injector %s; it cannot now use %s", quoteList(owner), quoteList(names))
	case owner == "":
		if err := checkNamesFree(pod, opts); err != nil {
			return err
		}
	}
	if err := checkOwnVolume(pod, opts); err != nil {
		return err
	}
	set, err := podSettings(pod, inj)
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
		return (ours(v.Name, volumeNames) || contract.IsGroupVolume(v.Name)) && (opts.createVolume || v.Name != contract.VolumeName)
	})
	pod.Spec.InitContainers = slices.DeleteFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return ours(c.Name, containerNames) })
	pod.Spec.Containers = slices.DeleteFunc(pod.Spec.Containers, func(c corev1.Container) bool { return ours(c.Name, containerNames) })

	groups := tokenGroups(pod, injs, opts.skip)
	if err := mountIntoTargets(pod, injs, opts.skip, groups); err != nil {
		return err
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, volumes(injs, opts.createVolume, groups)...)
	if native {
		c := sidecar(injs, groups, set, contract.ContainerName, contract.ModeRun)
		c.ReadinessProbe = readinessProbe(injs)
		c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
		// Later init containers (Vault's vault-agent-init) start only once
		// every token is on disk: the kubelet completes a postStart hook
		// before it starts the next init container. A startupProbe would do
		// the same a probe period later (about a second on every Pod start);
		// await polls the tmpfs file every 20 ms, gives up after 5 minutes,
		// and the kubelet then restarts the sidecar.
		c.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{
			Exec: &corev1.ExecAction{Command: []string{contract.SidecarBinary, contract.ModeAwait}},
		}}
		pod.Spec.InitContainers = append([]corev1.Container{c}, pod.Spec.InitContainers...)
	} else {
		initC := sidecar(injs, groups, set, contract.InitContainerName, contract.ModeOnce)
		pod.Spec.InitContainers = append([]corev1.Container{initC}, pod.Spec.InitContainers...)
		c := sidecar(injs, groups, set, contract.ContainerName, contract.ModeRun)
		c.ReadinessProbe = readinessProbe(injs)
		pod.Spec.Containers = append(pod.Spec.Containers, c)
	}
	pod.Annotations[contract.InjectedAnnotation] = names
	return nil
}

func quoteList(names string) string {
	parts := strings.Split(names, ",")
	for i, p := range parts {
		parts[i] = strconv.Quote(p)
	}
	return strings.Join(parts, ", ")
}

var (
	volumeNames    = []string{contract.VolumeName, contract.SubjectVolumeName, contract.CAVolumeName, contract.MoreCAVolumeName}
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

// settings are what a Pod's annotations choose for its sidecar.
type settings struct {
	uid, gid int64
	// lifetime is kube-sts.io/ttl, checked and written the Go way ("10m0s");
	// "" when the Pod asks for none.
	lifetime string
}

// podSettings reads tremolo.io/user and tremolo.io/group (or the injector's
// defaults) and kube-sts.io/ttl, denying a value the sidecar could not use.
func podSettings(pod *corev1.Pod, inj *config.Injector) (settings, error) {
	s := settings{uid: *inj.User, gid: *inj.Group}
	var err error
	if v, ok := pod.Annotations[contract.AnnotationUser]; ok {
		if s.uid, err = contract.ParseID(contract.AnnotationUser, v); err != nil {
			return settings{}, deny("%v", err)
		}
		if s.uid == 0 {
			return settings{}, deny("annotation %s=%q: the sidecar does not run as root; use the uid of the container that reads the token (Vault agent: 100)", contract.AnnotationUser, v)
		}
	}
	// gid 0 is accepted: the sidecar still runs as a non-root uid, and images
	// built for arbitrary uids share files through group 0 (OpenShift's way).
	if v, ok := pod.Annotations[contract.AnnotationGroup]; ok {
		if s.gid, err = contract.ParseID(contract.AnnotationGroup, v); err != nil {
			return settings{}, deny("%v", err)
		}
	}
	if v, ok := pod.Annotations[contract.AnnotationTTL]; ok {
		d, err := contract.ParseTTL(v)
		if err != nil {
			return settings{}, deny("%v; the issuer grants at most its endpoint's ttl", err)
		}
		s.lifetime = d.String()
	}
	return s, nil
}

// tokenPath is where the sidecar writes injs[i]'s token.
func tokenPath(injs []*config.Injector, i int) string {
	if i == 0 {
		return contract.TokenPath
	}
	return contract.FurtherTokenPath(injs[i].Name)
}

// groups are a Pod's token groups (contract.GroupVolumeName): the volume
// each targeted container mounts at /tokens, by container name, and the
// group volumes in order.
type groups struct {
	volumeOf map[string]string
	list     []group
}

// group is token group k and its members (indexes of the Pod's injectors).
type group struct {
	k       int
	members []int
}

// tokenGroups sorts the containers the injectors target (less those
// skipped) by the set of injectors that target each. A container every
// injector targets mounts contract.VolumeName, which holds every token; each
// other set gets a group volume of its own.
func tokenGroups(pod *corev1.Pod, injs []*config.Injector, skip []string) groups {
	g := groups{volumeOf: map[string]string{}}
	byKey := map[string]string{}
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range list {
			if slices.Contains(skip, c.Name) {
				continue
			}
			var members []int
			for j, inj := range injs {
				if len(inj.Containers) == 0 || slices.Contains(inj.Containers, c.Name) {
					members = append(members, j)
				}
			}
			switch {
			case len(members) == 0:
				continue
			case len(members) == len(injs):
				g.volumeOf[c.Name] = contract.VolumeName
				continue
			}
			key := fmt.Sprint(members)
			if _, ok := byKey[key]; !ok {
				k := len(g.list) + 1
				g.list = append(g.list, group{k: k, members: members})
				byKey[key] = contract.GroupVolumeName(k)
			}
			g.volumeOf[c.Name] = byKey[key]
		}
	}
	return g
}

// copies are the further files injs[i]'s token is written to: its file in
// each group it is a member of.
func (g groups) copies(injs []*config.Injector, i int) []string {
	var out []string
	for _, gr := range g.list {
		if slices.Contains(gr.members, i) {
			out = append(out, gr.mountPath()+"/"+path.Base(tokenPath(injs, i)))
		}
	}
	return out
}

func (gr group) mountPath() string { return contract.GroupMountPath(gr.k) }

func volumes(injs []*config.Injector, createVolume bool, groups groups) []corev1.Volume {
	inj := injs[0]
	var v []corev1.Volume
	tokens := func(name string) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: inj.TokenVolumeSizeLimit,
		}}}
	}
	if createVolume {
		v = append(v, tokens(contract.VolumeName))
	}
	for _, gr := range groups.list {
		v = append(v, tokens(contract.GroupVolumeName(gr.k)))
	}
	// One projected volume, a ServiceAccount token per injector, each for
	// its own audience and lifetime.
	subject := &corev1.ProjectedVolumeSource{}
	for i, in := range injs {
		file := contract.SubjectTokenFileName
		if i > 0 {
			file = contract.FurtherSubjectTokenFileName(in.Name)
		}
		subject.Sources = append(subject.Sources, corev1.VolumeProjection{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
			Audience:          in.SubjectAudience,
			ExpirationSeconds: ptr.To(in.ExpirationSeconds),
			Path:              file,
		}})
	}
	v = append(v, corev1.Volume{Name: contract.SubjectVolumeName, VolumeSource: corev1.VolumeSource{Projected: subject}})
	if cm := inj.CAConfigMap; cm != nil {
		v = append(v, corev1.Volume{Name: contract.CAVolumeName, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: cm.Name},
			Items:                []corev1.KeyToPath{{Key: cm.Key, Path: "ca.crt"}},
		}}})
	}
	more := &corev1.ProjectedVolumeSource{}
	for _, in := range injs[1:] {
		if cm := in.CAConfigMap; cm != nil {
			more.Sources = append(more.Sources, corev1.VolumeProjection{ConfigMap: &corev1.ConfigMapProjection{
				LocalObjectReference: corev1.LocalObjectReference{Name: cm.Name},
				Items:                []corev1.KeyToPath{{Key: cm.Key, Path: contract.MoreCAFileName(in.Name)}},
			}})
		}
	}
	if len(more.Sources) > 0 {
		v = append(v, corev1.Volume{Name: contract.MoreCAVolumeName, VolumeSource: corev1.VolumeSource{Projected: more}})
	}
	return v
}

func sidecar(injs []*config.Injector, groups groups, set settings, name, mode string) corev1.Container {
	inj := injs[0]
	env := []corev1.EnvVar{
		{Name: contract.EnvExchangeURL, Value: inj.ExchangeURL},
		{Name: contract.EnvSubjectTokenFile, Value: contract.SubjectTokenPath},
		{Name: contract.EnvOutputFile, Value: contract.TokenPath},
	}
	if c := groups.copies(injs, 0); len(c) > 0 {
		env = append(env, corev1.EnvVar{Name: contract.EnvOutputCopies, Value: strings.Join(c, ",")})
	}
	if set.lifetime != "" {
		env = append(env, corev1.EnvVar{Name: contract.EnvLifetime, Value: set.lifetime})
	}
	mounts := []corev1.VolumeMount{
		{Name: contract.VolumeName, MountPath: contract.MountPath},
		{Name: contract.SubjectVolumeName, MountPath: contract.SubjectMountPath, ReadOnly: true},
	}
	for _, gr := range groups.list {
		mounts = append(mounts, corev1.VolumeMount{Name: contract.GroupVolumeName(gr.k), MountPath: gr.mountPath()})
	}
	switch {
	case inj.CAPEM != "":
		env = append(env, corev1.EnvVar{Name: contract.EnvCAPEM, Value: inj.CAPEM})
	case inj.CAConfigMap != nil:
		env = append(env, corev1.EnvVar{Name: contract.EnvCAFile, Value: contract.CAMountPath + "/ca.crt"})
		mounts = append(mounts, corev1.VolumeMount{Name: contract.CAVolumeName, MountPath: contract.CAMountPath, ReadOnly: true})
	}
	if len(injs) > 1 {
		var further []contract.Token
		moreCA := false
		for i, in := range injs[1:] {
			t := contract.Token{
				Name:             in.Name,
				ExchangeURL:      in.ExchangeURL,
				SubjectTokenFile: contract.SubjectMountPath + "/" + contract.FurtherSubjectTokenFileName(in.Name),
				OutputFile:       tokenPath(injs, i+1),
				Copies:           groups.copies(injs, i+1),
				CAPEM:            in.CAPEM,
			}
			if in.CAConfigMap != nil {
				t.CAFile, moreCA = contract.MoreCAMountPath+"/"+contract.MoreCAFileName(in.Name), true
			}
			further = append(further, t)
		}
		// Marshalling strings and a struct slice cannot fail.
		data, _ := json.Marshal(further)
		env = append(env, corev1.EnvVar{Name: contract.EnvTokens, Value: string(data)})
		if moreCA {
			mounts = append(mounts, corev1.VolumeMount{Name: contract.MoreCAVolumeName, MountPath: contract.MoreCAMountPath, ReadOnly: true})
		}
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
			RunAsUser:                ptr.To(set.uid),
			RunAsGroup:               ptr.To(set.gid),
			RunAsNonRoot:             ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

// readinessProbe is the sidecar's readiness probe when every injector of the
// Pod asks for one (readinessProbe: true; off by default, see
// config.Injector.ReadinessProbe), else nil. It fails while a token is missing or within the
// sidecar's probe margin (10 s) of expiry, printing the refresh loop's last
// failure, so each failed probe is an event saying why (kubectl describe pod).
// A token is refreshed well before expiry and kept through an issuer outage,
// so the probe fails only when the Pod really has no usable token. Every 10
// seconds: an exec of a static binary that reads a tmpfs file or two.
func readinessProbe(injs []*config.Injector) *corev1.Probe {
	for _, in := range injs {
		if in.ReadinessProbe == nil || !*in.ReadinessProbe {
			return nil
		}
	}
	return &corev1.Probe{
		ProbeHandler:     corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{contract.SidecarBinary, contract.ModeProbe}}},
		PeriodSeconds:    10,
		TimeoutSeconds:   5,
		SuccessThreshold: 1,
		FailureThreshold: 1,
	}
}

// mountIntoTargets gives the chosen containers (each injector's, or all,
// less those skipped) the read-only /tokens mount and each injector's env
// vars, leaving alone what they already have. Two injectors that would set
// the same env var in one container are refused: one value would be lost.
func mountIntoTargets(pod *corev1.Pod, injs []*config.Injector, skip []string, groups groups) error {
	for _, list := range []*[]corev1.Container{&pod.Spec.InitContainers, &pod.Spec.Containers} {
		for i := range *list {
			c := &(*list)[i]
			if slices.Contains(skip, c.Name) {
				continue
			}
			theirs := map[string]bool{}
			for _, e := range c.Env {
				theirs[e.Name] = true
			}
			setBy := map[string]string{}
			for j, inj := range injs {
				if len(inj.Containers) > 0 && !slices.Contains(inj.Containers, c.Name) {
					continue
				}
				if err := mountTokens(c, groups.volumeOf[c.Name]); err != nil {
					return err
				}
				env := []corev1.EnvVar{{Name: inj.TokenPathEnv, Value: tokenPath(injs, j)}}
				if value, ok := pod.Annotations[contract.ValueAnnotation(inj.Name)]; ok {
					env = append(env, corev1.EnvVar{Name: inj.ValueEnv, Value: value})
				}
				for _, e := range env {
					if theirs[e.Name] {
						continue
					}
					if other, dup := setBy[e.Name]; dup {
						return deny("injectors %q and %q would both set %s in container %q; give one of them another tokenPathEnv or valueEnv in the webhook's configuration", other, inj.Name, e.Name, c.Name)
					}
					setBy[e.Name] = inj.Name
					c.Env = append(c.Env, e)
				}
			}
		}
	}
	return nil
}

// mountTokens mounts volume (the Pod's token volume or a token group's)
// read-only at /tokens unless c has that mount; a mount of another of our
// token volumes there (from an earlier invocation, when the Pod's containers
// were grouped otherwise) is replaced.
func mountTokens(c *corev1.Container, volume string) error {
	if slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == volume }) {
		return nil
	}
	c.VolumeMounts = slices.DeleteFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == contract.VolumeName || contract.IsGroupVolume(m.Name)
	})
	// path.Clean: "/tokens/" and "/tokens/." are /tokens too.
	if j := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return path.Clean(m.MountPath) == contract.MountPath }); j >= 0 {
		return deny("container %q already mounts volume %q at %s, where kube-sts mounts the token; move it or list only other containers in the injector's containers", c.Name, c.VolumeMounts[j].Name, contract.MountPath)
	}
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: volume, MountPath: contract.MountPath, ReadOnly: true})
	return nil
}
