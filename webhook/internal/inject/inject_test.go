package inject

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/kube-sts/kube-sts/shared/contract"
	"github.com/kube-sts/kube-sts/webhook/internal/config"
)

var update = flag.Bool("update", false, "rewrite the golden files")

const testConfig = `
injectors:
- name: vault-sts
  exchangeURL: https://sts.kube-sts.test/vault/token
  image: local/sts-creds-sidecar:test
  tokenPathEnv: VAULT_TOKEN_FILE
  valueEnv: VAULT_TOKEN_ENABLED
  # A real certificate (self-signed, P-256, for these tests only): the
  # configuration refuses a caPEM that does not parse.
  caPEM: |
    -----BEGIN CERTIFICATE-----
    MIIBjTCCATOgAwIBAgIUXniGWq9uIlOEzkLlN/mqlhibYKcwCgYIKoZIzj0EAwIw
    GzEZMBcGA1UEAwwQa3ViZS1zdHMtdGVzdC1jYTAgFw0yNjEyMDQwNjU3MjdaGA8y
    MTI2MTExMDA2NTcyN1owGzEZMBcGA1UEAwwQa3ViZS1zdHMtdGVzdC1jYTBZMBMG
    ByqGSM49AgEGCCqGSM49AwEHA0IABEWXQGuN0R/DPKccvRH+OUaIVKS0csGKojPy
    YnpCdbJF/z+Ihg0+nuhBLPI2qfpTDAeqSj2ftB8nJJqRfNS6vH6jUzBRMB0GA1Ud
    DgQWBBQdukbBmpqjaDqO93rDs7x00eTqJjAfBgNVHSMEGDAWgBQdukbBmpqjaDqO
    93rDs7x00eTqJjAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIA5Z
    sO4d+e0n1Sy2aFTdPt8bhErhk5UxJbwr22zCZyIpAiEAkI+TkxUGjDaQfRH9Nsxw
    kJvjSikuRpP/AIQlATSq8l8=
    -----END CERTIFICATE-----
- name: ouca-sts
  exchangeURL: https://sts.kube-sts.test/other/token
  image: local/sts-creds-sidecar:test
  caConfigMap: {name: ouca}
  containers: [app]
`

