package listen_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/exec"
	"github.com/paramexec/paramexec/internal/listen"
	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary, re-executed, play a part instead of
// running tests: the os/exec test pattern.
const helperEnv = "PARAMEXEC_LISTEN_TEST_HELPER"

func TestMain(m *testing.M) {
	// The hook main.go has: this test binary is its own trampoline.
	if ok, code := listen.Trampoline(os.Args); ok {
		os.Exit(code)
	}
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "check":
		helperCheck()
	case "bind":
		helperBind()
	case "parent":
		helperParent()
	case "replace":
		helperReplace()
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// report is what the check helper finds, as sd_listen_fds(3) would.
type report struct {
	PID       int      `json:"pid"`
	ListenPID string   `json:"listen_pid"`
	Fds       int      `json:"fds"` // sd_listen_fds's result: 0 unless LISTEN_PID matches
	Names     []string `json:"names"`
	Sockets   []sock   `json:"sockets"`
	Open      []int    `json:"open"` // every inherited fd
	Argv      []string `json:"argv"`
}

type sock struct {
	Fd        int    `json:"fd"`
	IsSocket  bool   `json:"is_socket"`
	Stream    bool   `json:"stream"`
	Listening bool   `json:"listening"`
	Nonblock  bool   `json:"nonblock"`
	Addr      string `json:"addr"` // tcp port or unix path
}

// helperCheck is a socket-activated service: it checks the environment as
// sd_listen_fds(3) does (LISTEN_PID must be its PID, else no fds), writes a
// report to stdout, then accepts one connection on each socket with a
// blocking accept(2) and writes "PID NAME\n" to it.
func helperCheck() {
	r := report{PID: os.Getpid(), ListenPID: os.Getenv("LISTEN_PID"), Argv: os.Args}
	if pid, err := strconv.Atoi(r.ListenPID); err == nil && pid == r.PID {
		if n, err := strconv.Atoi(os.Getenv("LISTEN_FDS")); err == nil {
			r.Fds = n
		}
	}
	if r.Fds > 0 {
		r.Names = strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	}
	for fd := 3; fd < 3+r.Fds; fd++ {
		s := sock{Fd: fd}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil {
			s.IsSocket = st.Mode&unix.S_IFMT == unix.S_IFSOCK
		}
		typ, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		s.Stream = typ == unix.SOCK_STREAM
		acc, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		s.Listening = acc == 1
		fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		s.Nonblock = fl&unix.O_NONBLOCK != 0
		switch sa := must(unix.Getsockname(fd)).(type) {
		case *unix.SockaddrInet4:
			s.Addr = strconv.Itoa(sa.Port)
		case *unix.SockaddrInet6:
			s.Addr = strconv.Itoa(sa.Port)
		case *unix.SockaddrUnix:
			s.Addr = sa.Name
		}
		r.Sockets = append(r.Sockets, s)
	}
	r.Open = openFds()
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		os.Exit(1)
	}
	for i, s := range r.Sockets {
		if !s.Listening {
			continue
		}
		// Blocking, as systemd's sockets are: an O_NONBLOCK socket would
		// fail here with EAGAIN.
		c, _, err := unix.Accept(s.Fd)
		if err != nil {
			fmt.Fprintf(os.Stderr, "accept fd %d: %v\n", s.Fd, err)
			os.Exit(1)
		}
		unix.Write(c, []byte(fmt.Sprintf("%d %s\n", r.PID, r.Names[i])))
		unix.Close(c)
	}
	os.Exit(0)
}

func must[T any](v T, err error) T {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	return v
}

// openFds lists the descriptors this process inherited: those in
// /proc/self/fd without FD_CLOEXEC (raw system calls, so that nothing but
// the directory's own descriptor, left out, is opened to list them).
func openFds() []int {
	dfd, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer unix.Close(dfd)
	var fds []int
	buf := make([]byte, 4096)
	for {
		n, err := unix.ReadDirent(dfd, buf)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if n == 0 {
			return fds
		}
		_, _, names := unix.ParseDirent(buf[:n], -1, nil)
		for _, name := range names {
			fd, err := strconv.Atoi(name)
			if err != nil || fd == dfd {
				continue
			}
			// What this process opened itself (the Go runtime keeps
			// cgroup files open) is close-on-exec; what it inherited
			// cannot be, or exec would have closed it.
			if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && fl&unix.FD_CLOEXEC == 0 {
				fds = append(fds, fd)
			}
		}
	}
}

