package fetch

import (
	"strings"
	"testing"

	"github.com/paramexec/paramexec/internal/environ"
)

func TestVarName(t *testing.T) {
	tests := []struct{ path, name, want string }{
		{"/app/prod", "/app/prod/db/password", "DB_PASSWORD"},
		{"/app/prod", "/app/prod/DB_HOST", "DB_HOST"},
		{"/app/prod", "/app/prod/api-key", "API_KEY"},
		{"/app/prod", "/app/prod/feature.flag-x", "FEATURE_FLAG_X"},
		{"/app/prod", "/app/prod/1st", "_1ST"},
		{"/app/prod", "/app/prod/a/b/c/d", "A_B_C_D"},
		{"/", "/top", "TOP"},
		{"/app", "/app/caf\u00e9", "CAF__"},
		{"/app", "/app/with space", "WITH_SPACE"},
	}
	for _, tt := range tests {
		got, err := VarName(relativeName(tt.path, tt.name))
		if err != nil || got != tt.want {
			t.Errorf("VarName(%q under %q) = %q, %v; want %q", tt.name, tt.path, got, err, tt.want)
		}
	}
	if _, err := VarName("/"); err == nil {
		t.Error("VarName(\"/\"): want an error for an empty name")
	}
}

// FuzzVarName checks the properties the naming rules promise for any
// input: a valid shell name or an error for an empty one, idempotence, and
// that characters already valid keep their place.
func FuzzVarName(f *testing.F) {
	for _, s := range []string{"db/password", "1st", "a-b.c", "/", "", "caf\u00e9", "A_B", "x//y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rel string) {
		got, err := VarName(rel)
		if strings.TrimLeft(rel, "/") == "" {
			if err == nil {
				t.Fatalf("VarName(%q) = %q; want an error", rel, got)
			}
			return
		}
		if err != nil {
			t.Fatalf("VarName(%q): %v", rel, err)
		}
		if !environ.ValidName(got) {
			t.Fatalf("VarName(%q) = %q, not a valid variable name", rel, got)
		}
		if again, _ := VarName(got); again != got {
			t.Fatalf("VarName not idempotent: %q -> %q -> %q", rel, got, again)
		}
		if got != strings.ToUpper(got) {
			t.Fatalf("VarName(%q) = %q, not upper-case", rel, got)
		}
	})
}

func TestMergePrecedence(t *testing.T) {
	inherited := []string{"HOME=/root", "A=inherited", "KEEP=inherited"}
	layers := []Layer{
		{Vars: []Var{{Name: "A", Value: "low", Rank: 0}, {Name: "B", Value: "low", Rank: 0}}},
		{Vars: []Var{{Name: "B", Value: "high", Rank: 2}, {Name: "KEEP", Value: "fetched", Rank: 2}}},
		{Vars: []Var{{Name: "A", Value: "mid", Rank: 1}}},
	}
	env, eff := Merge(inherited, layers, false)
	want := map[string]string{"HOME": "/root", "A": "mid", "B": "high", "KEEP": "fetched"}
	checkEnv(t, env, want)
	if len(eff) != 3 || eff[0].Name != "A" || eff[1].Name != "B" || eff[2].Name != "KEEP" {
		t.Errorf("effective = %+v; want A, B, KEEP sorted", eff)
	}

	env, eff = Merge(inherited, layers, true)
	checkEnv(t, env, map[string]string{"HOME": "/root", "A": "inherited", "B": "high", "KEEP": "inherited"})
	if len(eff) != 1 || eff[0].Name != "B" {
		t.Errorf("with noOverride effective = %+v; want only B", eff)
	}
}

func checkEnv(t *testing.T, env []string, want map[string]string) {
	t.Helper()
	got := make(map[string]string)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := got[k]; dup {
			t.Errorf("variable %s appears twice", k)
		}
		got[k] = v
	}
	if len(got) != len(want) {
		t.Errorf("env has %d variables, want %d: %v", len(got), len(want), env)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestCheckValuesNeverShowsValue(t *testing.T) {
	secret := "s3cr3t\x00tail"
	err := checkValues([]Var{{Name: "X", Value: secret, Origin: "/p/x"}})
	if err == nil || strings.Contains(err.Error(), "s3cr3t") || !strings.Contains(err.Error(), "X") {
		t.Errorf("NUL value: err = %v; want an error naming X without the value", err)
	}
	big := strings.Repeat("v", maxValueSize+1)
	err = checkValues([]Var{{Name: "BIG", Value: big, Origin: "/p/big"}})
	if err == nil || strings.Contains(err.Error(), "vvvv") {
		t.Errorf("oversized value: err = %v", err)
	}
}

func TestMergeReferencesCountAsInherited(t *testing.T) {
	inherited := []string{"DB=ssm:/db"}
	layers := []Layer{
		{Vars: []Var{{Name: "DB", Value: "resolved", Rank: -1}}},
		{Vars: []Var{{Name: "DB", Value: "from-path", Rank: 0}}},
	}
	env, _ := Merge(inherited, layers, true)
	checkEnv(t, env, map[string]string{"DB": "resolved"})
	env, _ = Merge(inherited, layers, false)
	checkEnv(t, env, map[string]string{"DB": "from-path"})
}
