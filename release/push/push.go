// Package push copies a local release (`make release-local`) to a registry,
// without Docker or helm: each image's OCI layout (every platform behind its
// index) as <registry>/kube-sts/<binary>:<version>, and the packaged chart as
// the Helm OCI artifact <registry>/kube-sts/charts/kube-sts:<chart version>,
// which `helm install oci://<registry>/kube-sts/charts/kube-sts` reads. The
// names are the release workflow's, so the chart's image.registry alone
// points an install at them. `make push REGISTRY=...` runs it.
package push

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"sigs.k8s.io/yaml"
)

// Helm's OCI media types (helm.sh/helm/v3/pkg/registry).
const (
	HelmConfigMediaType types.MediaType = "application/vnd.cncf.helm.config.v1+json"
	HelmChartMediaType  types.MediaType = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
)

// Options of Push.
type Options struct {
	Dir      string   // the release folder: images/<binary>.oci and kube-sts-<chart version>.tgz
	Registry string   // host[:port][/path]; images go to <Registry>/<Prefix>/<binary>
	Prefix   string   // default kube-sts
	Version  string   // the images' tag, e.g. v0.1.0
	Binaries []string // the images' names
	// Insecure allows plain HTTP to the registry (a loopback test registry).
	Insecure bool
	// Keychain authenticates (default: authn.DefaultKeychain, what docker
	// login and crane auth login write).
	Keychain authn.Keychain
}

// Pushed is one reference written, with its digest.
type Pushed struct {
	Ref    string
	Digest string
}

// Push writes the images and the chart, and returns what it wrote.
func Push(ctx context.Context, o Options) ([]Pushed, error) {
	if o.Registry == "" || o.Version == "" || len(o.Binaries) == 0 {
		return nil, errors.New("push: the registry, the version and the binaries are required")
	}
	if strings.Contains(o.Registry, "://") {
		return nil, fmt.Errorf("push: registry %q: give host[:port][/path], without a scheme", o.Registry)
	}
	if o.Prefix == "" {
		o.Prefix = "kube-sts"
	}
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	base := strings.TrimSuffix(o.Registry, "/") + "/" + o.Prefix
	var nameOpts []name.Option
	if o.Insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	remoteOpts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(o.Keychain)}
	var out []Pushed

	for _, b := range o.Binaries {
		p, err := layout.FromPath(filepath.Join(o.Dir, "images", b+".oci"))
		if err != nil {
			return out, fmt.Errorf("push %s: %w (run make release-local first)", b, err)
		}
		root, err := p.ImageIndex()
		if err != nil {
			return out, fmt.Errorf("push %s: %w", b, err)
		}
		// The layout's index holds one entry: the multi-platform index.
		m, err := root.IndexManifest()
		if err != nil || len(m.Manifests) != 1 {
			return out, fmt.Errorf("push %s: the layout holds %d entries, want one index (%v)", b, len(m.Manifests), err)
		}
		idx, err := root.ImageIndex(m.Manifests[0].Digest)
		if err != nil {
			return out, fmt.Errorf("push %s: %w", b, err)
		}
		ref, err := name.NewTag(base+"/"+b+":"+o.Version, nameOpts...)
		if err != nil {
			return out, fmt.Errorf("push %s: %w", b, err)
		}
		if err := remote.WriteIndex(ref, idx, remoteOpts...); err != nil {
			return out, fmt.Errorf("push %s: %w", ref, err)
		}
		d, _ := idx.Digest()
		out = append(out, Pushed{Ref: ref.String(), Digest: d.String()})
	}

	chart, version, err := chartArtifact(o.Dir)
	if err != nil {
		return out, err
	}
	ref, err := name.NewTag(base+"/charts/kube-sts:"+strings.ReplaceAll(version, "+", "_"), nameOpts...)
	if err != nil {
		return out, err
	}
	if err := remote.Write(ref, chart, remoteOpts...); err != nil {
		return out, fmt.Errorf("push the chart to %s: %w", ref, err)
	}
	d, _ := chart.Digest()
	out = append(out, Pushed{Ref: ref.String(), Digest: d.String()})
	return out, nil
}

// chartArtifact is the one packaged chart of dir as Helm's OCI artifact:
// the chart's metadata (Chart.yaml as JSON) as config, the .tgz as one layer.
func chartArtifact(dir string) (v1.Image, string, error) {
	tgzs, _ := filepath.Glob(filepath.Join(dir, "kube-sts-*.tgz"))
	if len(tgzs) != 1 {
		return nil, "", fmt.Errorf("push: want one kube-sts-*.tgz in %s, found %d (run make release-local first)", dir, len(tgzs))
	}
	tgz, err := os.ReadFile(tgzs[0])
	if err != nil {
		return nil, "", err
	}
	meta, err := chartYAML(tgz)
	if err != nil {
		return nil, "", fmt.Errorf("push: %s: %w", tgzs[0], err)
	}
	var m struct {
		Version string `json:"version"`
	}
	config, err := yaml.YAMLToJSON(meta)
	if err == nil {
		err = json.Unmarshal(config, &m)
	}
	if err != nil || m.Version == "" {
		return nil, "", fmt.Errorf("push: %s: Chart.yaml has no version (%v)", tgzs[0], err)
	}
	img, err := partial.CompressedToImage(&artifact{config: config, layer: static.NewLayer(tgz, HelmChartMediaType)})
	if err != nil {
		return nil, "", err
	}
	return img, m.Version, nil
}

// chartYAML is <chart>/Chart.yaml inside a packaged chart.
func chartYAML(tgz []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, errors.New("no Chart.yaml")
		}
		if err != nil {
			return nil, err
		}
		if dir, file := path.Split(h.Name); file == "Chart.yaml" && strings.Count(strings.Trim(dir, "/"), "/") == 0 && dir != "" {
			return io.ReadAll(io.LimitReader(tr, 1<<20))
		}
	}
}

// artifact is an OCI manifest with a config and one layer of our choosing:
// what go-containerregistry's image builders (whose config is always an
// image configuration) cannot make.
type artifact struct {
	config []byte
	layer  v1.Layer
}

func (a *artifact) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (a *artifact) RawConfigFile() ([]byte, error)      { return a.config, nil }

func (a *artifact) RawManifest() ([]byte, error) {
	ld, err := a.layer.Digest()
	if err != nil {
		return nil, err
	}
	ls, err := a.layer.Size()
	if err != nil {
		return nil, err
	}
	cd, cs, err := v1.SHA256(bytes.NewReader(a.config))
	if err != nil {
		return nil, err
	}
	return json.Marshal(v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: HelmConfigMediaType, Digest: cd, Size: cs},
		Layers:        []v1.Descriptor{{MediaType: HelmChartMediaType, Digest: ld, Size: ls}},
	})
}

func (a *artifact) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if d, err := a.layer.Digest(); err == nil && d == h {
		return a.layer, nil
	}
	return nil, fmt.Errorf("no layer %s", h)
}
