// Package environ reads and filters environment lists: KEY=VALUE strings as
// os.Environ returns them and syscall.Exec takes them.
package environ

import "strings"

// Lookup returns the value of name in list. A name given twice counts with
// its last value, the one getenv(3) in a child that got list would see (as
// os/exec keeps the last of duplicates).
func Lookup(list []string, name string) (string, bool) {
	for i := len(list) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(list[i], "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}

// Last maps each name in list to its last value, as Lookup finds it.
// Entries without "=" are not variables and are left out.
func Last(list []string) map[string]string {
	out := make(map[string]string, len(list))
	for _, kv := range list {
		if k, v, ok := strings.Cut(kv, "="); ok {
			out[k] = v
		}
	}
	return out
}

// Filter returns the entries of list whose name keep accepts, in order. An
// entry without "=" is judged by the whole of it.
func Filter(list []string, keep func(name string) bool) []string {
	out := make([]string, 0, len(list))
	for _, kv := range list {
		if k, _, _ := strings.Cut(kv, "="); keep(k) {
			out = append(out, kv)
		}
	}
	return out
}

// Without returns list without the variable name.
func Without(list []string, name string) []string {
	return Filter(list, func(n string) bool { return n != name })
}

// ValidName reports whether s can be exported as an environment variable
// name by a POSIX shell: [A-Za-z_][A-Za-z0-9_]*.
func ValidName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
		if !letter && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}
