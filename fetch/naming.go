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
	name := mapName(rel)
	if name == "" {
		return "", fmt.Errorf("empty variable name")
	}
	if name[0] >= '0' && name[0] <= '9' {
		name = "_" + name
	}
	return name, nil
}

// prefixedName is the variable a JSON key of a secret becomes: VarName's
// without a prefix; with one, the prefix followed by the key mapped as
// VarName maps it, but without the "_" before a leading digit, which only a
// bare name needs ("APP_" and "1pw" make APP_1PW), and with no complaint
// about an empty key (APP_), since the prefix already makes the name valid.
func prefixedName(prefix, key string) (string, error) {
	if prefix == "" {
		return VarName(key)
	}
	return prefix + mapName(key), nil
}

// mapName is the naming rule without its checks: leading "/" dropped,
// letters upper-cased, everything outside [A-Za-z0-9_] made "_".
func mapName(rel string) string {
	rel = strings.TrimLeft(rel, "/")
	var b strings.Builder
	b.Grow(len(rel))
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
	return b.String()
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
