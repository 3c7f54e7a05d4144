// Package admit is the admission handler: it decodes the Pod, asks inject
// what to do, and answers with a JSON patch (RFC 6902) of only what
// injection changed, laid onto the Pod as the API server sent it.
//
// # Why the patch is ours
//
// controller-runtime's Defaulter, and admission.PatchResponseFromRaw, diff
// the raw Pod against the mutated Go struct re-encoded. Every field the
// compiled-in k8s.io/api does not know (a newer API server's Pod fields,
// security fields among them) is absent from the struct, so that diff
// removes it. kube-sts must never strip a field it does not understand, so
// it computes the change between two encodings of the same Go type, before
// and after injection, and lays that change onto the raw Pod (patch.go);
// lists of named things are matched by identity, not position
// (patch_lists.go), so a container that moves down because ours went in
// front keeps what it had.
//
// # A worked example
//
// The API server sends (raw, abridged) a labeled Pod with an init
// container, from an API server newer than our k8s.io/api:
//
//	{"metadata": {"labels": {"tremolo.io/vault-sts": "true"}},
//	 "spec": {"initContainers": [{"name": "migrate", "image": "app:1", "futureField": {"enabled": true},
//	                              "env": [{"name": "VAULT_TOKEN_FILE", "value": "/custom/path"}]}],
//	          "containers": [{"name": "app", "image": "app:1"}]}}
//
// Decoded into corev1.Pod and re-encoded, that is before (futureField is
// gone: the type does not have it). inject.Mutate on the typed Pod gives
// after: our native sidecar first in initContainers, /tokens mounted in
// migrate and app, the token-file variable set in app (migrate keeps its
// own), the tokens volumes, the injected annotation. injectionPatch walks after against before, and for
// every difference looks where raw stands:
//
//	add /metadata/annotations/kube-sts.io~1injected   new key; raw has annotations
//	add /spec/containers/0/env                         app had no env in raw: add, not replace
//	add /spec/containers/0/volumeMounts
//	add /spec/initContainers/0                         ours, in front (a new element: added whole)
//	add /spec/initContainers/1/volumeMounts            migrate, matched by name, now at 1: only its new field
//	add /spec/volumes
//
// migrate's futureField is never mentioned: it is in raw, not in before or
// after, so no operation reaches it, and the element it sits in is patched
// where it now stands rather than replaced. The same Pod admitted again
// (reinvocationPolicy: IfNeeded) yields no operation at all, because before
// and after are then equal. When another webhook has put its container in
// front of ours, Mutate moves ours back; that element is removed and added
// again with raw's own fields merged into it (merge), so even a moved
// element keeps what we do not know. The goldens under testdata/patches are
// these operations for each fixture, and TestUnknownFieldsSurvive adds an
// unknown field at every level of a Pod and checks none is lost.
//
// # What was tried instead
//
// A strategic merge patch from before to after (apimachinery's
// strategicpatch.CreateTwoWayMergePatch), applied to raw with
// StrategicMergePatch, keeps the unknown fields in the resulting object;
// but turning that object back into the JSON patch the admission response
// needs (jsonpatch.CreatePatch, positional on lists) emits operations that
// remove and re-add the unknown fields of every element that shifted
// (init-containers: "remove /spec/initContainers/0/futureField" and the
// like), so TestUnknownFieldsSurvive's "touches only what injection added"
// and every golden fail. The hand-written walk stays.
package admit
