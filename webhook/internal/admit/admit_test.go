package admit

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/kube-sts/kube-sts/shared/contract"
	"github.com/kube-sts/kube-sts/webhook/internal/config"
)

func handler(t testing.TB) *Handler {
	cfg, err := config.Parse([]byte(`injectors: [{name: vault-sts, exchangeURL: "https://sts.test/vault/token", image: sidecar:1}]`))
	if err != nil {
		t.Fatal(err)
	}
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	return &Handler{Injectors: cfg.Injectors, Native: map[string]bool{"vault-sts": true}, Decoder: admission.NewDecoder(s), Log: logr.Discard()}
}

func request(t testing.TB, op admissionv1.Operation, pod *corev1.Pod) admission.Request {
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: op, Namespace: "test-vault",
		Kind:   metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Object: runtime.RawExtension{Raw: raw},
	}}
}

// threePods: a labeled Pod, the same with a bad annotation, and unlabeled.
func threePods() (labeled, bad, plain *corev1.Pod) {
	labeled = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{"tremolo.io/vault-sts": "true"}},
		Spec: corev1.PodSpec{ServiceAccountName: "sa", Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	bad = labeled.DeepCopy()
	bad.Annotations = map[string]string{"tremolo.io/group": "staff"}
	plain = labeled.DeepCopy()
	plain.Labels = nil
	return labeled, bad, plain
}

func TestHandle(t *testing.T) {
	h := handler(t)
	labeled, bad, plain := threePods()

	resp := h.Handle(context.Background(), request(t, admissionv1.Create, labeled))
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Fatalf("labeled pod: allowed=%v patches=%d", resp.Allowed, len(resp.Patches))
	}
	for _, p := range resp.Patches {
		// Our sidecar goes in whole; nothing replaces the user's containers array.
		if p.Path == "/spec/containers" && p.Operation == "replace" {
			t.Fatalf("patch replaces the containers array: %+v", p)
		}
	}
	resp = h.Handle(context.Background(), request(t, admissionv1.Create, bad))
	if resp.Allowed || !strings.Contains(resp.Result.Message, `annotation tremolo.io/group="staff" is not a number`) {
		t.Fatalf("bad annotation: allowed=%v message=%q", resp.Allowed, resp.Result.Message)
	}
	resp = h.Handle(context.Background(), request(t, admissionv1.Create, plain))
	if !resp.Allowed || len(resp.Patches) != 0 {
		t.Fatalf("unlabeled pod: allowed=%v patches=%d", resp.Allowed, len(resp.Patches))
	}
	resp = h.Handle(context.Background(), request(t, admissionv1.Update, labeled))
	if !resp.Allowed || len(resp.Patches) != 0 {
		t.Fatalf("update: allowed=%v patches=%d", resp.Allowed, len(resp.Patches))
	}
	req := request(t, admissionv1.Create, labeled)
	req.Object.Raw = []byte("{not json")
	if resp := h.Handle(context.Background(), req); resp.Allowed {
		t.Fatal("an undecodable Pod was allowed")
	}
}

