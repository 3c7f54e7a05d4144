package config

import (
	"fmt"
	"strings"

	"github.com/kube-sts/kube-sts/issuer/internal/keys"
)

// Where the cloud targets put documents, and whether a cloud can read them
// where the issuer says they are. An OIDC relying party reads
// <issuer>/.well-known/openid-configuration and compares the issuer in it
// byte for byte; a cloud's federation reads it from the internet. A bucket
// target is useful only when that URL is the object's public URL.

// Public hosts of the clouds' object stores.
const (
	GCSPublicHost = "storage.googleapis.com"
	// AzureBlobHostSuffix follows the account name: <account>.blob.core.windows.net.
	AzureBlobHostSuffix = ".blob.core.windows.net"
)

// Name is the object's name for an issuer path base (the issuer URL's path
// without its leading '/') and a document name below it. A first segment of
// base naming the bucket is left out: an issuer at
// https://storage.googleapis.com/<bucket>/<path> reads the bucket
// path-style, where the bucket is part of the URL's path and not of the
// object's name.
func (t GCSTarget) Name(base, name string) string {
	return t.Prefix + join(trimSegment(base, t.Bucket), name)
}

// PublicURL is where Google serves an object of a public bucket, path-style.
func (t GCSTarget) PublicURL(object string) string {
	return "https://" + GCSPublicHost + "/" + t.Bucket + "/" + object
}

// Name is the blob's name for an issuer path base and a document name below
// it. Leading segments of base naming the account (a path-style endpoint:
// Azurite) and then the container are left out: they are part of the URL's
// path, not of the blob's name.
func (t AzureBlobTarget) Name(base, name string) string {
	return t.Prefix + join(trimSegment(trimSegment(base, t.Account), t.Container), name)
}

// PublicURL is where Azure serves a blob of a container with public read
// access.
func (t AzureBlobTarget) PublicURL(blob string) string {
	return "https://" + t.Account + AzureBlobHostSuffix + "/" + t.Container + "/" + blob
}

// trimSegment drops seg from the front of the slash path p when it is p's
// whole first segment.
func trimSegment(p, seg string) string {
	switch {
	case seg == "":
		return p
	case p == seg:
		return ""
	case strings.HasPrefix(p, seg+"/"):
		return p[len(seg)+1:]
	}
	return p
}

func join(base, name string) string {
	if base == "" {
		return name
	}
	return base + "/" + name
}

// discoveryName is the document a relying party reads first.
const discoveryName = ".well-known/openid-configuration"

// Notes are what the configuration allows but a cloud reading the published
// documents would not accept: an issuer URL that is not where a cloud target
// puts the discovery document, or a signing algorithm Microsoft Entra ID
// rejects for an endpoint published to Azure. The issuer logs each at start
// as a warning; none stops it (a bucket may sit behind a CDN at the issuer's
// host, a container may serve a relying party other than Entra ID).
func (c *Config) Notes() []string {
	var notes []string
	for i, e := range c.Endpoints {
		u, err := ParseIssuer(e.Issuer)
		if err != nil {
			continue // Validate says why
		}
		base := strings.TrimPrefix(u.Path, "/")
		want := e.Issuer + "/" + discoveryName
		for j, t := range e.Publish {
			f := fmt.Sprintf("endpoints[%d].publish[%d]", i, j)
			switch {
			case t.GCS != nil && t.GCS.Endpoint == "":
				g := *t.GCS
				object := g.Name(base, discoveryName)
				// Path-style, or the bucket as the host (virtual-hosted style).
				if want != g.PublicURL(object) && want != "https://"+g.Bucket+"."+GCSPublicHost+"/"+object {
					notes = append(notes, fmt.Sprintf("%s (gcs): Google's federation reads %s, but this target puts the discovery document at %s; set the issuer to %s, or serve the bucket at the issuer's host",
						f, want, g.PublicURL(object), strings.TrimSuffix(g.PublicURL(object), "/"+discoveryName)))
				}
			case t.AzureBlob != nil && t.AzureBlob.Endpoint == "":
				a := *t.AzureBlob
				blob := a.Name(base, discoveryName)
				if want != a.PublicURL(blob) {
					notes = append(notes, fmt.Sprintf("%s (azureBlob): Microsoft Entra ID reads %s, but this target puts the discovery document at %s; set the issuer to %s, or serve the container at the issuer's host",
						f, want, a.PublicURL(blob), strings.TrimSuffix(a.PublicURL(blob), "/"+discoveryName)))
				}
				if e.Algorithm != keys.RS256 {
					notes = append(notes, fmt.Sprintf("%s (azureBlob): endpoint %s signs with %s, and Microsoft Entra ID's workload identity federation accepts RSA signatures only (RS256); set algorithm: RS256 for an endpoint Entra ID trusts",
						f, e.Name, e.Algorithm))
				}
			}
		}
	}
	return notes
}
