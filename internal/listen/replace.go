package listen

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/paramexec/paramexec/exec"
	"golang.org/x/sys/unix"
)

// Replace executes argv in place of this process, as exec.Replace does, with
// the Set's sockets on fds 3, 4, … and LISTEN_PID this process's own PID.
// Every other fd from 3 up is made close-on-exec. It returns only on
// failure, with an error for exec.ExitCode: a command that is not there is
// found out here, before anything changes.
//
// The sockets cannot be moved onto 3, 4, … here: while the Go runtime runs,
// those fds may be its own (the netpoller's epoll fd and eventfd among
// them), which other threads use at any moment, so a dup3 over one crashes
// the process ("epollwait on fd 7 failed with 22"). So this process moves
// nothing. It only makes fds 3 … 3+n-1 survive the exec (reserve: a flag
// cleared, or a free number filled by the kernel), and execs the
// trampoline in place with the sockets at fds of their own above them.
// The trampoline is a new image whose runtime found 3 … 3+n-1 taken at
// its start and so opened its own files above them: it owns nothing
// there, and moves the sockets onto those fds (placeSockets) with no
// runtime hazard, then execs the command. The PID is this process's
// throughout.
func (s *Set) Replace(argv, env []string) error {
	if len(argv) == 0 {
		return exec.Replace(argv, env)
	}
	if _, err := exec.LookPath(argv[0], env); err != nil {
		return err
	}
	n := len(s.socks)
	if err := CloseOnExecFrom(3); err != nil {
		return fmt.Errorf("%w: %w", exec.ErrNotExecutable, err)
	}
	fds := make([]string, n)
	names := make([]string, n)
	for i, sock := range s.socks {
		// Inheritable, and above the fds the sockets are to take.
		fd, err := unix.FcntlInt(sock.file.Fd(), unix.F_DUPFD, 3+n)
		if err != nil {
			return fmt.Errorf("dup socket %s: %w: %w", sock.spec, exec.ErrNotExecutable, err)
		}
		fds[i], names[i] = strconv.Itoa(fd), sock.spec.Name
	}
	if n > 0 {
		if err := reserve(n, s.socks[0].file.Fd()); err != nil {
			return fmt.Errorf("%w: %w", exec.ErrNotExecutable, err)
		}
	}
	args := append([]string{selfExe, trampolineAtArg, strconv.Itoa(n), strings.Join(names, ":"), strings.Join(fds, ","), "--"}, argv...)
	return exec.Replace(args, env)
}

// reserve makes fds 3 … 3+n-1 open and inheritable without replacing any
// open descriptor: each free one gets a copy of spare, at a number the
// kernel picks (F_DUPFD: the lowest free), and each open one only loses
// FD_CLOEXEC, a flag, which disturbs no user of it, the Go runtime
// included. After an exec, the new image's runtime finds them taken and
// opens its own files above them.
func reserve(n int, spare uintptr) error {
	for {
		fd, err := unix.FcntlInt(spare, unix.F_DUPFD, 3)
		if err != nil {
			return fmt.Errorf("reserve fds 3 to %d: %w", 2+n, err)
		}
		if fd >= 3+n {
			unix.Close(fd)
			break
		}
	}
	for fd := 3; fd < 3+n; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return fmt.Errorf("reserve fd %d: %w", fd, err)
		}
	}
	return nil
}

// placeSockets is the trampoline's part of Replace: args[4] lists the fds
// the sockets arrived at, and they go to 3, 4, …. That is safe only if
// every fd in 3 … 3+n-1 was inherited (FD_CLOEXEC clear): then this
// process's runtime owns none of them. If one is free or the runtime's
// (something in the process that exec'd us closed a reserved fd at the
// last moment), the trampoline reserves them as Replace did and execs
// itself once more, marking FDS with a leading '+'; a second miss is an
// error.
func placeSockets(args []string, n int) error {
	list, again := strings.CutPrefix(args[4], "+")
	fds, err := parseFds(list, n)
	if err != nil {
		return err
	}
	for fd := 3; fd < 3+n; fd++ {
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC == 0 {
			continue
		}
		if again {
			return fmt.Errorf("fd %d is not reserved for a socket", fd)
		}
		if err := reserve(n, uintptr(fds[0])); err != nil {
			return err
		}
		retry := append([]string{selfExe}, args[1:]...)
		retry[4] = "+" + list
		return fmt.Errorf("exec the trampoline again: %w", unix.Exec(selfExe, retry, os.Environ()))
	}
	// Copies above the range first: a socket may sit where another goes.
	high := make([]int, n)
	for i, fd := range fds {
		if high[i], err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3+n); err != nil {
			return fmt.Errorf("dup socket fd %d: %w", fd, err)
		}
	}
	for i, fd := range high {
		// Without O_CLOEXEC: these are to survive the exec.
		if err := unix.Dup3(fd, 3+i, 0); err != nil {
			return fmt.Errorf("place socket on fd %d: %w", 3+i, err)
		}
	}
	return nil
}

// parseFds parses FDS: n comma-separated inherited sockets.
func parseFds(list string, n int) ([]int, error) {
	var fds []int
	if n == 0 && list == "" {
		return nil, nil
	}
	for f := range strings.SplitSeq(list, ",") {
		fd, err := strconv.Atoi(f)
		if err != nil || !inheritedSocket(fd) {
			return nil, fmt.Errorf("fd %q is not an inherited socket", f)
		}
		fds = append(fds, fd)
	}
	if len(fds) != n {
		return nil, errors.New("FDS does not list one fd per socket")
	}
	return fds, nil
}