func injectors(t testing.TB) []config.Injector {
	t.Helper()
	c, err := config.Parse([]byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	return c.Injectors
}

func loadPod(t testing.TB, name string) *corev1.Pod {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "pods", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var p corev1.Pod
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

// mutate runs Select + Mutate as the admission handler does.
func mutate(t testing.TB, pod *corev1.Pod, native bool) (*corev1.Pod, error) {
	t.Helper()
	p := pod.DeepCopy()
	injs, err := Select(p, injectors(t), nil)
	if err != nil || len(injs) == 0 {
		return p, err
	}
	return p, Mutate(p, injs, native)
}

func TestGolden(t *testing.T) {
	for _, fixture := range []string{"reference-vault", "reference-sts", "init-containers", "vault-injected", "no-automount", "own-volume", "two-injectors", "lifetime"} {
		for _, native := range []bool{true, false} {
			name := fixture + map[bool]string{true: "-native", false: "-classic"}[native]
			t.Run(name, func(t *testing.T) {
				in := loadPod(t, fixture)
				out, err := mutate(t, in, native)
				if err != nil {
					t.Fatalf("mutate: %v", err)
				}
				got, err := yaml.Marshal(out)
				if err != nil {
					t.Fatal(err)
				}
				golden := filepath.Join("testdata", "golden", name+".yaml")
				if *update {
					if err := os.WriteFile(golden, got, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test -update)", err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("mutated %s differs from %s; run go test -update and review the diff", fixture, golden)
				}
				// mutate(mutate(p)) == mutate(p)
				again, err := mutate(t, out, native)
				if err != nil {
					t.Fatalf("second mutate: %v", err)
				}
				if !equality.Semantic.DeepEqual(again, out) {
					a, _ := yaml.Marshal(again)
					t.Fatalf("not idempotent; second pass:\n%s", a)
				}
			})
		}
	}
}

func TestReferencePod(t *testing.T) {
	out, err := mutate(t, loadPod(t, "reference-sts"), true)
	if err != nil {
		t.Fatal(err)
	}
	first := out.Spec.InitContainers[0]
	if first.Name != contract.ContainerName || first.RestartPolicy == nil || *first.RestartPolicy != corev1.ContainerRestartPolicyAlways || first.Lifecycle == nil || first.Lifecycle.PostStart == nil {
		t.Fatalf("initContainers[0] = %s, want the native sidecar with its postStart await", first.Name)
	}
	if sc := first.SecurityContext; *sc.RunAsUser != 100 || *sc.RunAsGroup != 1000 || !*sc.RunAsNonRoot || *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem {
		t.Fatalf("security context %+v", sc)
	}
	app := out.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range app.Env {
		env[e.Name] = e.Value
	}
	if env["VAULT_TOKEN_FILE"] != "/tokens/token.jwt" || env["VAULT_TOKEN_ENABLED"] != "auth_jwt_a8470dce" {
		t.Fatalf("app env %v", env)
	}
	var vol *corev1.Volume
	for i := range out.Spec.Volumes {
		if out.Spec.Volumes[i].Name == contract.SubjectVolumeName {
			vol = &out.Spec.Volumes[i]
		}
	}
	if vol == nil || vol.Projected.Sources[0].ServiceAccountToken.Audience != "https://sts.kube-sts.test/vault" || *vol.Projected.Sources[0].ServiceAccountToken.ExpirationSeconds != 600 {
		t.Fatalf("projected token volume %+v", vol)
	}
}

// TestReorderAfterForeignInitContainer simulates a webhook that prepends its
// init container after ours ran (Vault's injector does): on reinvocation our
// sidecar moves back to first place and the new containers get /tokens.
func TestReorderAfterForeignInitContainer(t *testing.T) {
	for _, native := range []bool{true, false} {
		out, err := mutate(t, loadPod(t, "reference-sts"), native)
		if err != nil {
			t.Fatal(err)
		}
		out.Spec.InitContainers = append([]corev1.Container{{Name: "vault-agent-init", Image: "vault"}}, out.Spec.InitContainers...)
		out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Name: "vault-agent", Image: "vault"})
		again, err := mutate(t, out, native)
		if err != nil {
			t.Fatal(err)
		}
		want := contract.ContainerName
		if !native {
			want = contract.InitContainerName
		}
		if got := again.Spec.InitContainers[0].Name; got != want {
			t.Fatalf("native=%v: initContainers[0] = %s after reinvocation, want %s", native, got, want)
		}
		if again.Spec.InitContainers[1].Name != "vault-agent-init" {
			t.Fatalf("native=%v: vault-agent-init not second: %s", native, again.Spec.InitContainers[1].Name)
		}
		for _, list := range [][]corev1.Container{again.Spec.InitContainers, again.Spec.Containers} {
			for _, c := range list {
				if strings.HasPrefix(c.Name, contract.ContainerName) {
					continue
				}
				n := 0
				for _, m := range c.VolumeMounts {
					if m.Name == contract.VolumeName && m.MountPath == contract.MountPath && m.ReadOnly {
						n++
					}
				}
				if n != 1 {
					t.Fatalf("native=%v: container %s has %d /tokens mounts, want 1", native, c.Name, n)
				}
			}
		}
		if n := len(again.Spec.InitContainers) + len(again.Spec.Containers); n != len(out.Spec.InitContainers)+len(out.Spec.Containers) {
			t.Fatalf("native=%v: containers duplicated", native)
		}
		if third, _ := mutate(t, again, native); !equality.Semantic.DeepEqual(third, again) {
			t.Fatalf("native=%v: not stable after reordering", native)
		}
	}
}

