package exec

import (
	"crypto/sha256"
	"slices"
	"strings"
)

// envHash identifies an environment without keeping its values: rejected
// environments are remembered for the life of Run.
type envHash [sha256.Size]byte

// hashEnv hashes env in sorted order: the same variables in another order
// are the same environment.
func hashEnv(env []string) envHash {
	sorted := slices.Clone(env)
	slices.Sort(sorted)
	h := sha256.New()
	for _, kv := range sorted {
		h.Write([]byte(kv))
		h.Write([]byte{0}) // no variable holds a NUL: an unambiguous separator
	}
	return envHash(h.Sum(nil))
}

// changedNames lists, sorted, the variables that are in one environment and
// not the other, or that differ between them. Names only: the values are
// compared here and go no further.
func changedNames(from, to []string) []string {
	was := make(map[string]string, len(from))
	for _, kv := range from {
		k, v, _ := strings.Cut(kv, "=")
		was[k] = v
	}
	var names []string
	for _, kv := range to {
		k, v, _ := strings.Cut(kv, "=")
		if old, ok := was[k]; !ok || old != v {
			names = append(names, k)
		}
		delete(was, k)
	}
	for k := range was {
		names = append(names, k)
	}
	slices.Sort(names)
	return slices.Compact(names)
}
