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

// Trampoline is the trampoline's whole job, for main to call before anything
// else: `if ok, code := listen.Trampoline(os.Args); ok { os.Exit(code) }`.
// When args (os.Args) are not a trampoline command line it returns false and
// does nothing. Otherwise it sets LISTEN_PID (its own PID), LISTEN_FDS and
// LISTEN_FDNAMES, replacing any inherited ones, and replaces itself with the
// command; it returns only on failure, with the shell's code: 127 not
// found, 126 not executable, 2 a malformed trampoline line or a socket that
// is not there (a bug in the caller, not the user's command).
func Trampoline(args []string) (handled bool, code int) {
	if len(args) < 2 || args[1] != trampolineArg {
		return false, 0
	}
	if len(args) < 6 || args[4] != "--" {
		fmt.Fprintf(os.Stderr, "paramexec %s: want N NAMES -- COMMAND [ARGS...]\n", trampolineArg)
		return true, 2
	}
	n, err := strconv.Atoi(args[2])
	names := strings.Split(args[3], ":")
	if err != nil || n < 0 || (n > 0 && len(names) != n) {
		fmt.Fprintf(os.Stderr, "paramexec %s: %q sockets named %q do not match\n", trampolineArg, args[2], args[3])
		return true, 2
	}
	// A socket missing from 3..3+n-1 would have the command take whatever
	// it finds there for one. An inherited fd has FD_CLOEXEC clear; this
	// process's own (the Go runtime's cgroup files) have it set.
	for fd := 3; fd < 3+n; fd++ {
		var st unix.Stat_t
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err == nil && flags&unix.FD_CLOEXEC == 0 && unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
			continue
		}
		fmt.Fprintf(os.Stderr, "paramexec %s: fd %d is not an inherited socket\n", trampolineArg, fd)
		return true, 2
	}
	// The child gets 0-2 and the sockets, nothing else: not even what
	// paramexec's own parent let it inherit without close-on-exec.
	if err := CloseOnExecFrom(3 + n); err != nil {
		fmt.Fprintf(os.Stderr, "paramexec %s: %v\n", trampolineArg, err)
		return true, 2
	}
	env := activationEnv(os.Environ(), n, args[3])
	argv := args[5:]
	err = exec.Replace(argv, env)
	fmt.Fprintf(os.Stderr, "paramexec: cannot run %q: %v\n", argv[0], err)
	return true, exec.ExitCode(err)
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

// Replace executes argv in place of this process, as exec.Replace does, with
// the Set's sockets on fds 3, 4, … and LISTEN_PID this process's own PID:
// --listen without supervision needs no trampoline. Every other fd from 3
// up is made close-on-exec. It returns only on failure, with an error for
// exec.ExitCode; the process is then left with its fds from 3 up
// rearranged and must exit.
func (s *Set) Replace(argv, env []string) error {
	n := len(s.socks)
	// Out of the way first: a socket of the Set may sit where another is
	// to go.
	high := make([]int, n)
	for i, sock := range s.socks {
		fd, err := unix.FcntlInt(sock.file.Fd(), unix.F_DUPFD_CLOEXEC, 3+n)
		if err != nil {
			return fmt.Errorf("dup socket %s: %w: %w", sock.spec, exec.ErrNotExecutable, err)
		}
		high[i] = fd
	}
	names := make([]string, n)
	for i, fd := range high {
		// Without O_CLOEXEC: these are to survive the exec.
		if err := unix.Dup3(fd, 3+i, 0); err != nil {
			return fmt.Errorf("place socket %s on fd %d: %w: %w", s.socks[i].spec, 3+i, exec.ErrNotExecutable, err)
		}
		names[i] = s.socks[i].spec.Name
	}
	if err := CloseOnExecFrom(3 + n); err != nil {
		return fmt.Errorf("%w: %w", exec.ErrNotExecutable, err)
	}
	return exec.Replace(argv, activationEnv(env, n, strings.Join(names, ":")))
}
