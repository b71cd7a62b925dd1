package fetch

import (
	"fmt"
	"strings"

	"github.com/paramexec/paramexec/internal/environ"
)

// A Secret is one secret asked for: a --secret flag or a reference in an
// inherited variable.
type Secret struct {
	// ID is the secret's name or ARN.
	ID string
	// VersionStage and VersionID pin a version; both empty follow
	// AWSCURRENT. A version id never moves; a stage may.
	VersionStage, VersionID string

	// Var, when set, makes the secret a single variable holding the whole
	// value, or the value of JSONKey, as an ECS task definition's
	// valueFrom does. That is what references use.
	Var     string
	JSONKey string

	// Prefix, for --secret only, goes before the name of each variable a
	// JSON object yields. For a secret that is not a JSON object (or is
	// binary) it is the variable's whole name: --secret prod/api-key=API_KEY
	// then names the variable as --param NAME=VAR would, which is what
	// someone writing "=" after a plain secret means.
	Prefix string
	// whole keeps a JSON object as one variable, named as a secret that is
	// not one (--deliver document: the document as one file).
	whole bool

	Rank int
}

// ParseSecretFlag parses a --secret value: ID[=PREFIX], ID a name or an ARN.
// A secret name may hold "=", so the last "=" starts PREFIX; an empty
// PREFIX means none, which lets "--secret a=b=" name the secret "a=b".
func ParseSecretFlag(s string, rank int) (Secret, error) {
	id, prefix := s, ""
	if i := strings.LastIndexByte(s, '='); i >= 0 {
		id, prefix = s[:i], s[i+1:]
	}
	if prefix != "" && !environ.ValidName(prefix) {
		return Secret{}, fmt.Errorf("--secret %q: prefix %q cannot start a variable name ([A-Za-z_][A-Za-z0-9_]*)", s, prefix)
	}
	if a, ok := parseARN(id); ok {
		name, isSecret := strings.CutPrefix(a.Resource, "secret:")
		if a.Service != "secretsmanager" || !isSecret || !validSecretName(name) {
			return Secret{}, fmt.Errorf("--secret %q: not a secret ARN (want arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME; JSON keys and versions are for references)", s)
		}
	} else if !validSecretName(id) {
		return Secret{}, fmt.Errorf("--secret %q: invalid secret name (letters, digits and /_+=.@- only)", s)
	}
	return Secret{ID: id, Prefix: prefix, Rank: rank}, nil
}

// validSecretName accepts what Secrets Manager accepts in a name.
func validSecretName(name string) bool {
	if name == "" || len(name) > 512 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("/_+=.@-", c) >= 0) {
			return false
		}
	}
	return true
}

// key identifies one read of a secret: items asking for the same secret
// and version share it.
func (s Secret) key() string {
	k := s.ID
	if stage := s.stage(); stage != currentStage || s.VersionID != "" {
		k += " stage " + stage
	}
	if s.VersionID != "" {
		k += " version " + s.VersionID
	}
	return k
}

// stage is the staging label followed.
func (s Secret) stage() string {
	if s.VersionStage == "" {
		return currentStage
	}
	return s.VersionStage
}

// source is the flag or reference that asked for the secret, for
// Provenance, in a canonical spelling: "--secret prod/db=DB_",
// "reference DB=secretsmanager:prod/db#password", or ECS's ARN form.
func (s Secret) source() string {
	switch {
	case s.Var == "" && s.Prefix != "":
		return "--secret " + s.ID + "=" + s.Prefix
	case s.Var == "":
		return "--secret " + s.ID
	case !strings.HasPrefix(s.ID, "arn:"):
		ref := "secretsmanager:" + s.ID
		if s.JSONKey != "" {
			ref += "#" + s.JSONKey
		}
		return "reference " + s.Var + "=" + ref
	}
	ref := strings.TrimRight(s.ID+":"+s.JSONKey+":"+s.VersionStage+":"+s.VersionID, ":")
	return "reference " + s.Var + "=" + ref
}

// selector says in words what the secret follows, for Provenance.
func (s Secret) selector() string {
	if s.VersionID != "" {
		return "version id " + s.VersionID
	}
	return "stage " + s.stage()
}

// current reports whether the secret follows AWSCURRENT, which is all
// BatchGetSecretValue can read.
func (s Secret) current() bool { return s.VersionID == "" && s.stage() == currentStage }

// describe names the secret in errors: the variable first when a reference
// asked for it.
func (s Secret) describe() string {
	if s.Var != "" {
		return fmt.Sprintf("variable %s (secret %s)", s.Var, s.ID)
	}
	return "secret " + s.ID
}
