// Package discovery renders an endpoint's OIDC discovery document and JWKS,
// together and from typed structs, once per key change; the server serves
// the bytes. Only public keys reach the JWKS: each is taken through
// crypto.Signer.Public and checked.
package discovery

import (
	"encoding/json"
	"fmt"

	"github.com/go-jose/go-jose/v4"

	"github.com/kube-sts/kube-sts/issuer/internal/keys"
	"github.com/kube-sts/kube-sts/shared/exchange"
)

// Paths below an issuer URL.
const (
	PathDiscovery = "/.well-known/openid-configuration"
	PathJWKS      = "/jwks"
	PathToken     = exchange.EndpointPath
)

// Document is the OpenID Provider Metadata an issuer publishes. Fields are in
// the order of their JSON names, so the bytes stay those of earlier releases.
type Document struct {
	ClaimsSupported                  []string `json:"claims_supported"`
	GrantTypesSupported              []string `json:"grant_types_supported"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
	Issuer                           string   `json:"issuer"`
	JWKSURI                          string   `json:"jwks_uri"`
	ResponseTypesSupported           []string `json:"response_types_supported"`
	SubjectTypesSupported            []string `json:"subject_types_supported"`
	TokenEndpoint                    string   `json:"token_endpoint"`
}

// Documents are an endpoint's rendered discovery document and JWKS.
type Documents struct {
	Discovery []byte
	JWKS      []byte
}

// Render renders the documents of issuer for set; claims are the claims its
// tokens may carry.
func Render(issuer string, claims []string, set *keys.Set) (Documents, error) {
	jwks := jose.JSONWebKeySet{}
	for _, k := range set.Keys {
		pub := k.Public()
		if !pub.IsPublic() {
			return Documents{}, fmt.Errorf("key %s: refusing to publish private material", k.ID)
		}
		jwks.Keys = append(jwks.Keys, pub)
	}
	jwksBytes, err := json.Marshal(jwks)
	if err != nil {
		return Documents{}, err
	}
	disc, err := json.Marshal(Document{
		Issuer:                           issuer,
		JWKSURI:                          issuer + PathJWKS,
		TokenEndpoint:                    issuer + PathToken,
		ResponseTypesSupported:           []string{"id_token"},
		SubjectTypesSupported:            []string{"public"},
		IDTokenSigningAlgValuesSupported: set.Algorithms(),
		ClaimsSupported:                  claims,
		GrantTypesSupported:              []string{exchange.GrantTypeTokenExchange},
	})
	if err != nil {
		return Documents{}, err
	}
	return Documents{Discovery: disc, JWKS: jwksBytes}, nil
}
