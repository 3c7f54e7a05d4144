package app

import (
	"fmt"

	utilversion "k8s.io/apimachinery/pkg/util/version"

	"github.com/kube-sts/kube-sts/webhook/internal/config"
)

// Native sidecars (restartPolicy Always on init containers) are on by default from 1.29.
var nativeSince = utilversion.MustParseGeneric("1.29.0")

// nativeModes resolves each injector's native-sidecar mode; auto asks the API
// server's version once.
func nativeModes(cfg *config.Config, serverVersion func() (string, error)) (map[string]bool, error) {
	modes := map[string]bool{}
	var detected *bool
	for _, in := range cfg.Injectors {
		switch in.NativeSidecar {
		case config.NativeAlways:
			modes[in.Name] = true
		case config.NativeNever:
			modes[in.Name] = false
		default:
			if detected == nil {
				gv, err := serverVersion()
				if err != nil {
					return nil, err
				}
				v, err := utilversion.ParseGeneric(gv)
				if err != nil {
					return nil, fmt.Errorf("parse server version %q: %w", gv, err)
				}
				ok := v.AtLeast(nativeSince)
				detected = &ok
			}
			modes[in.Name] = *detected
		}
	}
	return modes, nil
}
