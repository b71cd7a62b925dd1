package fetch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// maxValueSize bounds a single value. Secrets Manager allows 64 KiB, the
// largest value any source can produce; Linux refuses a single environment
// string over 128 KiB (MAX_ARG_STRLEN), so anything larger could never reach
// the child anyway.
const maxValueSize = 64 << 10

// A Var is one environment variable produced by a source.
type Var struct {
	Name  string
	Value string
	// Origin says where the value came from ("/app/prod/db/password",
	// "dev.env:3") for logs and errors. It never holds the value.
	Origin string
	// Rank orders sources for precedence: a higher rank wins. It is the
	// position of the flag that asked for the variable.
	Rank int
	// From says in detail where the value came from (see Provenance);
	// Overrode, set by Merge, what it took the place of, lowest rank first.
	From     Provenance
	Overrode []Provenance
}

// A Layer is what one source holds at one moment.
type Layer struct {
	Vars []Var
	// Versions maps an item (a parameter or secret name) to its version, so
	// that a poll can tell what moved without reading values again.
	Versions map[string]string
}

// A Source is one origin of variables: a parameter path, a dotenv file, a
// group of named parameters or secrets. Every source is watched the same
// way: its versions, then a refresh of what moved, so that a change costs
// calls in proportion to what changed.
type Source interface {
	// String names the source in logs and errors, e.g. "--path /app/prod".
	String() string
	// Load reads the source's current values.
	Load(ctx context.Context) (Layer, error)
	// Versions returns the current version of each item without reading
	// values; with discover it also lists the source to find added items.
	// An item is left out only on the evidence of a deletion its source
	// documents; an answer that is no such evidence is an error.
	Versions(ctx context.Context, last Layer, discover bool) (map[string]string, error)
	// Refresh returns last with the items whose version differs in now
	// read again and the items missing from now dropped.
	Refresh(ctx context.Context, last Layer, now map[string]string) (Layer, error)
}

// loadEach loads every source concurrently and keeps each one's error apart,
// so that a caller can retry only the sources that failed.
func loadEach(ctx context.Context, sources []Source) ([]Layer, []error) {
	layers := make([]Layer, len(sources))
	errs := make([]error, len(sources))
	var wg sync.WaitGroup
	for i, src := range sources {
		wg.Go(func() {
			layer, err := src.Load(ctx)
			if err == nil {
				err = checkValues(layer.Vars)
			}
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", src, withCredentialsHint(err))
				return
			}
			layers[i] = stamp(src, layer)
		})
	}
	wg.Wait()
	return layers, errs
}

// checkValues refuses values that cannot become environment variables.
// The error names the variable and its origin, never the value.
func checkValues(vars []Var) error {
	for _, v := range vars {
		if strings.IndexByte(v.Value, 0) >= 0 {
			return fmt.Errorf("%s (from %s): value contains a NUL byte, which an environment variable cannot hold", v.Name, v.Origin)
		}
		if len(v.Value) > maxValueSize {
			return fmt.Errorf("%s (from %s): value is %d bytes, over the %d-byte limit", v.Name, v.Origin, len(v.Value), maxValueSize)
		}
	}
	return nil
}

// An inconsistentError is an AWS answer that contradicts the request or itself: a
// name asked for that it neither returns nor reports missing, a listing
// that repeats a NextToken or never ends, a secret version other than the
// one asked for. Such an answer is evidence of nothing, so the read fails
// (a poll keeps the current environment), and like a 5xx it is worth
// retrying: the next answer may be whole. The message names items, never
// values.
type inconsistentError struct{ msg string }

func inconsistentf(format string, args ...any) error {
	return &inconsistentError{msg: fmt.Sprintf(format, args...)}
}

func (e *inconsistentError) Error() string { return e.msg }

// RetryableError marks the error as transient for the SDK's retry
// classification, which Transient consults.
func (e *inconsistentError) RetryableError() bool { return true }

// errStale marks a read that found an item changed again since the version
// check it follows (a parameter the check found and the read reports gone,
// a secret version that no longer exists, a file saved again): the
// versions the poll saw are out of date. The poll fails, and the next one
// checks again, as every poll does.
var errStale = errors.New("changed since the version check; checking again")

// namer collects the variables of one source and refuses two items that
// map to the same name: silently keeping either would hide a mistake.
type namer struct {
	origins map[string]string
	vars    []Var
}

func (n *namer) add(v Var) error {
	if n.origins == nil {
		n.origins = make(map[string]string)
	}
	if prev, ok := n.origins[v.Name]; ok {
		return fmt.Errorf("%s and %s both map to %s: rename one of them", prev, v.Origin, v.Name)
	}
	n.origins[v.Name] = v.Origin
	n.vars = append(n.vars, v)
	return nil
}

// Merge builds the child's environment: the inherited variables, then the
// fetched ones in rank order, a higher rank overriding a lower one. With
// noOverride an inherited variable keeps its value. Variables of negative
// rank are inherited ones resolved in place (references), so noOverride
// keeps them too. It returns the environment and the fetched variables that
// took effect, sorted by name, each with the provenance of what it
// overrode in Overrode.
func Merge(inherited []string, layers []Layer, noOverride bool) (env []string, effective []Var) {
	var all []Var
	for _, l := range layers {
		all = append(all, l.Vars...)
	}
	slices.SortStableFunc(all, func(a, b Var) int { return cmp.Compare(a.Rank, b.Rank) })

	values := make(map[string]string, len(inherited)+len(all))
	isInherited := make(map[string]bool, len(inherited))
	var order []string
	for _, kv := range inherited {
		k, v, _ := strings.Cut(kv, "=")
		if _, seen := values[k]; !seen {
			order = append(order, k)
		}
		values[k] = v
		isInherited[k] = true
	}
	won := make(map[string]Var)
	for _, v := range all {
		if noOverride && v.Rank >= 0 && isInherited[v.Name] {
			continue
		}
		if _, seen := values[v.Name]; !seen {
			order = append(order, v.Name)
		}
		v.Overrode = nil
		if prev, ok := won[v.Name]; ok {
			v.Overrode = append(slices.Clone(prev.Overrode), prev.From)
		} else if isInherited[v.Name] && v.Rank >= 0 {
			// A reference (negative rank) resolves the inherited value
			// in place; anything else overrides it.
			v.Overrode = []Provenance{{Source: InheritedSource}}
		}
		values[v.Name] = v.Value
		won[v.Name] = v
		if v.Rank < 0 {
			isInherited[v.Name] = true
		}
	}
	env = make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+values[k])
	}
	for _, v := range won {
		effective = append(effective, v)
	}
	slices.SortFunc(effective, func(a, b Var) int { return strings.Compare(a.Name, b.Name) })
	return env, effective
}
