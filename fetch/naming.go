package fetch

import (
	"fmt"
	"strings"
)

// VarName maps a parameter name, already made relative to the path it came
// from, to an environment variable name: "/" and every character outside
// [A-Za-z0-9_] become "_", letters are upper-cased, and a leading digit gets
// a "_" prefix, so any SSM name yields a name a shell can export.
func VarName(rel string) (string, error) {
	rel = strings.TrimLeft(rel, "/")
	if rel == "" {
		return "", fmt.Errorf("empty variable name")
	}
	var b strings.Builder
	b.Grow(len(rel) + 1)
	if rel[0] >= '0' && rel[0] <= '9' {
		b.WriteByte('_')
	}
	for i := 0; i < len(rel); i++ {
		c := rel[i]
		switch {
		case c >= 'a' && c <= 'z':
			b.WriteByte(c - 'a' + 'A')
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
			b.WriteByte(c)
		default:
			// Bytes, not runes: a multi-byte character becomes several "_",
			// which keeps the mapping simple and total.
			b.WriteByte('_')
		}
	}
	return b.String(), nil
}

// relativeName returns name relative to path, as the naming rules want it:
// "/app/prod/db/password" under "/app/prod" is "db/password".
func relativeName(path, name string) string {
	rel := strings.TrimPrefix(name, path)
	return strings.TrimPrefix(rel, "/")
}

// lastSegment is the part of a parameter or secret name after its last "/".
func lastSegment(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[i+1:]
	}
	return name
}
