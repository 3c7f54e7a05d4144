package scenario

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-sts/kube-sts/e2e/node"
)

// jsonPatch is the write-up's annotation that mounts /tokens into Vault's
// containers; kube-sts makes it unnecessary, and must not mind it either.
const jsonPatch = `[{"op": "add", "path": "/volumeMounts/-", "value": {"name": "sts-tokens", "mountPath": "/tokens", "readOnly": true}}]`

// ReferencePod is the write-up's Pod with the STS label and annotations, on
// this node (nodeName, hostNetwork) and our local images. withJSONPatch keeps
// its two agent-*-json-patch annotations.
func (s *Stack) ReferencePod(ns, name string, withJSONPatch bool) *corev1.Pod {
	secretPath := fmt.Sprintf("secret/data/%s/%s/config", Cluster, Namespace)
	ann := map[string]string{
		"vault.hashicorp.com/service":                   s.VaultAddr,
		"vault.hashicorp.com/agent-inject":              "true",
		"vault.hashicorp.com/log-level":                 "debug",
		"vault.hashicorp.com/role":                      Role,
		"vault.hashicorp.com/agent-inject-secret-myenv": secretPath,
		"vault.hashicorp.com/secret-volume-path-myenv":  "/etc/secrets",
		"vault.hashicorp.com/agent-inject-template-myenv": `{{- with secret "` + secretPath + `" -}}
MY_SECRET_PASSWORD="{{ index .Data.data "some-password" }}"
{{- end }}`,
		"tremolo.io/vault-sts":                 "auth_jwt_a8470dce",
		"tremolo.io/user":                      "100",
		"tremolo.io/group":                     "1000",
		"vault.hashicorp.com/auth-type":        "jwt",
		"vault.hashicorp.com/auth-path":        "auth/jwt",
		"vault.hashicorp.com/auth-config-path": "/tokens/token.jwt",
	}
	if withJSONPatch {
		ann["vault.hashicorp.com/agent-init-json-patch"] = jsonPatch
		ann["vault.hashicorp.com/agent-json-patch"] = jsonPatch
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: ns, Annotations: ann,
			Labels: map[string]string{"run": "watch-vault-volume", "tremolo.io/vault-sts": "true"},
		},
		Spec: corev1.PodSpec{
			NodeName:           node.Name,
			HostNetwork:        true,
			RestartPolicy:      corev1.RestartPolicyNever,
			ServiceAccountName: ServiceAccount,
			Containers: []corev1.Container{{
				Name: "test", Image: node.AppImage, ImagePullPolicy: corev1.PullNever,
				Args: []string{"/etc/secrets/myenv"},
			}},
		},
	}
}