func TestRefusals(t *testing.T) {
	base := func(mutate func(*corev1.Pod)) *corev1.Pod {
		p := loadPod(t, "no-automount")
		mutate(p)
		return p
	}
	tests := map[string]struct {
		pod    *corev1.Pod
		wantIn string
	}{
		"non-numeric user": {pod: base(func(p *corev1.Pod) { p.Annotations = map[string]string{"tremolo.io/user": "vault"} }), wantIn: `annotation tremolo.io/user="vault" is not a number`},
		"negative group":   {pod: base(func(p *corev1.Pod) { p.Annotations = map[string]string{"tremolo.io/group": "-5"} }), wantIn: `annotation tremolo.io/group="-5" is negative`},
		"root user":        {pod: base(func(p *corev1.Pod) { p.Annotations = map[string]string{"tremolo.io/user": "0"} }), wantIn: "does not run as root"},
		"unknown injector": {pod: base(func(p *corev1.Pod) { p.Labels = map[string]string{"tremolo.io/aws-sts": "true"} }), wantIn: "names no kube-sts injector; the configured ones are: vault-sts, ouca-sts"},
		"injected for another set": {pod: base(func(p *corev1.Pod) {
			p.Labels["tremolo.io/ouca-sts"] = "true"
			p.Annotations = map[string]string{contract.InjectedAnnotation: "vault-sts"}
		}), wantIn: `already injected by kube-sts injector "vault-sts"; it cannot now use "vault-sts", "ouca-sts"`},
		"our volume name": {pod: base(func(p *corev1.Pod) { p.Spec.Volumes = []corev1.Volume{{Name: "sts-tokens"}} }), wantIn: `already has a volume named "sts-tokens"`},
		"our container name": {pod: base(func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "sts-creds-sidecar"})
		}), wantIn: `already has a container named "sts-creds-sidecar"`},
		"something at /tokens": {pod: base(func(p *corev1.Pod) {
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "mine", MountPath: "/tokens"}}
		}), wantIn: `container "app" already mounts volume "mine" at /tokens`},
		"something at /tokens/": {pod: base(func(p *corev1.Pod) {
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "mine", MountPath: "/tokens/"}}
		}), wantIn: `container "app" already mounts volume "mine" at /tokens`},
		"uid above MaxInt32": {pod: base(func(p *corev1.Pod) { p.Annotations = map[string]string{"tremolo.io/user": "2147483648"} }), wantIn: `annotation tremolo.io/user="2147483648" is larger than the largest id 2147483647`},
		"gid above MaxInt32": {pod: base(func(p *corev1.Pod) { p.Annotations = map[string]string{"tremolo.io/group": "4294967294"} }), wantIn: `annotation tremolo.io/group="4294967294" is larger than the largest id`},
		"create-volume false without a volume": {pod: base(func(p *corev1.Pod) { p.Annotations = map[string]string{"tremolo.io/create-volume": "false"} }),
			wantIn: `annotation tremolo.io/create-volume=false: the Pod must bring a volume named "sts-tokens"`},
		"create-volume false with a configMap": {pod: base(func(p *corev1.Pod) {
			p.Annotations = map[string]string{"tremolo.io/create-volume": "false"}
			p.Spec.Volumes = []corev1.Volume{{Name: "sts-tokens", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}}}
		}), wantIn: `volume "sts-tokens" must be writable by the sidecar: use an emptyDir, an ephemeral or a persistentVolumeClaim volume, not a configMap`},
		"create-volume false with a projected volume": {pod: base(func(p *corev1.Pod) {
			p.Annotations = map[string]string{"tremolo.io/create-volume": "false"}
			p.Spec.Volumes = []corev1.Volume{{Name: "sts-tokens", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{}}}}
		}), wantIn: `not a projected volume`},
		"create-volume not a boolean": {pod: base(func(p *corev1.Pod) { p.Annotations = map[string]string{"tremolo.io/create-volume": "no"} }),
			wantIn: `annotation tremolo.io/create-volume="no": use "true" or "false"`},
		"non-root not a boolean": {pod: base(func(p *corev1.Pod) { p.Annotations = map[string]string{"tremolo.io/non-root": "yes"} }),
			wantIn: `annotation tremolo.io/non-root="yes": use "true" or "false"`},
		"skip a container the Pod lacks": {pod: base(func(p *corev1.Pod) { p.Annotations = map[string]string{"kube-sts.io/skip-containers": "app, sidekick"} }),
			wantIn: `annotation kube-sts.io/skip-containers names container "sidekick", which the Pod does not have`},
		"ttl not a duration": {pod: base(func(p *corev1.Pod) { p.Annotations = map[string]string{contract.AnnotationTTL: "10 minutes"} }),
			wantIn: `annotation kube-sts.io/ttl="10 minutes" is not a duration such as 10m`},
		"ttl too short": {pod: base(func(p *corev1.Pod) { p.Annotations = map[string]string{contract.AnnotationTTL: "30s"} }),
			wantIn: `annotation kube-sts.io/ttl="30s" must be whole seconds from 1m to 24h`},
		"ttl in fractions": {pod: base(func(p *corev1.Pod) { p.Annotations = map[string]string{contract.AnnotationTTL: "90.5s"} }),
			wantIn: `must be whole seconds from 1m to 24h`},
		"other injector's pod": {pod: base(func(p *corev1.Pod) { p.Annotations = map[string]string{contract.InjectedAnnotation: "ouca-sts"} }), wantIn: `already injected by kube-sts injector "ouca-sts"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := mutate(t, tc.pod, true)
			d, ok := err.(*Denied)
			if !ok || !strings.Contains(d.Msg, tc.wantIn) {
				t.Fatalf("mutate = %v, want a denial containing %q", err, tc.wantIn)
			}
		})
	}
}

// TestGroupZeroAccepted: gid 0 is allowed (arbitrary-uid images share files
// through group 0); the sidecar still runs as a non-root uid.
func TestGroupZeroAccepted(t *testing.T) {
	p := loadPod(t, "no-automount")
	p.Annotations = map[string]string{"tremolo.io/user": "1001", "tremolo.io/group": "0"}
	out, err := mutate(t, p, true)
	if err != nil {
		t.Fatalf("gid 0 refused: %v", err)
	}
	sc := out.Spec.InitContainers[0].SecurityContext
	if *sc.RunAsUser != 1001 || *sc.RunAsGroup != 0 || !*sc.RunAsNonRoot {
		t.Fatalf("sidecar security context: uid %d gid %d nonroot %v", *sc.RunAsUser, *sc.RunAsGroup, *sc.RunAsNonRoot)
	}
}

func TestUnlabeledUntouched(t *testing.T) {
	for _, p := range []*corev1.Pod{loadPod(t, "reference-vault"), {}} {
		out, err := mutate(t, p, true)
		if err != nil || !equality.Semantic.DeepEqual(out, p) {
			t.Fatalf("an unlabeled Pod changed (%v)", err)
		}
	}
	// A label with another value does not select.
	p := loadPod(t, "no-automount")
	p.Labels["tremolo.io/vault-sts"] = "false"
	if injs, err := Select(p, injectors(t), nil); len(injs) != 0 || err != nil {
		t.Fatalf("Select = %v, %v", injs, err)
	}
}

// TestSelectFromServiceAccount: the ServiceAccount's kube-sts.io/inject
// names ask as labels do, a Pod's own label wins per injector, and an
// unknown name is refused with the ServiceAccount named.
func TestSelectFromServiceAccount(t *testing.T) {
	injs := injectors(t)
	names := func(found []*config.Injector) string { return Names(found) }
	tests := map[string]struct {
		labels  map[string]string
		fromSA  []string
		want    string
		refusal string
	}{
		"no label, no opt-in":                 {want: ""},
		"the ServiceAccount asks":             {fromSA: []string{"vault-sts"}, want: "vault-sts"},
		"the ServiceAccount asks for two":     {fromSA: []string{"ouca-sts", "vault-sts"}, want: "vault-sts,ouca-sts"},
		"the Pod opts out":                    {labels: map[string]string{"tremolo.io/vault-sts": "false"}, fromSA: []string{"vault-sts"}, want: ""},
		"any value but true opts out":         {labels: map[string]string{"tremolo.io/vault-sts": ""}, fromSA: []string{"vault-sts"}, want: ""},
		"the Pod opts out of one of two":      {labels: map[string]string{"tremolo.io/vault-sts": "false"}, fromSA: []string{"vault-sts", "ouca-sts"}, want: "ouca-sts"},
		"label and ServiceAccount add up":     {labels: map[string]string{"tremolo.io/ouca-sts": "true"}, fromSA: []string{"vault-sts"}, want: "vault-sts,ouca-sts"},
		"label and ServiceAccount agree":      {labels: map[string]string{"tremolo.io/vault-sts": "true"}, fromSA: []string{"vault-sts"}, want: "vault-sts"},
		"an unknown name is refused":          {fromSA: []string{"vault-sts", "nope-sts"}, refusal: `ServiceAccount app's annotation kube-sts.io/inject names "nope-sts", which is no kube-sts injector; the configured ones are: vault-sts, ouca-sts`},
		"an unknown name the Pod opts out of": {labels: map[string]string{"tremolo.io/nope-sts": "false"}, fromSA: []string{"nope-sts"}, want: ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: tc.labels}, Spec: corev1.PodSpec{ServiceAccountName: "app"}}
			found, err := Select(p, injs, tc.fromSA)
			if tc.refusal != "" {
				var d *Denied
				if !errors.As(err, &d) || !strings.Contains(d.Msg, tc.refusal) {
					t.Fatalf("Select = %v, %v; want the refusal %q", names(found), err, tc.refusal)
				}
				return
			}
			if err != nil || names(found) != tc.want {
				t.Fatalf("Select = %q, %v; want %q", names(found), err, tc.want)
			}
		})
	}
}

