package selfcert

import (
	"net/http"
	"net/url"
	"testing"

	"k8s.io/client-go/rest"
)

func TestNarrow(t *testing.T) {
	var seen *url.URL
	cfg := &rest.Config{}
	Narrow(cfg, "kube-sts", "sts-webhook-tls", "kube-sts")
	rt := cfg.WrapTransport(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		seen = r.URL
		return &http.Response{StatusCode: 200}, nil
	}))
	for name, tc := range map[string]struct{ method, url, wantSelector string }{
		"list of the namespace's Secrets":   {"GET", "https://api/api/v1/namespaces/kube-sts/secrets?limit=500", "metadata.name=sts-webhook-tls"},
		"watch of the namespace's Secrets":  {"GET", "https://api/api/v1/namespaces/kube-sts/secrets?watch=true&resourceVersion=1", "metadata.name=sts-webhook-tls"},
		"list of webhook configurations":    {"GET", "https://api/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations?watch=true", "metadata.name=kube-sts"},
		"a list that selects already":       {"GET", "https://api/api/v1/namespaces/kube-sts/secrets?fieldSelector=metadata.name%3Dother", "metadata.name=other"},
		"one Secret by name":                {"GET", "https://api/api/v1/namespaces/kube-sts/secrets/sts-webhook-tls", ""},
		"Secrets of another namespace":      {"GET", "https://api/api/v1/namespaces/other/secrets", ""},
		"an update":                         {"PUT", "https://api/api/v1/namespaces/kube-sts/secrets", ""},
		"another resource of the namespace": {"GET", "https://api/api/v1/namespaces/kube-sts/configmaps", ""},
	} {
		t.Run(name, func(t *testing.T) {
			r, _ := http.NewRequest(tc.method, tc.url, nil)
			before := r.URL.String()
			if _, err := rt.RoundTrip(r); err != nil {
				t.Fatal(err)
			}
			if got := seen.Query().Get("fieldSelector"); got != tc.wantSelector {
				t.Fatalf("fieldSelector = %q, want %q (sent %s)", got, tc.wantSelector, seen)
			}
			if r.URL.String() != before {
				t.Fatal("the caller's request was changed")
			}
			if q := seen.Query(); q.Get("watch") != r.URL.Query().Get("watch") || q.Get("limit") != r.URL.Query().Get("limit") {
				t.Fatalf("other parameters lost: %s", seen)
			}
		})
	}
}
