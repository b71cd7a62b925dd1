package listen

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/paramexec/paramexec/exec"
	"golang.org/x/sys/unix"
)

// selfExe is how the supervisor re-executes itself as the trampoline. The
// kernel resolves it, in the forked child, to the very file this process was
// started from, even if it has since been deleted or replaced on disk (a
// package upgrade on a host, a binary swapped in a volume): the trampoline
// is always the same build as its parent. os.Executable would give a path,
// which by then may hold another build or nothing. The cost is that /proc
// must be mounted, which every container runtime and systemd do; Bind checks
// it, so a missing /proc is a start-up error, not a failed child.
const selfExe = "/proc/self/exe"

// trampolineArg is the hidden first argument that makes paramexec the
// trampoline. No user command line starts with it: it would have to name a
// command called "__listen-exec".
const trampolineArg = "__listen-exec"

// Command returns the program and arguments that run argv as a child with
// the Set's sockets: this binary, re-executed as the trampoline, which sets
// LISTEN_PID to its own PID and then execs argv in its place (the PID
// survives exec). Start it with the environment meant for the command and
// with Files on fds 3, 4, …; argv[0] is looked up in that environment's PATH
// exactly as exec.Replace does. The program paramexec wants to exec in place
// of itself gets the same treatment: the PID is then paramexec's own.
func (s *Set) Command(argv []string) (path string, args []string) {
	names := make([]string, len(s.socks))
	for i, sock := range s.socks {
		names[i] = sock.spec.Name
	}
	args = append([]string{"paramexec", trampolineArg, strconv.Itoa(len(s.socks)), strings.Join(names, ":"), "--"}, argv...)
	return selfExe, args
}

// trampolineAtArg is trampolineArg for Replace: the sockets arrive at any
// fds, listed in an extra argument, and the trampoline moves them to 3, 4,
// … itself (see Replace for why).
const trampolineAtArg = "__listen-exec-at"

// Trampoline is the trampoline's whole job, for main to call before anything
// else: `if ok, code := listen.Trampoline(os.Args); ok { os.Exit(code) }`.
// When args (os.Args) are not a trampoline command line it returns false and
// does nothing. Otherwise it sets LISTEN_PID (its own PID), LISTEN_FDS and
// LISTEN_FDNAMES, replacing any inherited ones, and replaces itself with the
// command; it returns only on failure, with the shell's code: 127 not
// found, 126 not executable, 2 a malformed trampoline line or a socket that
// is not there (a bug in the caller, not the user's command).
func Trampoline(args []string) (handled bool, code int) {
	if len(args) < 2 || (args[1] != trampolineArg && args[1] != trampolineAtArg) {
		return false, 0
	}
	fail := func(format string, a ...any) (bool, int) {
		fmt.Fprintf(os.Stderr, "paramexec %s: "+format+"\n", append([]any{args[1]}, a...)...)
		return true, 2
	}
	at := args[1] == trampolineAtArg
	head, usage := 4, "N NAMES" // args[head] is the "--"
	if at {
		head, usage = 5, "N NAMES FDS"
	}
	if len(args) < head+2 || args[head] != "--" {
		return fail("want %s -- COMMAND [ARGS...]", usage)
	}
	n, err := strconv.Atoi(args[2])
	names := strings.Split(args[3], ":")
	if err != nil || n < 0 || (n > 0 && len(names) != n) {
		return fail("%q sockets named %q do not match", args[2], args[3])
	}
	if at {
		if err := placeSockets(args, n); err != nil {
			return fail("%v", err)
		}
	}
	// A socket missing from 3..3+n-1 would have the command take whatever
	// it finds there for one. An inherited fd has FD_CLOEXEC clear; this
	// process's own (the Go runtime's cgroup files) have it set.
	for fd := 3; fd < 3+n; fd++ {
		if !inheritedSocket(fd) {
			return fail("fd %d is not an inherited socket", fd)
		}
	}
	// The child gets 0-2 and the sockets, nothing else: not even what
	// paramexec's own parent let it inherit without close-on-exec.
	if err := CloseOnExecFrom(3 + n); err != nil {
		return fail("%v", err)
	}
	env := activationEnv(os.Environ(), n, args[3])
	argv := args[head+1:]
	err = exec.Replace(argv, env)
	fmt.Fprintf(os.Stderr, "paramexec: cannot run %q: %v\n", argv[0], err)
	return true, exec.ExitCode(err)
}

// inheritedSocket reports whether fd is a socket this process inherited:
// open, a socket, without FD_CLOEXEC.
func inheritedSocket(fd int) bool {
	var st unix.Stat_t
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil && flags&unix.FD_CLOEXEC == 0 && unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK
}

// CloseOnExecFrom sets FD_CLOEXEC on every descriptor from lowest up, so
// that no child inherits them: a supervising paramexec calls it at start-up
// for what its own parent let it inherit.
func CloseOnExecFrom(lowest int) error {
	err := unix.CloseRange(uint(lowest), math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC)
	if err == nil || !(errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL)) {
		return err
	}
	// Before Linux 5.11: one by one, as /proc lists them.
	dir, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("list fds: %w", err)
	}
	for _, e := range dir {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd >= lowest {
			// The directory's own fd is gone by now: EBADF is expected.
			unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
		}
	}
	return nil
}

// activationEnv is env with LISTEN_PID (this process), LISTEN_FDS and
// LISTEN_FDNAMES set, replacing any it had.
func activationEnv(env []string, n int, names string) []string {
	out := make([]string, 0, len(env)+3)
	for _, kv := range env {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES":
		default:
			out = append(out, kv)
		}
	}
	return append(out,
		"LISTEN_PID="+strconv.Itoa(os.Getpid()),
		"LISTEN_FDS="+strconv.Itoa(n),
		"LISTEN_FDNAMES="+names)
}
