package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const reference = `
cluster: openunison-cp
endpoints:
- name: vault
  issuer: vault-sts.apps.192-168-2-115.nip.io
  audience: https://vault.apps.192-168-2-115.nip.io/
  keys:
    managed: {secret: vault-sts-keys}
  allow:
  - namespace: "*"
`

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte(reference))
	if err != nil {
		t.Fatal(err)
	}
	e := c.Endpoints[0]
	if e.Issuer != "https://vault-sts.apps.192-168-2-115.nip.io" || e.SubjectAudience != e.Issuer {
		t.Errorf("issuer %q subjectAudience %q", e.Issuer, e.SubjectAudience)
	}
	if e.TTL.Duration != 15*time.Minute || e.Algorithm != "RS256" || c.JWKSMaxAge.Duration != 5*time.Minute {
		t.Errorf("defaults: ttl %v alg %s maxAge %v", e.TTL.Duration, e.Algorithm, c.JWKSMaxAge.Duration)
	}
	m := e.Keys.Managed
	if m.Namespace != "kube-sts" || m.RotateEvery.Duration != 30*24*time.Hour || m.PublishAhead.Duration != time.Hour || m.Resync.Duration != 30*time.Second {
		t.Errorf("managed defaults: %+v", m)
	}
}

// TestLifetime: a Pod's kube-sts.io/ttl only shortens, down to podTTL.min,
// and only when the endpoint allows it; each refusal says why.
func TestLifetime(t *testing.T) {
	c, err := Parse([]byte(`cluster: c
endpoints:
- {name: v, issuer: h/v, audience: a, keys: {files: [/k]}, allow: [{}]}
- {name: fixed, issuer: h/f, audience: a, podTTL: {allow: false}, keys: {files: [/k]}, allow: [{}]}
- {name: short, issuer: h/s, audience: a, ttl: 2m, keys: {files: [/k]}, allow: [{}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	v, fixed, short := &c.Endpoints[0], &c.Endpoints[1], &c.Endpoints[2]
	if v.PodTTL.Min.Duration != DefaultPodTTLMin || short.PodTTL.Min.Duration != 2*time.Minute {
		t.Fatalf("podTTL.min defaults %v and %v, want %v and the shorter ttl 2m", v.PodTTL.Min.Duration, short.PodTTL.Min.Duration, DefaultPodTTLMin)
	}
	for _, tc := range []struct {
		e         *Endpoint
		requested time.Duration
		want      time.Duration
		noteIn    string
	}{
		{v, 0, 15 * time.Minute, ""},
		{v, 15 * time.Minute, 15 * time.Minute, ""},
		{v, 10 * time.Minute, 10 * time.Minute, ""},
		{v, 5 * time.Minute, 5 * time.Minute, ""},
		{v, time.Hour, 15 * time.Minute, "1h0m0s is longer than endpoint v's ttl 15m0s; a Pod may only shorten it; issued for 15m0s"},
		{v, 2 * time.Minute, 5 * time.Minute, "2m0s is shorter than endpoint v's podTTL.min 5m0s; issued for 5m0s"},
		{fixed, 10 * time.Minute, 15 * time.Minute, "endpoint fixed does not let Pods choose the token lifetime (podTTL.allow: false)"},
		{fixed, 0, 15 * time.Minute, ""},
		{short, time.Minute, 2 * time.Minute, "shorter than endpoint short's podTTL.min 2m0s"},
	} {
		got, note := tc.e.Lifetime(tc.requested)
		if got != tc.want || (tc.noteIn == "") != (note == "") || !strings.Contains(note, tc.noteIn) {
			t.Errorf("%s.Lifetime(%v) = %v, %q; want %v and a note with %q", tc.e.Name, tc.requested, got, note, tc.want, tc.noteIn)
		}
	}
}

func TestPublishDefaults(t *testing.T) {
	c, err := Parse([]byte(reference + `  publish:
  - directory: {path: /srv/www}
  - s3: {bucket: oidc}
`))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Publishing
	if p.Interval.Duration != DefaultPublishInterval || p.UnreadyAfter == nil || p.UnreadyAfter.Duration != DefaultPublishUnreadyAfter {
		t.Errorf("publishing defaults: %+v", p)
	}
	if s3 := c.Endpoints[0].Publish[1].S3; s3.Region != DefaultS3Region {
		t.Errorf("s3 region default %q", s3.Region)
	}
	c, err = Parse([]byte("publishing: {unreadyAfter: 0s}\n" + reference))
	if err != nil {
		t.Fatal(err)
	}
	if u := c.Publishing.UnreadyAfter; u == nil || u.Duration != 0 {
		t.Errorf("unreadyAfter 0s (off) was replaced by %v", u)
	}
}

func TestValidate(t *testing.T) {
	tests := map[string]struct {
		yaml   string
		wantIn []string
	}{
		"empty": {yaml: `{}`, wantIn: []string{"cluster: is required", "endpoints: at least one"}},
		"unknown field": {yaml: `cluster: c
endpoint: []`, wantIn: []string{`unknown field "endpoint"`}},
		"no allow rule": {yaml: `cluster: c
endpoints: [{name: v, issuer: h, audience: a, keys: {files: [/k]}}]`, wantIn: []string{"endpoints[0].allow: has no rule, so nothing would be allowed"}},
		"bad everything": {yaml: `cluster: "a:b"
endpoints:
- {name: Vault, issuer: "http://h/", audience: "", ttl: 30s, algorithm: HS256, keys: {}, allow: [{namespace: "[a"}]}`,
			wantIn: []string{"cluster: \"a:b\" must not contain ':'", "endpoints[0].name:", "endpoints[0].issuer: \"http://h/\" must use https",
				"endpoints[0].audience: is required", "endpoints[0].ttl: 30s is outside", "endpoints[0].algorithm: \"HS256\"",
				"endpoints[0].keys: no key source", "endpoints[0].allow[0].namespace: \"[a\" is not a valid glob"}},
		"ttl too long": {yaml: `cluster: c
endpoints: [{name: v, issuer: h, audience: a, ttl: 25h, keys: {files: [/k]}, allow: [{}]}]`, wantIn: []string{"endpoints[0].ttl: 25h0m0s is outside the allowed 1m0s to 24h0m0s"}},
		"pod ttl outside its bounds": {yaml: `cluster: c
endpoints:
- {name: v, issuer: h/v, audience: a, ttl: 10m, podTTL: {min: 30s}, keys: {files: [/k]}, allow: [{}]}
- {name: w, issuer: h/w, audience: a, ttl: 10m, podTTL: {min: 11m}, keys: {files: [/k]}, allow: [{}]}`, wantIn: []string{
			"endpoints[0].podTTL.min: 30s is outside 1m0s to the endpoint's ttl 10m0s",
			"endpoints[1].podTTL.min: 11m0s is outside 1m0s to the endpoint's ttl 10m0s"}},
		"trailing slash": {yaml: `cluster: c
endpoints: [{name: v, issuer: "https://h/vault/", audience: a, keys: {files: [/k]}, allow: [{}]}]`, wantIn: []string{"must not end with '/'"}},
		"query": {yaml: `cluster: c
endpoints: [{name: v, issuer: "https://h/v?x=1", audience: a, keys: {files: [/k]}, allow: [{}]}]`, wantIn: []string{"query"}},
		"duplicates": {yaml: `cluster: c
endpoints:
- {name: v, issuer: h/p, audience: a, keys: {files: [/k]}, allow: [{}]}
- {name: v, issuer: https://h/p, audience: a, keys: {files: [/k]}, allow: [{}]}`, wantIn: []string{"endpoints[1].name: \"v\" is also the name of endpoints[0]", "endpoints[1].issuer: \"https://h/p\" is also the issuer of endpoints[0]"}},
		"both key sources": {yaml: `cluster: c
endpoints: [{name: v, issuer: h, audience: a, keys: {files: [/k], managed: {secret: s}}, allow: [{}]}]`, wantIn: []string{"set either files or managed"}},
		"signing file not listed": {yaml: `cluster: c
endpoints: [{name: v, issuer: h, audience: a, keys: {files: [/k], signingFile: /other}, allow: [{}]}]`, wantIn: []string{"endpoints[0].keys.signingFile: \"/other\" is not one of files"}},
		"publish ahead too short": {yaml: `cluster: c
endpoints: [{name: v, issuer: h, audience: a, keys: {managed: {secret: s, publishAhead: 1m}}, allow: [{}]}]`, wantIn: []string{"endpoints[0].keys.managed.publishAhead: 1m0s must exceed jwksMaxAge + resync (5m30s)"}},
		"rotate before publish": {yaml: `cluster: c
endpoints: [{name: v, issuer: h, audience: a, keys: {managed: {secret: s, rotateEvery: 30m}}, allow: [{}]}]`, wantIn: []string{"rotateEvery: 30m0s must exceed publishAhead"}},
		"leeway shorter than resync": {yaml: `cluster: c
endpoints: [{name: v, issuer: h, audience: a, keys: {managed: {secret: s, leeway: 1s, resync: 30s}}, allow: [{}]}]`, wantIn: []string{"endpoints[0].keys.managed.leeway: 1s must be at least resync + 5s of clock skew (35s)"}},
		"upper-case namespace glob": {yaml: `cluster: c
endpoints: [{name: v, issuer: h, audience: a, keys: {files: [/k]}, allow: [{}], deny: [{namespace: Kube-System}]}]`, wantIn: []string{`endpoints[0].deny[0].namespace: "Kube-System" can never match a namespace (lowercase letters, digits and '-'): it requires 'K'; did you mean "kube-system"?`}},
		"impossible serviceaccount glob": {yaml: `cluster: c
endpoints: [{name: v, issuer: h, audience: a, keys: {files: [/k]}, allow: [{serviceAccount: "vault_agent*"}]}]`, wantIn: []string{`endpoints[0].allow[0].serviceAccount: "vault_agent*" can never match a ServiceAccount name`}},
		"claims colliding in another letter case or reserved": {yaml: `cluster: c
endpoints:
- name: v
  issuer: h
  audience: a
  keys: {files: [/k]}
  allow: [{}]
  claims:
    static: {Sub: x, groups: y, Team: a, team: b}
    fromPodLabels: [Namespace, AZP]`, wantIn: []string{
			`endpoints[0].claims.static: claim "Sub" would override a standard claim`,
			`endpoints[0].claims.static: claim "groups" would override a reserved claim`,
			`endpoints[0].claims.static: claim "team" would override the static claim "Team"`,
			`endpoints[0].claims.fromPodLabels[0]: label "Namespace" would be claim "Namespace", which is already a standard claim`,
			`endpoints[0].claims.fromPodLabels[1]: label "AZP" would be claim "AZP", which is already a reserved claim`}},
		"globs no name can match": {yaml: `cluster: c
endpoints: [{name: v, issuer: h, audience: a, keys: {files: [/k]}, allow: [{namespace: "[A-Z]*"}, {namespace: "team-"}, {serviceAccount: "-x*"}, {namespace: "team-*"}], deny: [{namespace: "[K]ube-system"}]}]`, wantIn: []string{
			`endpoints[0].allow[0].namespace: "[A-Z]*" can never match a namespace (lowercase letters, digits and '-'): the class [A-Z] admits none of its characters`,
			`endpoints[0].allow[1].namespace: "team-" can never match a namespace (lowercase letters, digits and '-'): names end with a lowercase letter or digit, not "-"`,
			`endpoints[0].allow[2].serviceAccount: "-x*" can never match a ServiceAccount name (lowercase letters, digits, '-' and '.'): names start with a lowercase letter or digit, not "-"`,
			`endpoints[0].deny[0].namespace: "[K]ube-system" can never match a namespace (lowercase letters, digits and '-'): the class [K] admits none of its characters`}},
		"dot segments in the issuer": {yaml: `cluster: c
endpoints:
- {name: v, issuer: "https://h/a/../../etc", audience: a, keys: {files: [/k]}, allow: [{}]}
- {name: w, issuer: "https://h/./w", audience: a, keys: {files: [/k]}, allow: [{}]}
- {name: x, issuer: "https://h/x//y", audience: a, keys: {files: [/k]}, allow: [{}]}`, wantIn: []string{
			`endpoints[0].issuer: "https://h/a/../../etc" has an empty, '.' or '..' path segment`,
			`endpoints[1].issuer: "https://h/./w" has an empty, '.' or '..' path segment`,
			`endpoints[2].issuer: "https://h/x//y" has an empty, '.' or '..' path segment`}},
		"dot in namespace glob": {yaml: `cluster: c
endpoints: [{name: v, issuer: h, audience: a, keys: {files: [/k]}, allow: [{namespace: "team.a"}]}]`, wantIn: []string{`endpoints[0].allow[0].namespace: "team.a" can never match a namespace`}},
		"publish targets": {yaml: `cluster: c
publishing: {interval: 1s, unreadyAfter: -1s}
endpoints:
- name: v
  issuer: h
  audience: a
  keys: {files: [/k]}
  allow: [{}]
  publish:
  - {}
  - {directory: {path: www}, s3: {bucket: b}}
  - directory: {path: relative/www}
  - s3: {endpoint: "ftp://x", prefix: /p, caFile: /ca}
  - s3: {bucket: b, caFile: /ca}
  - gcs: {anonymous: true, prefix: /p}
  - gcs: {bucket: b, endpoint: "gs://x", caFile: /ca}
  - azureBlob: {prefix: /p, caFile: /ca}
  - {gcs: {bucket: b}, azureBlob: {account: a, container: c}}`, wantIn: []string{"publishing.interval: 1s is too short", "publishing.unreadyAfter: -1s is negative",
			"endpoints[0].publish[0]: set exactly one of directory, s3, gcs and azureBlob (found 0: )",
			"endpoints[0].publish[1]: set exactly one of directory, s3, gcs and azureBlob (found 2: directory, s3)",
			`endpoints[0].publish[2].directory.path: "relative/www" must be an absolute path`, "endpoints[0].publish[3].s3.bucket: is required",
			`endpoints[0].publish[3].s3.endpoint: "ftp://x" is not an http(s) URL`, `endpoints[0].publish[3].s3.prefix: "/p" must not start with '/'`,
			"endpoints[0].publish[4].s3.caFile: is only for an endpoint of your own; AWS is trusted",
			"endpoints[0].publish[5].gcs.bucket: is required", "endpoints[0].publish[5].gcs.anonymous: is only for an emulator",
			`endpoints[0].publish[5].gcs.prefix: "/p" must not start with '/'`,
			`endpoints[0].publish[6].gcs.endpoint: "gs://x" is not an http(s) URL`,
			"endpoints[0].publish[7].azureBlob.account: is required", "endpoints[0].publish[7].azureBlob.container: is required",
			`endpoints[0].publish[7].azureBlob.prefix: "/p" must not start with '/'`, "endpoints[0].publish[7].azureBlob.caFile: is only for an endpoint of your own; Azure is trusted",
			"endpoints[0].publish[8]: set exactly one of directory, s3, gcs and azureBlob (found 2: gcs, azureBlob)",
		}},
		"extra claims": {yaml: `cluster: c
endpoints:
- name: v
  issuer: h
  audience: a
  keys: {files: [/k]}
  allow: [{}]
  claims:
    static: {sub: x, env: prod, "bad-name": y, "": z}
    fromPodLabels: [app, env, "app.kubernetes.io/name", app_kubernetes_io_name, "not a label", namespace]`, wantIn: []string{
			`endpoints[0].claims.static: claim "sub" would override a standard claim`,
			`endpoints[0].claims.static: claim name "bad-name" must be letters, digits and '_' only`,
			`endpoints[0].claims.static: claim name "" must be`,
			`endpoints[0].claims.fromPodLabels[1]: label "env" would be claim "env", which is already the static claim "env"`,
			`endpoints[0].claims.fromPodLabels[3]: label "app_kubernetes_io_name" would be claim "app_kubernetes_io_name", which is already the claim of label "app.kubernetes.io/name"`,
			`endpoints[0].claims.fromPodLabels[4]: "not a label" is not a label key`,
			`endpoints[0].claims.fromPodLabels[5]: label "namespace" would be claim "namespace", which is already a standard claim`}},
		"managed without secret": {yaml: `cluster: c
endpoints: [{name: v, issuer: h, audience: a, keys: {managed: {}}, allow: [{}]}]`, wantIn: []string{"keys.managed.secret: is required"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil {
				t.Fatal("Parse accepted it")
			}
			for _, w := range tc.wantIn {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestRuleGlobsThatMatch: globs that can match a name load without a word.
func TestRuleGlobsThatMatch(t *testing.T) {
	for _, g := range []string{"*", "team-*", "*-prod", "kube-system", "[a-c]*", "team-?", "[ab]*x", "a*[0-9]"} {
		var errs []string
		validateRule(Rule{Namespace: g, ServiceAccount: g}, "r", func(f, format string, args ...any) { errs = append(errs, f+": "+fmt.Sprintf(format, args...)) })
		if len(errs) > 0 {
			t.Errorf("%q refused: %v", g, errs)
		}
	}
}

// TestLoadErrorsNameFileLineAndField: --check-config and start-up report each
// mistake with the file, its line and the field, decoding and validation alike.
func TestLoadErrorsNameFileLineAndField(t *testing.T) {
	file := filepath.Join(t.TempDir(), "issuer.yaml")
	if err := os.WriteFile(file, []byte(`cluster: prod
endpoints:
- name: vault
  issuer: https://sts.example.com/vault
  audience: https://vault.example.com/
  ttl: 15min
  algoritm: ES256
  keys: {files: [/k]}
  allow: [{namespace: "*"}]
- name: aws
  issuer: https://sts.example.com/aws
  keys: {files: [/k]}
  allow: [{namespace: "*"}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(file, "kube-sts")
	for _, want := range []string{
		file + `:6: endpoints[0].ttl: unknown unit "min" in duration "15min"`,
		file + `:7: endpoints[0]: unknown field "algoritm" (did you mean "algorithm"?)`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	// Once it decodes, validation errors point at their field's line too (a
	// missing field: the line of the endpoint that lacks it).
	fixed := strings.NewReplacer("15min", "15m", "algoritm", "algorithm").Replace(mustRead(t, file))
	if err := os.WriteFile(file, []byte(fixed), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(file, "kube-sts")
	if want := file + ":10: endpoints[1].audience: is required"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("missing %q in:\n%v", want, err)
	}
}

func mustRead(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
