package admit

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/kube-sts/kube-sts/shared/contract"
	"github.com/kube-sts/kube-sts/webhook/internal/config"
	"github.com/kube-sts/kube-sts/webhook/internal/inject"
)

var update = flag.Bool("update", false, "rewrite the golden patches")

// fixtures are the inject package's labeled Pods: the reference one and the
// edge cases (reference-vault, unlabeled, gets no patch at all).
var fixtures = []string{"reference-sts", "init-containers", "vault-injected", "no-automount"}

// future is what a newer API server might send: a field k8s.io/api does not
// know at every level a Pod has.
var future = map[string]any{"futureField": map[string]any{"enabled": true, "level": "strict"}}

func rawFixture(t *testing.T, name string, unknown bool) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "inject", "testdata", "pods", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	if !unknown {
		return js
	}
	var pod map[string]any
	if err := json.Unmarshal(js, &pod); err != nil {
		t.Fatal(err)
	}
	addFuture(pod)
	spec := pod["spec"].(map[string]any)
	addFuture(spec)
	addFuture(pod["metadata"].(map[string]any))
	sc, _ := spec["securityContext"].(map[string]any)
	if sc == nil {
		sc = map[string]any{}
		spec["securityContext"] = sc
	}
	addFuture(sc)
	for _, list := range []string{"containers", "initContainers", "volumes"} {
		items, _ := spec[list].([]any)
		for _, it := range items {
			m := it.(map[string]any)
			addFuture(m)
			if list != "volumes" {
				csc, _ := m["securityContext"].(map[string]any)
				if csc == nil {
					csc = map[string]any{}
					m["securityContext"] = csc
				}
				addFuture(csc)
			}
		}
	}
	out, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func addFuture(m map[string]any) {
	for k, v := range future {
		m[k] = v
	}
}

func goldenHandler(t *testing.T, native bool) *Handler {
	t.Helper()
	cfg, err := config.Parse([]byte(`injectors: [{name: vault-sts, exchangeURL: "https://sts.test/vault/token", image: sidecar:1, tokenPathEnv: VAULT_TOKEN_FILE}]`))
	if err != nil {
		t.Fatal(err)
	}
	h := handler(t)
	h.Injectors = cfg.Injectors
	h.Native = map[string]bool{"vault-sts": native}
	return h
}

func admitRaw(t *testing.T, h *Handler, raw []byte) admission.Response {
	t.Helper()
	resp := h.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: admissionv1.Create, Namespace: "test-vault",
		Kind:   metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Object: runtime.RawExtension{Raw: raw},
	}})
	if !resp.Allowed {
		t.Fatalf("refused: %v", resp.Result)
	}
	return resp
}

func apply(t *testing.T, raw []byte, resp admission.Response) []byte {
	t.Helper()
	if len(resp.Patches) == 0 {
		return raw
	}
	ops, err := json.Marshal(resp.Patches)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(ops)
	if err != nil {
		t.Fatal(err)
	}
	out, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("the patch does not apply to the admitted Pod: %v\n%s", err, ops)
	}
	return out
}

// futurePaths lists, for a Pod document, where futureField sits: by element
// name, not position, since injection shifts lists.
func futurePaths(t *testing.T, doc []byte) []string {
	t.Helper()
	var pod map[string]any
	if err := json.Unmarshal(doc, &pod); err != nil {
		t.Fatal(err)
	}
	var paths []string
	var walk func(p string, v any)
	walk = func(p string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				if k == "futureField" {
					if !reflect.DeepEqual(c, future["futureField"]) {
						t.Errorf("%s.futureField changed to %v", p, c)
					}
					paths = append(paths, p)
					continue
				}
				walk(p+"."+k, c)
			}
		case []any:
			for _, c := range x {
				id, _ := identity(c)
				walk(p+"["+strings.ReplaceAll(id, "\x00", "|")+"]", c)
			}
		}
	}
	walk("", pod)
	return sortStrings(paths)
}