// TestMetrics: every admission is counted once under its injector and result,
// and timed; a second registration on the same registry is an error, not a
// silent second set of collectors.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	h := handler(t)
	h.Metrics = m
	labeled, bad, plain := threePods()
	for _, p := range []*corev1.Pod{labeled, labeled, bad, plain} {
		h.Handle(context.Background(), request(t, admissionv1.Create, p))
	}
	for _, c := range []struct {
		injector, result string
		want             float64
	}{{"vault-sts", "injected", 2}, {"vault-sts", "denied", 1}, {"", "skipped", 1}} {
		if got := testutil.ToFloat64(m.admissions.WithLabelValues(c.injector, c.result)); got != c.want {
			t.Errorf("admissions{injector=%q,result=%q} = %v, want %v", c.injector, c.result, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.duration); n != 2 {
		t.Errorf("duration series = %d, want 2 (vault-sts and the unlabeled Pod's)", n)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Error("registering the webhook's metrics twice on one registry succeeded")
	}
	var none *Metrics
	none.admission("x", "y", time.Millisecond) // nil-safe: must not panic
}

// BenchmarkHandle is a whole admission in process: decode, select, mutate,
// marshal and compute the JSON patch.
func BenchmarkHandle(b *testing.B) {
	h := handler(b)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{"tremolo.io/vault-sts": "true"}},
		Spec: corev1.PodSpec{ServiceAccountName: "sa", Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	req := request(b, admissionv1.Create, pod)
	var resp admission.Response
	b.ReportAllocs()
	for b.Loop() {
		if resp = h.Handle(context.Background(), req); !resp.Allowed {
			b.Fatal(resp.Result.Message)
		}
	}
	b.StopTimer()
	// A no-op handler would look fast: the measured answer must inject.
	sidecarFirst := false
	for _, op := range resp.Patches {
		if op.Operation == "add" && (op.Path == "/spec/initContainers" || op.Path == "/spec/initContainers/0") {
			raw, _ := json.Marshal(op.Value)
			sidecarFirst = strings.Contains(string(raw), `"name":"`+contract.ContainerName+`"`)
		}
	}
	if len(resp.Patches) == 0 || !sidecarFirst {
		b.Fatalf("the benchmarked admission did not add the sidecar first: %+v", resp.Patches)
	}
}

// BenchmarkHandleFloor is BenchmarkHandle's floor, on the same request: a
// handler that decodes the Pod as any controller-runtime webhook does
// (admission.Decoder) and answers allowed with no patch (no-op), or with the
// very patches sts-webhook answers, computed once before the loop
// (static-patch: what an admission costs that knows its answer). The
// difference to BenchmarkHandle is our selection, mutation and patch.
func BenchmarkHandleFloor(b *testing.B) {
	h := handler(b)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{"tremolo.io/vault-sts": "true"}},
		Spec: corev1.PodSpec{ServiceAccountName: "sa", Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	req := request(b, admissionv1.Create, pod)
	ours := h.Handle(context.Background(), req)
	if !ours.Allowed || len(ours.Patches) == 0 {
		b.Fatalf("sts-webhook's answer to precompute: %+v", ours.Result)
	}
	for _, floor := range []struct {
		name   string
		answer admission.Response
	}{
		{"no-op", admission.Allowed("")},
		{"static-patch", ours},
	} {
		b.Run(floor.name, func(b *testing.B) {
			var resp admission.Response
			b.ReportAllocs()
			for b.Loop() {
				var p corev1.Pod
				if err := h.Decoder.Decode(req, &p); err != nil || p.Name != "p" {
					b.Fatal(err)
				}
				resp = floor.answer
			}
			b.StopTimer()
			if !resp.Allowed || len(resp.Patches) != len(floor.answer.Patches) {
				b.Fatalf("the floor's answer: %+v", resp)
			}
		})
	}
}

func selfSignedPEM(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestCAFile: the bundle in caFile reaches the sidecar inline, follows a
// renewal of the file, and a missing or bogus file refuses the Pod with the
// path in the message instead of starting a sidecar that cannot connect.
func TestCAFile(t *testing.T) {
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.crt")
	cfg, err := config.Parse([]byte(`injectors: [{name: vault-sts, exchangeURL: "https://sts.test/vault/token", image: sidecar:1, caFile: ` + caFile + `}]`))
	if err != nil {
		t.Fatal(err)
	}
	h := handler(t)
	h.Injectors = cfg.Injectors
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{"tremolo.io/vault-sts": "true"}},
		Spec: corev1.PodSpec{ServiceAccountName: "sa", Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	admit := func() (patches string, resp admission.Response) {
		t.Helper()
		resp = h.Handle(context.Background(), request(t, admissionv1.Create, pod))
		raw, err := json.Marshal(resp.Patches)
		if err != nil {
			t.Fatal(err)
		}
		return string(raw), resp
	}
	// has tells whether the patch hands the sidecar this bundle inline.
	has := func(patches string, ca []byte) bool {
		quoted, _ := json.Marshal(string(ca))
		return strings.Contains(patches, contract.EnvCAPEM) && strings.Contains(patches, string(quoted))
	}

	if _, resp := admit(); resp.Allowed || !strings.Contains(resp.Result.Message, caFile) {
		t.Fatalf("missing caFile: allowed=%v message=%q", resp.Allowed, resp.Result.Message)
	}
	if err := os.WriteFile(caFile, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, resp := admit(); resp.Allowed || !strings.Contains(resp.Result.Message, "no PEM certificate") {
		t.Fatalf("bogus caFile: allowed=%v message=%q", resp.Allowed, resp.Result.Message)
	}
	first := selfSignedPEM(t, "first CA")
	if err := os.WriteFile(caFile, first, 0o644); err != nil {
		t.Fatal(err)
	}
	if patches, resp := admit(); !resp.Allowed || !has(patches, first) {
		t.Fatalf("caFile not handed in: allowed=%v patches=%s", resp.Allowed, patches)
	}
	renewed := selfSignedPEM(t, "renewed CA with a longer name")
	if err := os.WriteFile(caFile, renewed, 0o644); err != nil {
		t.Fatal(err)
	}
	if patches, _ := admit(); !has(patches, renewed) || has(patches, first) {
		t.Fatalf("renewed caFile not picked up: %s", patches)
	}
	if h.Injectors[0].CAFile != caFile || h.Injectors[0].CAPEM != "" {
		t.Fatalf("the configured injector was changed: %+v", h.Injectors[0])
	}
}

// TestHandleTwoInjectors: one admission injects both; the sidecar is native
// only when every selected injector would be, and the metrics name both.
func TestHandleTwoInjectors(t *testing.T) {
	cfg, err := config.Parse([]byte(`injectors:
- {name: vault-sts, exchangeURL: "https://sts.test/vault/token", image: sidecar:1, tokenPathEnv: VAULT_TOKEN_FILE, valueEnv: VAULT_TOKEN_ENABLED}
- {name: aws-role, exchangeURL: "https://sts.test/aws/token", image: sidecar:1, tokenPathEnv: AWS_WEB_IDENTITY_TOKEN_FILE, valueEnv: AWS_ROLE_ARN}
`))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	h := handler(t)
	h.Injectors, h.Metrics = cfg.Injectors, m
	labeled, _, _ := threePods()
	labeled.Labels["tremolo.io/aws-role"] = "true"
	for _, tc := range []struct {
		native     map[string]bool
		wantNative bool
	}{
		{map[string]bool{"vault-sts": true, "aws-role": true}, true},
		{map[string]bool{"vault-sts": true, "aws-role": false}, false},
	} {
		h.Native = tc.native
		resp := h.Handle(context.Background(), request(t, admissionv1.Create, labeled))
		if !resp.Allowed {
			t.Fatalf("two injectors: %s", resp.Result.Message)
		}
		sidecars, native := 0, false
		for _, p := range resp.Patches {
			if p.Operation != "add" || (p.Path != "/spec/initContainers" && p.Path != "/spec/containers/1") {
				continue
			}
			data, _ := json.Marshal(p.Value)
			for _, c := range decodeContainers(t, data) {
				if c.Name == contract.ContainerName {
					sidecars++
					native = c.RestartPolicy != nil
				}
			}
		}
		if sidecars != 1 || native != tc.wantNative {
			t.Errorf("native %v: %d sidecars, native %v; want 1, %v", tc.native, sidecars, native, tc.wantNative)
		}
	}
	if got := testutil.ToFloat64(m.admissions.WithLabelValues("vault-sts,aws-role", "injected")); got != 2 {
		t.Errorf("admissions{injector=vault-sts,aws-role,result=injected} = %v, want 2", got)
	}
}

// decodeContainers reads a patch value that is a container or a list of them.
func decodeContainers(t *testing.T, data []byte) []corev1.Container {
	t.Helper()
	var list []corev1.Container
	if json.Unmarshal(data, &list) == nil {
		return list
	}
	var one corev1.Container
	if err := json.Unmarshal(data, &one); err != nil {
		t.Fatalf("patch value %s: %v", data, err)
	}
	return []corev1.Container{one}
}

// fakeServiceAccounts answers from a map of namespace/name to the
// kube-sts.io/inject annotation, and counts what it is asked.
type fakeServiceAccounts struct {
	inject map[string]string
	err    error
	asked  []string
}

func (f *fakeServiceAccounts) InjectAnnotation(_ context.Context, namespace, name string) (string, error) {
	f.asked = append(f.asked, namespace+"/"+name)
	return f.inject[namespace+"/"+name], f.err
}

// TestServiceAccountOptIn: behind the ServiceAccount entry, a Pod whose
// ServiceAccount names an injector gets it; a Pod's label wins; a Pod that
// asks for nothing is allowed from its labels and ServiceAccount alone
// (the whole Pod is not decoded: the decoder here would panic); a
// ServiceAccount that cannot be read fails the admission; the labels-only
// handler never reads ServiceAccounts.
func TestServiceAccountOptIn(t *testing.T) {
	labeled, _, plain := threePods() // ServiceAccount "sa"
	optedOut := labeled.DeepCopy()
	optedOut.Labels["tremolo.io/vault-sts"] = "false"
	otherSA := plain.DeepCopy()
	otherSA.Spec.ServiceAccountName = "other"
	noSA := plain.DeepCopy()
	noSA.Spec.ServiceAccountName = ""
	sas := &fakeServiceAccounts{inject: map[string]string{"test-vault/sa": "vault-sts", "test-vault/default": " vault-sts ,", "test-vault/typo": "vault"}}

	h := handler(t)
	h.ServiceAccounts = sas
	for name, tc := range map[string]struct {
		pod      *corev1.Pod
		injected bool
	}{
		"unlabeled, ServiceAccount opts in":       {plain, true},
		"no serviceAccountName means default":     {noSA, true},
		"labeled and opted in":                    {labeled, true},
		"the Pod's label false opts out":          {optedOut, false},
		"unlabeled, ServiceAccount not annotated": {otherSA, false},
	} {
		t.Run(name, func(t *testing.T) {
			resp := h.Handle(context.Background(), request(t, admissionv1.Create, tc.pod))
			if !resp.Allowed || (len(resp.Patches) > 0) != tc.injected {
				t.Fatalf("allowed=%v patches=%d (%s); want injected=%v", resp.Allowed, len(resp.Patches), resp.Result.Message, tc.injected)
			}
		})
	}

	t.Run("a Pod that asks for nothing is answered before the Pod is decoded", func(t *testing.T) {
		fast := handler(t)
		fast.ServiceAccounts, fast.Decoder = sas, nil // Decode would panic
		resp := fast.Handle(context.Background(), request(t, admissionv1.Create, otherSA))
		if !resp.Allowed || len(resp.Patches) != 0 || !strings.Contains(resp.Result.Message, "no ServiceAccount opt-in") {
			t.Fatalf("allowed=%v patches=%d message=%q", resp.Allowed, len(resp.Patches), resp.Result.Message)
		}
	})
	t.Run("an unknown injector in the annotation is refused", func(t *testing.T) {
		typo := plain.DeepCopy()
		typo.Spec.ServiceAccountName = "typo"
		resp := h.Handle(context.Background(), request(t, admissionv1.Create, typo))
		if resp.Allowed || !strings.Contains(resp.Result.Message, `ServiceAccount typo's annotation kube-sts.io/inject names "vault"`) {
			t.Fatalf("allowed=%v message=%q", resp.Allowed, resp.Result.Message)
		}
	})
	t.Run("a ServiceAccount that cannot be read fails the admission", func(t *testing.T) {
		broken := handler(t)
		broken.ServiceAccounts = &fakeServiceAccounts{err: errors.New("connection refused")}
		resp := broken.Handle(context.Background(), request(t, admissionv1.Create, plain))
		if resp.Allowed || resp.Result.Code != http.StatusServiceUnavailable || !strings.Contains(resp.Result.Message, "test-vault/sa") {
			t.Fatalf("allowed=%v code=%d message=%q", resp.Allowed, resp.Result.Code, resp.Result.Message)
		}
	})
	t.Run("the labels-only handler reads no ServiceAccount", func(t *testing.T) {
		asked := len(sas.asked)
		labelsOnly := handler(t)
		if resp := labelsOnly.Handle(context.Background(), request(t, admissionv1.Create, labeled)); !resp.Allowed || len(resp.Patches) == 0 {
			t.Fatalf("labeled Pod: allowed=%v patches=%d", resp.Allowed, len(resp.Patches))
		}
		if resp := labelsOnly.Handle(context.Background(), request(t, admissionv1.Create, plain)); !resp.Allowed || len(resp.Patches) != 0 {
			t.Fatalf("unlabeled Pod: allowed=%v patches=%d", resp.Allowed, len(resp.Patches))
		}
		if len(sas.asked) != asked {
			t.Fatalf("ServiceAccounts read %d times", len(sas.asked)-asked)
		}
	})
}
