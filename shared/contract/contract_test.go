package contract

import (
	"slices"
	"strings"
	"testing"
)

func TestParseID(t *testing.T) {
	tests := map[string]struct {
		value  string
		want   int64
		wantIn string
	}{
		"vault agent uid": {value: "100", want: 100},
		"root":            {value: "0", want: 0},
		"spaces trimmed":  {value: " 1000 ", want: 1000},
		"largest":         {value: "2147483647", want: MaxID},
		"empty":           {value: "", wantIn: "is empty"},
		"word":            {value: "vault", wantIn: `"vault" is not a number`},
		"negative":        {value: "-1", wantIn: "is negative"},
		"too large":       {value: "2147483648", wantIn: "larger than the largest id 2147483647"},
		"linux only":      {value: "4294967294", wantIn: "larger than the largest id"},
		"overflow":        {value: "99999999999999999999", wantIn: "is not a number"},
		"float":           {value: "1.5", wantIn: "is not a number"},
		"hex":             {value: "0x10", wantIn: "is not a number"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseID(AnnotationUser, tc.value)
			if tc.wantIn == "" {
				if err != nil || got != tc.want {
					t.Fatalf("ParseID(%q) = %d, %v; want %d", tc.value, got, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseID(%q) = %d, want error", tc.value, got)
			}
			if !strings.Contains(err.Error(), tc.wantIn) || !strings.Contains(err.Error(), AnnotationUser) {
				t.Fatalf("ParseID(%q) error %q should name %s and contain %q", tc.value, err, AnnotationUser, tc.wantIn)
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	tests := map[string]struct {
		name   string
		wantIn string
	}{
		"reference name":         {name: "vault-sts"},
		"digits":                 {name: "sts2"},
		"single char":            {name: "a"},
		"max length":             {name: strings.Repeat("a", 63)},
		"empty":                  {name: "", wantIn: "empty"},
		"too long":               {name: strings.Repeat("a", 64), wantIn: "longer than 63"},
		"upper case":             {name: "Vault", wantIn: "lower-case"},
		"leading dash":           {name: "-vault", wantIn: "start and end"},
		"trailing dash":          {name: "vault-", wantIn: "start and end"},
		"dot":                    {name: "vault.sts", wantIn: "lower-case"},
		"slash":                  {name: "a/b", wantIn: "lower-case"},
		"user reserved":          {name: "user", wantIn: "reserved"},
		"group reserved":         {name: "group", wantIn: "reserved"},
		"create-volume reserved": {name: "create-volume", wantIn: "reserved"},
		"non-root reserved":      {name: "non-root", wantIn: "reserved"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := ValidateName(tc.name)
			if tc.wantIn == "" {
				if err != nil {
					t.Fatalf("ValidateName(%q): %v", tc.name, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantIn) {
				t.Fatalf("ValidateName(%q) = %v, want error containing %q", tc.name, err, tc.wantIn)
			}
		})
	}
}

func TestNames(t *testing.T) {
	tests := map[string]struct{ got, want string }{
		"selection label":  {SelectionLabel("vault-sts"), "tremolo.io/vault-sts"},
		"value annotation": {ValueAnnotation("vault-sts"), "tremolo.io/vault-sts"},
		"token path":       {TokenPath, "/tokens/token.jwt"},
		"subject path":     {SubjectTokenPath, "/var/run/secrets/kube-sts/token"},
		"user annotation":  {AnnotationUser, "tremolo.io/user"},
		"group annotation": {AnnotationGroup, "tremolo.io/group"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

func FuzzParseID(f *testing.F) {
	for _, s := range []string{"100", "-1", "", "1e3", "4294967295"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseID(AnnotationGroup, s)
		if err != nil {
			if !strings.Contains(err.Error(), AnnotationGroup) {
				t.Fatalf("error %q does not name the annotation", err)
			}
			return
		}
		if n < 0 || n > MaxID {
			t.Fatalf("ParseID(%q) = %d, outside [0, %d]", s, n, int64(MaxID))
		}
	})
}

// TestFurtherFiles: a further injector's files sit beside the first's and
// never take its names (a valid injector name has no dot, so "<sts>.jwt" is
// never "token.jwt").
func TestFurtherFiles(t *testing.T) {
	if err := ValidateName("token"); err == nil || !strings.Contains(err.Error(), "its token file would be /tokens/token.jwt") {
		t.Errorf(`ValidateName("token") = %v`, err)
	}
	for _, name := range []string{"aws-role", "tokens", "ca", "vault-sts"} {
		if err := ValidateName(name); err != nil {
			t.Fatal(err)
		}
		if got := FurtherTokenPath(name); got != MountPath+"/"+name+".jwt" || got == TokenPath {
			t.Errorf("FurtherTokenPath(%q) = %q", name, got)
		}
		if got := FurtherSubjectTokenFileName(name); got == SubjectTokenFileName || strings.Contains(got, "/") {
			t.Errorf("FurtherSubjectTokenFileName(%q) = %q", name, got)
		}
		if got := MoreCAFileName(name); got != name+".crt" {
			t.Errorf("MoreCAFileName(%q) = %q", name, got)
		}
	}
	if ValidateName("token.jwt") == nil {
		t.Error("a name with a dot would let a further token take the first's file name")
	}
}

func TestStatusPath(t *testing.T) {
	for in, want := range map[string]string{
		TokenPath:                    MountPath + "/.token.jwt.status",
		FurtherTokenPath("aws-role"): MountPath + "/.aws-role.jwt.status",
		"token.jwt":                  ".token.jwt.status",
	} {
		if got := StatusPath(in); got != want {
			t.Errorf("StatusPath(%q) = %q, want %q", in, got, want)
		}
	}
	// No status file may be taken for a token file: token files end in .jwt.
	if strings.HasSuffix(StatusPath(TokenPath), ".jwt") {
		t.Error("a status file named like a token")
	}
}

func TestGroupVolumes(t *testing.T) {
	for name, want := range map[string]bool{"sts-tokens-1": true, "sts-tokens-12": true, "sts-tokens": false, "sts-tokens-0": false,
		"sts-tokens-01": false, "sts-tokens-x": false, "sts-tokens-": false, "other-1": false} {
		if got := IsGroupVolume(name); got != want {
			t.Errorf("IsGroupVolume(%q) = %v, want %v", name, got, want)
		}
	}
	if GroupVolumeName(3) != "sts-tokens-3" || !IsGroupVolume(GroupVolumeName(3)) {
		t.Error("GroupVolumeName(3) is not a group volume's name")
	}
}

func TestParseInject(t *testing.T) {
	for in, want := range map[string][]string{
		"":                      nil,
		" , ,":                  nil,
		"vault-sts":             {"vault-sts"},
		" vault-sts , aws ":     {"vault-sts", "aws"},
		"aws,vault-sts,aws,":    {"aws", "vault-sts"},
		"vault-sts,,other-sts ": {"vault-sts", "other-sts"},
	} {
		if got := ParseInject(in); !slices.Equal(got, want) {
			t.Errorf("ParseInject(%q) = %q, want %q", in, got, want)
		}
	}
}