// helperBind binds the --listen values in os.Args[1:] and reports the
// error's class on stderr: "usage", "bind" or "ok".
func helperBind() {
	specs, err := listen.ParseAll(os.Args[1:])
	if err == nil {
		var set *listen.Set
		if set, err = listen.Bind(context.Background(), specs); err == nil {
			set.Close()
		}
	}
	switch {
	case errors.Is(err, listen.ErrUsage):
		fmt.Fprintf(os.Stderr, "usage: %v\n", err)
	case errors.Is(err, listen.ErrBind):
		fmt.Fprintf(os.Stderr, "bind: %v\n", err)
	case err != nil:
		fmt.Fprintf(os.Stderr, "other: %v\n", err)
	default:
		fmt.Fprintln(os.Stderr, "ok")
	}
	os.Exit(0)
}

// helperParent is the supervisor's side in a process of its own: it deletes
// its own executable (as a package upgrade would), binds the --listen values
// in HELPER_LISTEN (comma-separated), opens descriptors it does not pass,
// starts os.Args[1:] with the sockets by ForkExec, as the supervisor starts
// children, prints the child's PID on stderr and exits with its code.
func helperParent() {
	self := must(os.Executable())
	must(0, os.Remove(self))
	specs := must(listen.ParseAll(strings.Split(os.Getenv("HELPER_LISTEN"), ",")))
	set := must(listen.Bind(context.Background(), specs))
	defer set.Close()
	// Descriptors the child must not see: Go opens them close-on-exec; f
	// stands for one inherited without it.
	f := must(os.Open("/proc/self/status"))
	defer f.Close()
	must(unix.FcntlInt(f.Fd(), unix.F_SETFD, 0))
	r, w := must2(os.Pipe())
	defer r.Close()
	defer w.Close()
	files := must(set.Files())
	fds := []uintptr{0, 1, 2}
	for _, f := range files {
		fds = append(fds, f.Fd())
	}
	path, argv := set.Command(os.Args[1:])
	env := []string{helperEnv + "=check", "PATH=" + os.Getenv("HELPER_PATH"), "LISTEN_PID=1"}
	pid := must(syscall.ForkExec(path, argv, &syscall.ProcAttr{Env: env, Files: fds}))
	for _, f := range files {
		f.Close()
	}
	fmt.Fprintf(os.Stderr, "child pid %d\n", pid)
	var ws syscall.WaitStatus
	must(syscall.Wait4(pid, &ws, 0, nil))
	os.Exit(ws.ExitStatus())
}

func must2[T, U any](t T, u U, err error) (T, U) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	return t, u
}

// helperReplace binds the --listen values in HELPER_LISTEN and replaces
// itself with os.Args[1:] by Set.Replace, holding an fd opened without
// close-on-exec that must not reach the command.
func helperReplace() {
	specs := must(listen.ParseAll(strings.Split(os.Getenv("HELPER_LISTEN"), ",")))
	set := must(listen.Bind(context.Background(), specs))
	f := must(os.Open("/proc/self/status"))
	must(unix.FcntlInt(f.Fd(), unix.F_SETFD, 0))
	err := set.Replace(os.Args[1:], []string{helperEnv + "=check", "LISTEN_FDS=7", "PATH=" + os.Getenv("HELPER_PATH")})
	fmt.Fprintln(os.Stderr, "replace:", err)
	// paramexec goes on after a failed Replace (it logs, runs its deferred
	// closes): the runtime must still work. A sleep with every goroutine
	// idle has the scheduler wait in the netpoller, on its epoll fd.
	time.Sleep(20 * time.Millisecond)
	os.Exit(exec.ExitCode(err))
}
