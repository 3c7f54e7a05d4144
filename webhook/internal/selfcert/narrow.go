package selfcert

import (
	"net/http"
	"strings"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/rest"
)

// Narrow makes every list and watch of Secrets in namespace, and of
// MutatingWebhookConfigurations, that cfg's clients send ask for one object
// by name: the Secret secret and the configuration webhookConfig. The
// certificate library (cert-controller's rotator) lists and watches both
// collections whole through a cache it builds itself and does not let us
// configure; narrowed, its requests are what RBAC can limit by
// resourceNames (the API server authorizes a list or watch with a
// metadata.name field selector against that name), so the webhook needs no
// right to read any other Secret of its namespace, such as the issuer's
// signing keys. A request that already selects by field is left alone.
func Narrow(cfg *rest.Config, namespace, secret, webhookConfig string) {
	secrets := "/api/v1/namespaces/" + namespace + "/secrets"
	configs := "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.Method != http.MethodGet {
				return rt.RoundTrip(r)
			}
			var name string
			switch strings.TrimSuffix(r.URL.Path, "/") {
			case secrets:
				name = secret
			case configs:
				name = webhookConfig
			default:
				return rt.RoundTrip(r)
			}
			q := r.URL.Query()
			if q.Get("fieldSelector") != "" {
				return rt.RoundTrip(r)
			}
			q.Set("fieldSelector", fields.OneTermEqualSelector("metadata.name", name).String())
			r = r.Clone(r.Context())
			u := *r.URL
			u.RawQuery = q.Encode()
			r.URL = &u
			return rt.RoundTrip(r)
		})
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