// FuzzAnnotations: any user/group/value annotations give a denial or a valid
// Pod, never a panic, and the result is idempotent.
func FuzzAnnotations(f *testing.F) {
	f.Add("100", "1000", "auth_jwt_a8470dce")
	f.Add("-1", "x", "")
	f.Add("99999999999999999999", " 7 ", "\x00")
	inj := injectors(f)
	f.Fuzz(func(t *testing.T, user, group, value string) {
		p := loadPod(t, "no-automount")
		p.Annotations = map[string]string{"tremolo.io/user": user, "tremolo.io/group": group, "tremolo.io/vault-sts": value}
		err := Mutate(p, []*config.Injector{&inj[0]}, true)
		if err != nil {
			if _, ok := err.(*Denied); !ok {
				t.Fatalf("error is %T, want *Denied", err)
			}
			return
		}
		sc := p.Spec.InitContainers[0].SecurityContext
		if *sc.RunAsUser <= 0 || *sc.RunAsGroup < 0 {
			t.Fatalf("accepted uid %d gid %d", *sc.RunAsUser, *sc.RunAsGroup)
		}
		before := p.DeepCopy()
		if err := Mutate(p, []*config.Injector{&inj[0]}, true); err != nil || !equality.Semantic.DeepEqual(before, p) {
			t.Fatalf("not idempotent (%v)", err)
		}
	})
}