func sortStrings(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// mutatePod is what the pure mutation makes of the Pod in raw.
func mutatePod(t *testing.T, h *Handler, raw []byte, native bool) *corev1.Pod {
	t.Helper()
	pod := decodePod(t, raw)
	inj, err := inject.Select(pod, h.Injectors, nil)
	if err != nil || len(inj) == 0 {
		t.Fatalf("select: %v", err)
	}
	if err := inject.Mutate(pod, inj, native); err != nil {
		t.Fatal(err)
	}
	return pod
}

func decodePod(t *testing.T, doc []byte) *corev1.Pod {
	t.Helper()
	var p corev1.Pod
	if err := json.Unmarshal(doc, &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

// TestUnknownFieldsSurvive: a Pod from a newer API server, with fields that
// k8s.io/api does not know at Pod, metadata, spec, container, init
// container, volume and securityContext level, keeps every one of them; the
// patch removes none; it injects exactly what it injects into the same Pod
// without them; and admitting the result again changes nothing.
func TestUnknownFieldsSurvive(t *testing.T) {
	for _, fixture := range fixtures {
		for _, native := range []bool{true, false} {
			name := fixture + map[bool]string{true: "-native", false: "-classic"}[native]
			t.Run(name, func(t *testing.T) {
				h := goldenHandler(t, native)
				raw := rawFixture(t, fixture, true)
				resp := admitRaw(t, h, raw)
				for _, op := range resp.Patches {
					if op.Operation == "remove" || strings.Contains(op.Path, "futureField") {
						t.Errorf("patch touches what injection did not add: %s %s", op.Operation, op.Path)
					}
				}
				out := apply(t, raw, resp)
				if got, want := futurePaths(t, out), futurePaths(t, raw); !reflect.DeepEqual(got, want) {
					t.Fatalf("unknown fields lost or moved:\n got %v\nwant %v", got, want)
				}

				// Exactly what Mutate makes of the Pod.
				want := mutatePod(t, h, raw, native)
				if got := decodePod(t, out); !equality.Semantic.DeepEqual(got, want) {
					t.Fatalf("the patched Pod is not the mutated Pod:\n%s", diffJSON(got, want))
				}
				if got := decodePod(t, out); got.Spec.InitContainers[0].Name != map[bool]string{true: contract.ContainerName, false: contract.InitContainerName}[native] {
					t.Fatalf("the sidecar is not first: %s", got.Spec.InitContainers[0].Name)
				}

				// Re-invocation (reinvocationPolicy: IfNeeded) is a no-op.
				if again := admitRaw(t, h, out); len(again.Patches) != 0 {
					t.Fatalf("re-invocation patched again: %+v", again.Patches)
				}
				checkGolden(t, name, resp)
			})
		}
	}
}

// TestReinvocationAfterAnotherWebhook: Vault's injector puts its init
// container in front of ours and carries a field we do not know; on
// re-invocation ours goes back in front and theirs keeps the field.
func TestReinvocationAfterAnotherWebhook(t *testing.T) {
	h := goldenHandler(t, true)
	raw := rawFixture(t, "reference-sts", true)
	injected := apply(t, raw, admitRaw(t, h, raw))
	var pod map[string]any
	if err := json.Unmarshal(injected, &pod); err != nil {
		t.Fatal(err)
	}
	spec := pod["spec"].(map[string]any)
	agent := map[string]any{"name": "vault-agent-init", "image": "vault:1", "futureField": future["futureField"]}
	spec["initContainers"] = append([]any{agent}, spec["initContainers"].([]any)...)
	after, _ := json.Marshal(pod)

	resp := admitRaw(t, h, after)
	out := apply(t, after, resp)
	got := decodePod(t, out)
	if got.Spec.InitContainers[0].Name != contract.ContainerName || got.Spec.InitContainers[1].Name != "vault-agent-init" {
		t.Fatalf("init containers after re-invocation: %s, %s", got.Spec.InitContainers[0].Name, got.Spec.InitContainers[1].Name)
	}
	if gotPaths, want := futurePaths(t, out), futurePaths(t, after); !reflect.DeepEqual(gotPaths, want) {
		t.Fatalf("unknown fields lost:\n got %v\nwant %v", gotPaths, want)
	}
	if again := admitRaw(t, h, out); len(again.Patches) != 0 {
		t.Fatalf("a third invocation patched again: %+v", again.Patches)
	}
}

func TestUnlabeledPodWithUnknownFields(t *testing.T) {
	if resp := admitRaw(t, goldenHandler(t, true), rawFixture(t, "reference-vault", true)); len(resp.Patches) != 0 {
		t.Fatalf("an unlabeled Pod was patched: %+v", resp.Patches)
	}
}

func checkGolden(t *testing.T, name string, resp admission.Response) {
	t.Helper()
	got, err := json.MarshalIndent(resp.Patches, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	file := filepath.Join("testdata", "patches", name+".json")
	if *update {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run go test -update once)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("patch differs from %s:\n%s", file, got)
	}
}

// TestPatchMatchesDiffWithoutUnknownFields: on a Pod that has no unknown
// field, applying our patch gives the same Pod as the plain diff of before
// and after that controller-runtime computes (minus the zero values the Go
// type invents, such as resources: {}, which ours does not add).
func TestPatchMatchesDiffWithoutUnknownFields(t *testing.T) {
	for _, fixture := range fixtures {
		t.Run(fixture, func(t *testing.T) {
			h := goldenHandler(t, true)
			raw := rawFixture(t, fixture, false)
			out := apply(t, raw, admitRaw(t, h, raw))
			mutated, _ := json.Marshal(mutatePod(t, h, raw, true))
			want := apply(t, raw, admission.PatchResponseFromRaw(raw, mutated))
			if got, want := decodePod(t, out), decodePod(t, want); !equality.Semantic.DeepEqual(got, want) {
				t.Fatalf("Pods differ:\n%s", diffJSON(got, want))
			}
		})
	}
}

func diffJSON(got, want *corev1.Pod) string {
	g, _ := json.Marshal(got.Spec)
	w, _ := json.Marshal(want.Spec)
	return " got " + string(g) + "\nwant " + string(w)
}

// TestChildEscapes: a key with "~" or "/" (an annotation such as
// tremolo.io/user) becomes an RFC 6901 reference token.
func TestChildEscapes(t *testing.T) {
	for token, want := range map[string]string{
		"name":            "/metadata/name",
		"tremolo.io/user": "/metadata/tremolo.io~1user",
		"a~b/c":           "/metadata/a~0b~1c",
		"~1":              "/metadata/~01",
	} {
		if got := child("/metadata", token); got != want {
			t.Errorf("child(%q) = %q, want %q", token, got, want)
		}
	}
}
