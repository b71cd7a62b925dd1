package listen_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/listen"
	"golang.org/x/sys/unix"
)

// deadline bounds every wait for an event; it is no speed assertion.
const deadline = 30 * time.Second

func TestParse(t *testing.T) {
	good := []struct {
		in   string
		want listen.Spec
	}{
		{"tcp://:8080", listen.Spec{Name: "listen3", Network: "tcp", Address: ":8080"}},
		{"tcp://127.0.0.1:80", listen.Spec{Name: "listen3", Network: "tcp", Address: "127.0.0.1:80"}},
		{"tcp://[::1]:0", listen.Spec{Name: "listen3", Network: "tcp", Address: "[::1]:0"}},
		{"localhost:08080", listen.Spec{Name: "listen3", Network: "tcp", Address: "localhost:8080"}},
		{"http=tcp://:80", listen.Spec{Name: "http", Network: "tcp", Address: ":80"}},
		{"unix:///run/app/a.sock", listen.Spec{Name: "listen3", Network: "unix", Address: "/run/app/a.sock"}},
		{"unix:///run/a=b.sock", listen.Spec{Name: "listen3", Network: "unix", Address: "/run/a=b.sock"}},
		{"admin api=unix:///run//x/../a.sock", listen.Spec{Name: "admin api", Network: "unix", Address: "/run/a.sock"}},
	}
	for _, c := range good {
		got, err := listen.Parse(c.in, 3)
		if err != nil || got != c.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	bad := []string{
		"", "tcp://", "tcp://:", "tcp://:http", "tcp://:65536", "tcp://:-1", "tcp://host", "tcp://:80/x",
		"udp://:53", "unix://run/a.sock", "unix://", "unix:///", "unix:///" + strings.Repeat("a", 107),
		"=tcp://:80", "a:b=tcp://:80", "tab\there=tcp://:80", strings.Repeat("n", 256) + "=tcp://:80",
	}
	for _, in := range bad {
		if got, err := listen.Parse(in, 0); !errors.Is(err, listen.ErrUsage) {
			t.Errorf("Parse(%q) = %+v, %v; want ErrUsage", in, got, err)
		}
	}
	if _, err := listen.ParseAll([]string{"tcp://:80", "web=tcp://:80"}); !errors.Is(err, listen.ErrUsage) {
		t.Errorf("the same address twice: %v, want ErrUsage", err)
	}
	specs, err := listen.ParseAll([]string{"a=tcp://:1", "tcp://:2", "a=tcp://:3"})
	if err != nil || specs[1].Name != "listen1" || specs[2].Name != "a" {
		t.Errorf("ParseAll = %+v, %v; want names a, listen1, a", specs, err)
	}
}

func bindOne(t *testing.T, value string) (*listen.Set, error) {
	t.Helper()
	specs, err := listen.ParseAll([]string{value})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	set, err := listen.Bind(ctx, specs)
	if err == nil {
		t.Cleanup(func() { set.Close() })
	}
	return set, err
}

func TestBindErrors(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(dir, "live.sock")
	liveLn, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer liveLn.Close()
	for _, c := range []struct{ addr, inErr string }{
		{"tcp://" + taken.Addr().String(), "another process listens there"},
		// TEST-NET-1 (RFC 5737) is no interface's address.
		{"tcp://192.0.2.1:0", "no local interface has that address"},
		{"unix://" + filepath.Join(dir, "missing", "a.sock"), "no such file"},
		{"unix://" + regular, "not a socket"},
		{"unix://" + live, "another process listens on"},
	} {
		_, err := bindOne(t, c.addr)
		if !errors.Is(err, listen.ErrBind) || !strings.Contains(err.Error(), c.inErr) {
			t.Errorf("Bind(%s) = %v; want ErrBind saying %q", c.addr, err, c.inErr)
		}
	}
	// All or nothing: the socket bound before the failure is gone again.
	first := filepath.Join(dir, "first.sock")
	specs, err := listen.ParseAll([]string{"unix://" + first, "tcp://" + taken.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if set, err := listen.Bind(context.Background(), specs); !errors.Is(err, listen.ErrBind) {
		set.Close()
		t.Errorf("Bind with the second address in use: %v; want ErrBind", err)
	}
	if _, err := os.Lstat(first); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after a failed Bind, the first socket file: %v; want it removed", err)
	}
	if b, err := os.ReadFile(regular); err != nil || string(b) != "keep me" {
		t.Errorf("a regular file at the path was touched: %q, %v", b, err)
	}
	if c, err := net.Dial("unix", live); err != nil {
		t.Errorf("the live socket was taken away: %v", err)
	} else {
		c.Close()
	}
}

// TestBindPermissionDenied binds as an unprivileged user (nobody, when the
// tests run as root) a port below ip_unprivileged_port_start and a socket
// in a directory it cannot write: both are ErrBind, with the cause.
func TestBindPermissionDenied(t *testing.T) {
	dir, err := os.MkdirTemp("", "listen")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	locked := filepath.Join(dir, "locked")
	if err := os.Mkdir(locked, 0o755); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{"unix://" + filepath.Join(locked, "a.sock"): "its directory is not writable"}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); err == nil {
		if start, _ := strconv.Atoi(strings.TrimSpace(string(b))); start > 1 {
			cases["tcp://127.0.0.1:"+strconv.Itoa(start-1)] = "needs root or CAP_NET_BIND_SERVICE"
		}
	}
	var cred *syscall.Credential
	helper, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// nobody must reach the test binary: a copy goes in a 0755
		// directory (go test's build directory is 0700).
		cred = &syscall.Credential{Uid: 65534, Gid: 65534}
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(helper)
		if err != nil {
			t.Fatal(err)
		}
		helper = filepath.Join(dir, "listen.test")
		if err := os.WriteFile(helper, data, 0o755); err != nil {
			t.Fatal(err)
		}
	} else if err := os.Chmod(locked, 0o555); err != nil {
		t.Fatal(err)
	}
	for addr, inErr := range cases {
		cmd := osexec.Command(helper, addr)
		cmd.Env = append(os.Environ(), helperEnv+"=bind")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "bind: ") || !strings.Contains(string(out), inErr) {
			t.Errorf("Bind(%s) unprivileged: %v, %s; want ErrBind saying %q", addr, err, out, inErr)
		}
	}
}