// TestOwnVolume: with create-volume "false" the Pod's own volume is used as
// it is (not replaced by an in-memory one), the skipped container gets
// neither the mount nor the env, and non-root changes nothing: the sidecar
// always runs with runAsNonRoot.
func TestOwnVolume(t *testing.T) {
	for _, native := range []bool{true, false} {
		out, err := mutate(t, loadPod(t, "own-volume"), native)
		if err != nil {
			t.Fatal(err)
		}
		var tokens []corev1.Volume
		for _, v := range out.Spec.Volumes {
			if v.Name == contract.VolumeName {
				tokens = append(tokens, v)
			}
		}
		if len(tokens) != 1 || tokens[0].EmptyDir == nil || tokens[0].EmptyDir.Medium != "" {
			t.Fatalf("native=%v: token volumes %+v; want the Pod's own disk-backed emptyDir, once", native, tokens)
		}
		for _, c := range out.Spec.Containers {
			mounted := slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == contract.VolumeName })
			env := slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "VAULT_TOKEN_FILE" })
			switch c.Name {
			case "log-shipper":
				if mounted || env {
					t.Errorf("native=%v: the skipped container got mount %v env %v", native, mounted, env)
				}
			case "app":
				if !mounted || !env {
					t.Errorf("native=%v: app got mount %v env %v", native, mounted, env)
				}
			}
		}
		for _, c := range append(slices.Clone(out.Spec.InitContainers), out.Spec.Containers...) {
			if strings.HasPrefix(c.Name, "sts-creds") && (c.SecurityContext == nil || !*c.SecurityContext.RunAsNonRoot) {
				t.Errorf("native=%v: %s without runAsNonRoot", native, c.Name)
			}
		}
	}
}

