package exec

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// errTooLarge means execve would refuse the arguments and environment as
// too large (E2BIG). It is neither "not found" nor "not executable": the
// command is fine, its environment is not.
var errTooLarge = errors.New("environment too large")

// The limits Linux's execve applies to its strings (fs/exec.c,
// bprm_stack_limits and copy_strings), as of 2.6.23.
const (
	// argMax is ARG_MAX, the floor of the total however small the stack.
	argMax = 128 << 10
	// stackCap is 3/4 of _STK_LIM (8 MiB), the ceiling of the total however
	// large the stack.
	stackCap = 6 << 20
	// binprmBuf is BINPRM_BUF_SIZE: a #! line's interpreter and argument
	// each fit in it.
	binprmBuf = 256
)

// checkSize reports, wrapping errTooLarge, why execve of path with argv and
// env would fail with E2BIG, or nil if it would not on that account. The
// error names variables and gives sizes, never a value.
func checkSize(path string, argv, env []string) error {
	maxString := 32 * os.Getpagesize() // MAX_ARG_STRLEN, NUL included
	for i, a := range argv {
		if len(a)+1 > maxString {
			return fmt.Errorf("%w: argument %d is %d bytes, over the %d one string may hold", errTooLarge, i, len(a)+1, maxString)
		}
	}
	for _, kv := range env {
		if len(kv)+1 > maxString {
			return fmt.Errorf("%w: variable %s is %d bytes, over the %d one variable may hold (NAME=value and its NUL)", errTooLarge, varName(kv), len(kv)+1, maxString)
		}
	}
	total, limit := stringsSize(path, argv, env), totalLimit()
	if total > limit {
		return fmt.Errorf("%w: arguments and environment take %d bytes, over the %d execve accepts (RLIMIT_STACK/4, at least %d, at most %d); largest: %s",
			errTooLarge, total, limit, argMax, stackCap, largest(env, 3))
	}
	return nil
}

// stringsSize is what execve counts against totalLimit: the file name, each
// string with its NUL, and a pointer for each. A script's #! line adds its
// interpreter, an optional argument and the script's name again, each
// within binprmBuf, which is counted whole.
func stringsSize(path string, argv, env []string) int {
	ptr := int(unsafe.Sizeof(uintptr(0)))
	n := len(path) + 1 + (max(len(argv), 1)+len(env))*ptr
	for _, s := range argv {
		n += len(s) + 1
	}
	for _, s := range env {
		n += len(s) + 1
	}
	if isScript(path) {
		n += 2*(binprmBuf+ptr) + len(path) + 1 + ptr
	}
	return n
}

func isScript(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var b [2]byte
	n, _ := f.Read(b[:])
	return n == 2 && b == [2]byte{'#', '!'}
}

// totalLimit is the room execve gives all strings and their pointers:
// a quarter of the stack limit the new program will have (this process's,
// which the child inherits), within [argMax, stackCap].
func totalLimit() int {
	limit := stackCap
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_STACK, &rl); err == nil && rl.Cur != unix.RLIM_INFINITY && rl.Cur/4 < uint64(limit) {
		limit = int(rl.Cur / 4)
	}
	return max(limit, argMax)
}

func varName(kv string) string {
	name, _, _ := strings.Cut(kv, "=")
	return name
}

// largest names the n largest variables of env with their sizes.
func largest(env []string, n int) string {
	sorted := slices.Clone(env)
	slices.SortFunc(sorted, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	var parts []string
	for _, kv := range sorted[:min(n, len(sorted))] {
		parts = append(parts, fmt.Sprintf("%s (%d bytes)", varName(kv), len(kv)+1))
	}
	return strings.Join(parts, ", ")
}

// checkStart reports whether argv could be started with env, as far as can
// be told without starting it: argv[0] resolves in env's PATH to an
// executable file, and the strings fit what execve accepts. The error is
// one of LookPath's or wraps errTooLarge.
func checkStart(argv, env []string) error {
	if len(argv) == 0 {
		return fmt.Errorf("exec: empty command: %w", errNotFound)
	}
	path, err := LookPath(argv[0], env)
	if err != nil {
		return err
	}
	return checkSize(path, argv, env)
}