// TestUnixSocketFile: the file is 0660 whatever the umask, a stale socket
// from a previous run is replaced, and Close removes the file only while it
// is still the one it bound.
func TestUnixSocketFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.sock")
	for _, mask := range []int{0, 0o077, 0o022} {
		old := syscall.Umask(mask)
		set, err := bindOne(t, "unix://"+path)
		syscall.Umask(old)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode() != os.ModeSocket|listen.SocketMode {
			t.Errorf("umask %#o: socket file %v, %v; want %v", mask, fi.Mode(), err, os.ModeSocket|listen.SocketMode)
		}
		if err := set.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after Close: %v; want the file removed", err)
		}
	}

	// A leftover: a socket file nobody listens on (a paramexec killed by
	// SIGKILL leaves one).
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	set, err := bindOne(t, "unix://"+path)
	if err != nil {
		t.Fatalf("stale socket file: %v; want it replaced", err)
	}
	files, err := set.Files()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close()
	}
	// Another process's socket at the path by now must survive our Close.
	os.Remove(path)
	other, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	set.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("Close removed a socket file that was not its own: %v", err)
	}
}

// TestChildGetsSockets starts a socket-activated child as the supervisor
// does (ForkExec with ProcAttr.Files) and by os/exec's ExtraFiles, with a
// stale LISTEN_PID in its environment and the command found on the PATH of
// the child's environment, not this process's. The child checks the
// protocol as sd_listen_fds(3) does, lists its fds, and answers on each
// socket.
func TestChildGetsSockets(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, filepath.Join(bin, "sdcheck")); err != nil {
		t.Fatal(err)
	}
	sockPath := filepath.Join(dir, "admin.sock")
	specs, err := listen.ParseAll([]string{"web=tcp://127.0.0.1:0", "unix://" + sockPath, "tcp://[::1]:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	set, err := listen.Bind(ctx, specs)
	if err != nil {
		if strings.Contains(err.Error(), "[::1]") {
			t.Fatalf("this machine has no IPv6 loopback: %v", err)
		}
		t.Fatal(err)
	}
	defer set.Close()
	// Descriptors of this process the child must not get: extra stands
	// for one paramexec inherited without close-on-exec.
	extra, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if _, err := unix.FcntlInt(extra.Fd(), unix.F_SETFD, 0); err != nil {
		t.Fatal(err)
	}
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	env := []string{helperEnv + "=check", "PATH=" + bin, "LISTEN_PID=1", "LISTEN_FDS=9"}
	for _, how := range []string{"ForkExec", "ExtraFiles"} {
		t.Run(how, func(t *testing.T) {
			files, err := set.Files()
			if err != nil {
				t.Fatal(err)
			}
			path, argv := set.Command([]string{"sdcheck", "arg 1"})
			stdout, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer stdout.Close()
			var pid int
			var wait func() error
			switch how {
			case "ForkExec":
				fds := []uintptr{0, w.Fd(), 2}
				for _, f := range files {
					fds = append(fds, f.Fd())
				}
				pid, err = syscall.ForkExec(path, argv, &syscall.ProcAttr{Env: env, Files: fds})
				if err != nil {
					t.Fatal(err)
				}
				wait = func() error {
					var ws syscall.WaitStatus
					if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
						return err
					}
					if ws.ExitStatus() != 0 {
						return fmt.Errorf("child: %v", ws)
					}
					return nil
				}
			case "ExtraFiles":
				cmd := &osexec.Cmd{Path: path, Args: argv, Env: env, Stdout: w, Stderr: os.Stderr, ExtraFiles: files}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				pid, wait = cmd.Process.Pid, cmd.Wait
			}
			w.Close()
			for _, f := range files {
				f.Close()
			}
			killer := time.AfterFunc(deadline, func() { syscall.Kill(pid, syscall.SIGKILL) })
			defer killer.Stop()

			var r report
			if err := json.NewDecoder(bufio.NewReader(stdout)).Decode(&r); err != nil {
				t.Fatalf("child's report: %v", err)
			}
			if r.PID != pid || r.ListenPID != strconv.Itoa(pid) {
				t.Errorf("child PID %d, LISTEN_PID %q; want both %d (the PID started)", r.PID, r.ListenPID, pid)
			}
			if want := []string{"sdcheck", "arg 1"}; !slices.Equal(r.Argv, want) {
				t.Errorf("child argv %q; want %q", r.Argv, want)
			}
			if r.Fds != 3 || !slices.Equal(r.Names, []string{"web", "listen1", "listen2"}) {
				t.Errorf("sd_listen_fds = %d, names %q; want 3, [web listen1 listen2]", r.Fds, r.Names)
			}
			if want := []int{0, 1, 2, 3, 4, 5}; !slices.Equal(r.Open, want) {
				t.Errorf("child's open fds %v; want exactly %v (everything else close-on-exec)", r.Open, want)
			}
			addrs := make([]string, 0, 3)
			for i, s := range r.Sockets {
				if s.Fd != 3+i || !s.IsSocket || !s.Stream || !s.Listening || s.Nonblock {
					t.Errorf("fd %d: %+v; want a blocking listening stream socket", 3+i, s)
				}
				addrs = append(addrs, s.Addr)
			}
			if len(addrs) != 3 || addrs[1] != sockPath {
				t.Fatalf("socket addresses %q; want [PORT %s PORT]", addrs, sockPath)
			}
			// Each socket is the one bound: a connection reaches the child.
			for i, a := range []string{"127.0.0.1:" + addrs[0], sockPath, "[::1]:" + addrs[2]} {
				network := "tcp"
				if i == 1 {
					network = "unix"
				}
				c, err := net.DialTimeout(network, a, deadline)
				if err != nil {
					t.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(deadline))
				line, err := bufio.NewReader(c).ReadString('\n')
				c.Close()
				if want := fmt.Sprintf("%d %s\n", pid, r.Names[i]); line != want {
					t.Errorf("%s answered %q, %v; want %q", a, line, err, want)
				}
			}
			if err := wait(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestTrampolineFromDeletedBinary: the supervisor's binary is deleted (a
// package upgrade) before it starts a child; the trampoline still runs,
// because it is reached by /proc/self/exe, not by path.
func TestTrampolineFromDeletedBinary(t *testing.T) {
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	parent := filepath.Join(dir, "paramexec")
	if err := os.WriteFile(parent, data, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	// The child is the original test binary, found on the child's PATH.
	cmd := osexec.CommandContext(ctx, parent, filepath.Base(self))
	cmd.Env = append(os.Environ(), helperEnv+"=parent", "HELPER_LISTEN=tcp://127.0.0.1:0", "HELPER_PATH="+filepath.Dir(self))
	r, stderr := startReporting(t, cmd)
	if r.Fds != 1 || len(r.Sockets) != 1 || !r.Sockets[0].Listening || !slices.Equal(r.Open, []int{0, 1, 2, 3}) {
		t.Errorf("child's report %+v; want one listening socket on fd 3 and fds 0-3 only", r)
	}
	if len(r.Sockets) == 1 {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+r.Sockets[0].Addr, deadline)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(deadline))
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if want := fmt.Sprintf("%d listen0\n", r.PID); line != want {
			t.Errorf("child answered %q; want %q", line, want)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("parent: %v\n%s", err, stderr.String())
	}
	if _, err := os.Stat(parent); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the parent's binary is still there (%v): the test proves nothing", err)
	}
	if want := fmt.Sprintf("child pid %d\n", r.PID); stderr.String() != want || r.ListenPID != strconv.Itoa(r.PID) {
		t.Errorf("parent said %q, child has LISTEN_PID %q, PID %d; want %q", stderr.String(), r.ListenPID, r.PID, want)
	}
}

// TestTrampolineErrors: a command the trampoline cannot find or run exits
// with the shell's codes, as exec.Replace's caller does; a malformed line is 2.
func TestTrampolineErrors(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	noexec := filepath.Join(dir, "noexec")
	if err := os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"__listen-exec", "0", "", "--", "no-such-command"}, 127},
		{[]string{"__listen-exec", "0", "", "--", noexec}, 126},
		{[]string{"__listen-exec", "2", "a", "--", "true"}, 2},
		{[]string{"__listen-exec", "1", "a", "--", "true"}, 2}, // fd 3 not passed
		{[]string{"__listen-exec", "1", "a", "true"}, 2},
	} {
		cmd := osexec.Command(self, c.args...)
		cmd.Env = []string{"PATH=" + dir}
		out, err := cmd.CombinedOutput()
		var exit *osexec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != c.code || !strings.Contains(string(out), "paramexec") {
			t.Errorf("trampoline %q: %v, %q; want exit %d with a message", c.args, err, out, c.code)
		}
	}
}

// TestReplace: without supervision, the command takes paramexec's place and
// PID, with the sockets on fds 3, 4 and nothing else inherited.
func TestReplace(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := osexec.Command(self, self)
	cmd.Env = append(os.Environ(), helperEnv+"=replace", "HELPER_LISTEN=tcp://127.0.0.1:0,b=tcp://127.0.0.1:0")
	r, stderr := startReporting(t, cmd)
	pid := cmd.Process.Pid
	if r.PID != pid || r.ListenPID != strconv.Itoa(pid) || r.Fds != 2 || !slices.Equal(r.Names, []string{"listen0", "b"}) {
		t.Errorf("report %+v; want PID and LISTEN_PID %d, 2 fds named listen0, b", r, pid)
	}
	if !slices.Equal(r.Open, []int{0, 1, 2, 3, 4}) {
		t.Errorf("command's inherited fds %v; want exactly 0-4", r.Open)
	}
	for i, s := range r.Sockets {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+s.Addr, deadline)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(deadline))
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if want := fmt.Sprintf("%d %s\n", pid, r.Names[i]); line != want {
			t.Errorf("fd %d answered %q; want %q", s.Fd, line, want)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("command: %v\n%s", err, stderr.String())
	}
}

// startReporting starts cmd, a helper that prints its report as JSON on
// stdout, and returns the report and what cmd writes to stderr; cmd is
// killed if it is not done by deadline. The caller waits for cmd.
func startReporting(t *testing.T, cmd *osexec.Cmd) (report, *bytes.Buffer) {
	t.Helper()
	stderr := &bytes.Buffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killer := time.AfterFunc(deadline, func() { cmd.Process.Kill() })
	t.Cleanup(func() { killer.Stop() })
	var r report
	if err := json.NewDecoder(stdout).Decode(&r); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("command's report: %v\n%s", err, stderr.String())
	}
	return r, stderr
}