// TestTwoInjectors: the order of the configuration decides which injector
// keeps /tokens/token.jwt; removing one label leaves exactly the
// single-injector Pod; two injectors setting one env var in one container
// are refused, naming both.
func TestTwoInjectors(t *testing.T) {
	injs := injectors(t)
	pod := loadPod(t, "two-injectors")

	// Swapped configuration order: ouca-sts is first now.
	swapped := []*config.Injector{&injs[1], &injs[0]}
	p := pod.DeepCopy()
	if err := Mutate(p, swapped, true); err != nil {
		t.Fatal(err)
	}
	app := p.Spec.Containers[0]
	if got := env(app, "STS_TOKEN_FILE"); got != contract.TokenPath {
		t.Errorf("first injector ouca-sts: STS_TOKEN_FILE=%q, want %s", got, contract.TokenPath)
	}
	if got := env(app, "VAULT_TOKEN_FILE"); got != contract.FurtherTokenPath("vault-sts") {
		t.Errorf("further injector vault-sts: VAULT_TOKEN_FILE=%q, want %s", got, contract.FurtherTokenPath("vault-sts"))
	}
	sc := p.Spec.InitContainers[0]
	var further []contract.Token
	if err := json.Unmarshal([]byte(env(sc, contract.EnvTokens)), &further); err != nil {
		t.Fatalf("%s: %v", contract.EnvTokens, err)
	}
	// The test container is vault-sts's only: it reads a copy in group 1.
	want := []contract.Token{{Name: "vault-sts", ExchangeURL: injs[0].ExchangeURL, SubjectTokenFile: "/var/run/secrets/kube-sts/vault-sts.token",
		OutputFile: "/tokens/vault-sts.jwt", Copies: []string{"/var/run/kube-sts/tokens-1/vault-sts.jwt"}, CAPEM: injs[0].CAPEM}}
	if !equality.Semantic.DeepEqual(further, want) {
		t.Errorf("further tokens %+v, want %+v", further, want)
	}
	if env(sc, contract.EnvCAFile) != contract.CAMountPath+"/ca.crt" || env(sc, contract.EnvExchangeURL) != injs[1].ExchangeURL {
		t.Errorf("the first token's settings are not ouca-sts's: %v", sc.Env)
	}
	if n := len(p.Spec.InitContainers) + len(p.Spec.Containers); n != 3 {
		t.Errorf("%d containers, want the Pod's two and one sidecar", n)
	}
	// Each container sees only its injectors' tokens: app (both) mounts the
	// volume with every token, test (vault-sts only) its group's.
	for c, want := range map[int]string{0: contract.VolumeName, 1: contract.GroupVolumeName(1)} {
		got := p.Spec.Containers[c].VolumeMounts
		if len(got) != 1 || got[0].Name != want || got[0].MountPath != contract.MountPath || !got[0].ReadOnly {
			t.Errorf("container %s mounts %+v, want only %s at %s", p.Spec.Containers[c].Name, got, want, contract.MountPath)
		}
	}
	if env(sc, contract.EnvOutputCopies) != "" {
		t.Errorf("ouca-sts's token is copied to %q, but no container of a group reads it", env(sc, contract.EnvOutputCopies))
	}
	// Injecting again changes nothing (the groups are found again by name).
	again := p.DeepCopy()
	if err := Mutate(again, swapped, true); err != nil || !equality.Semantic.DeepEqual(again, p) {
		t.Errorf("a second injection changed the Pod (%v)", err)
	}

	// Without the ouca-sts label the Pod is the single-injector Pod.
	one := pod.DeepCopy()
	delete(one.Labels, "tremolo.io/ouca-sts")
	got, err := mutate(t, one, true)
	if err != nil {
		t.Fatal(err)
	}
	single := pod.DeepCopy()
	delete(single.Labels, "tremolo.io/ouca-sts")
	if err := Mutate(single, []*config.Injector{&injs[0]}, true); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(got, single) || env(got.Spec.InitContainers[0], contract.EnvTokens) != "" {
		t.Error("a Pod labeled for one injector is not the single-injector Pod")
	}

	// Same env var from two injectors in one container.
	clash := injs[1]
	clash.TokenPathEnv, clash.Containers = "VAULT_TOKEN_FILE", nil
	err = Mutate(pod.DeepCopy(), []*config.Injector{&injs[0], &clash}, true)
	if d, ok := err.(*Denied); !ok || !strings.Contains(d.Msg, `injectors "vault-sts" and "ouca-sts" would both set VAULT_TOKEN_FILE in container "app"`) {
		t.Fatalf("clashing env vars: %v", err)
	}
	// The Pod's own value wins and is no clash.
	own := pod.DeepCopy()
	own.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "VAULT_TOKEN_FILE", Value: "/mine"}}
	own.Spec.Containers = own.Spec.Containers[:1]
	if err := Mutate(own, []*config.Injector{&injs[0], &clash}, true); err != nil || env(own.Spec.Containers[0], "VAULT_TOKEN_FILE") != "/mine" {
		t.Fatalf("the Pod's own env var: %v, %v", err, own.Spec.Containers[0].Env)
	}
}

func env(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// TestReadinessProbe: the sidecar has no readiness probe by default; with
// readinessProbe: true it runs sts-creds-sidecar probe (which checks every
// token of the Pod), in both sidecar modes; an injector without it drops it
// for a Pod it shares with injectors that ask for it.
func TestReadinessProbe(t *testing.T) {
	sidecarOf := func(p *corev1.Pod, native bool) corev1.Container {
		cs := p.Spec.Containers
		if native {
			cs = p.Spec.InitContainers
		}
		for _, c := range cs {
			if c.Name == contract.ContainerName {
				return c
			}
		}
		t.Fatal("no sidecar")
		return corev1.Container{}
	}
	for _, native := range []bool{true, false} {
		injs := injectors(t)
		p := loadPod(t, "two-injectors")
		if err := Mutate(p, []*config.Injector{&injs[0], &injs[1]}, native); err != nil {
			t.Fatal(err)
		}
		if rp := sidecarOf(p, native).ReadinessProbe; rp != nil {
			t.Fatalf("native=%v: a readiness probe by default: %+v", native, rp)
		}

		on := true
		injs[0].ReadinessProbe, injs[1].ReadinessProbe = &on, &on
		p = loadPod(t, "two-injectors")
		if err := Mutate(p, []*config.Injector{&injs[0], &injs[1]}, native); err != nil {
			t.Fatal(err)
		}
		rp := sidecarOf(p, native).ReadinessProbe
		if rp == nil || rp.Exec == nil || !slices.Equal(rp.Exec.Command, []string{contract.SidecarBinary, contract.ModeProbe}) || rp.PeriodSeconds != 10 {
			t.Fatalf("native=%v: readiness probe %+v", native, rp)
		}
		if native && p.Spec.InitContainers[0].Lifecycle == nil {
			t.Fatal("the native sidecar lost its postStart await")
		}

		off := false
		injs[1].ReadinessProbe = &off
		p = loadPod(t, "two-injectors")
		if err := Mutate(p, []*config.Injector{&injs[0], &injs[1]}, native); err != nil {
			t.Fatal(err)
		}
		if rp := sidecarOf(p, native).ReadinessProbe; rp != nil {
			t.Fatalf("native=%v: readinessProbe: false on one injector of two, yet the sidecar has %+v", native, rp)
		}
	}
}
