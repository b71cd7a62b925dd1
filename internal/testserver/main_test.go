package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/paramexec/paramexec/internal/testenv"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/sdnotify"
)

// deadline bounds waits for events; it measures nothing.
const deadline = 30 * time.Second

// trampolineEnv makes the test binary set LISTEN_PID to its own pid and
// exec the server: the pid survives exec, so the server sees its own pid,
// which os/exec cannot know before the fork.
const trampolineEnv = "TESTSERVER_TEST_TRAMPOLINE"

// bin is the testserver binary, built once by TestMain.
var bin string

// client bounds every request, so that a server that accepts and never
// answers fails the test instead of hanging it.
var client = &http.Client{Timeout: 10 * time.Second}

func TestMain(m *testing.M) {
	if target := os.Getenv(trampolineEnv); target != "" {
		os.Unsetenv(trampolineEnv)
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
		err := syscall.Exec(target, []string{target}, os.Environ())
		fmt.Fprintln(os.Stderr, "trampoline:", err)
		os.Exit(126)
	}
	// Descriptors this process inherited without close-on-exec (from a
	// shell, a CI runner) would reach every server: the fd assertions are
	// about what this test passes, as paramexec must do at its own start.
	for fd := 3; fd < 1024; fd++ {
		syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_SETFD, syscall.FD_CLOEXEC)
	}
	dir, err := os.MkdirTemp("", "testserver")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "testserver")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build testserver: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type server struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	exited chan struct{}
	err    error // of Wait, once exited is closed
}

type syncBuffer = testenv.Buffer

// start runs the server with env added to a clean environment; with files,
// they become fds 3, … and the trampoline sets LISTEN_PID.
func start(t *testing.T, trampoline bool, files []*os.File, env ...string) *server {
	t.Helper()
	s := &server{stderr: &syncBuffer{}, exited: make(chan struct{})}
	s.cmd = exec.Command(bin)
	if trampoline {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		s.cmd = exec.Command(self)
		env = append(env, trampolineEnv+"="+bin)
	}
	s.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	s.cmd.ExtraFiles = files
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.exited
	})
	return s
}

// exitCode waits for the server to exit by itself.
func (s *server) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-s.exited:
	case <-time.After(deadline):
		t.Fatalf("server still running; stderr: %s", s.stderr)
	}
	var ee *exec.ExitError
	if s.err == nil {
		return 0
	}
	if errors.As(s.err, &ee) && ee.Exited() {
		return ee.ExitCode()
	}
	t.Fatalf("server: %v", s.err)
	return -1
}

func (s *server) term(t *testing.T) int {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	return s.exitCode(t)
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// get polls url until it answers (the server boots), then returns the body.
func get(t *testing.T, s *server, client *http.Client, url string) (int, string) {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		resp, err := client.Get(url)
		if err == nil {
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			return resp.StatusCode, string(body)
		}
		select {
		case <-s.exited:
			t.Fatalf("server exited (%v) before answering %s; stderr: %s", s.err, url, s.stderr)
		default:
		}
		if time.Now().After(end) {
			t.Fatalf("%s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func info(t *testing.T, s *server, client *http.Client, base string) Info {
	t.Helper()
	code, body := get(t, s, client, base+"/info")
	var i Info
	if err := json.Unmarshal([]byte(body), &i); code != 200 || err != nil {
		t.Fatalf("/info: %d %q %v", code, body, err)
	}
	return i
}

func TestPort(t *testing.T) {
	port := freePort(t)
	s := start(t, false, nil, "APP_PORT="+port, "TESTSERVER_PORT_ENV=APP_PORT",
		"TESTSERVER_VALUE_ENV=DB_URL", "DB_URL=jdbc:one", "TESTSERVER_BOOT_DELAY=300ms",
		"TESTSERVER_HEALTH_PATH=/healthz")
	base := "http://127.0.0.1:" + port
	// The boot delay starts after exec: nothing can listen yet.
	if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
		c.Close()
		t.Fatal("listening before its boot delay")
	}
	if code, _ := get(t, s, client, base+"/healthz"); code != 200 {
		t.Errorf("health: %d", code)
	}
	if code, _ := get(t, s, client, base+"/up"); code != 404 {
		t.Errorf("/up with another health path: %d, want 404", code)
	}
	_, body := get(t, s, client, base+"/")
	want := fmt.Sprintf(`{"pid":%d,"value":"jdbc:one"}`+"\n", s.cmd.Process.Pid)
	if body != want {
		t.Errorf("/ = %q, want %q", body, want)
	}
	if i := info(t, s, client, base); i.Source != "port" || len(i.StartFds) != 0 {
		t.Errorf("info %+v, want port and no inherited fds", i)
	}
	if code := s.term(t); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0; stderr: %s", code, s.stderr)
	}
}

func TestInheritedSockets(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "admin.sock")
	unixLn, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var files []*os.File
	for _, ln := range []interface{ File() (*os.File, error) }{tcp.(*net.TCPListener), unixLn.(*net.UnixListener)} {
		f, err := ln.File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	s := start(t, true, files, "LISTEN_FDS=2", "LISTEN_FDNAMES=web:admin", "VALUE=v1",
		"TESTSERVER_BOOT_DELAY=200ms")
	// The server holds its copies; these would only compete for accepts.
	base := "http://" + tcp.Addr().String()
	tcp.Close()
	unixLn.(*net.UnixListener).SetUnlinkOnClose(false)
	unixLn.Close()

	i := info(t, s, client, base)
	if i.Pid != s.cmd.Process.Pid || i.Source != "inherited" || !slices.Equal(i.FdNames, []string{"web", "admin"}) {
		t.Errorf("info %+v, want pid %d, inherited web and admin", i, s.cmd.Process.Pid)
	}
	if i.ListenEnv["LISTEN_PID"] != strconv.Itoa(s.cmd.Process.Pid) || len(i.EnvAfter) != 0 {
		t.Errorf("LISTEN_* seen %v, still set after taking %v", i.ListenEnv, i.EnvAfter)
	}
	// os/exec passes ExtraFiles alone: this process's own descriptors (its
	// listeners, its poller) are close-on-exec, through the trampoline too.
	if !slices.Equal(i.StartFds, []int{3, 4}) {
		t.Errorf("fds open at start %v, want [3 4]", i.StartFds)
	}
	overUnix := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	if _, body := get(t, s, overUnix, "http://admin/"); !strings.Contains(body, `"value":"v1"`) {
		t.Errorf("over the unix socket: %q", body)
	}
	if code := s.term(t); code != 0 {
		t.Errorf("exit %d after SIGTERM; stderr: %s", code, s.stderr)
	}
}

// sd_listen_fds(3) ignores fds meant for another pid, and unsets the
// variables all the same.
func TestListenPidMismatch(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	s := start(t, false, []*os.File{f}, "LISTEN_PID=1", "LISTEN_FDS=1")
	if code := s.exitCode(t); code != 2 || !strings.Contains(s.stderr.String(), "no socket") {
		t.Errorf("exit %d, stderr %q; want 2 and no socket", code, s.stderr)
	}

	port := freePort(t)
	s = start(t, false, []*os.File{f}, "LISTEN_PID=1", "LISTEN_FDS=1", "PORT="+port)
	i := info(t, s, client, "http://127.0.0.1:"+port)
	if i.Source != "port" || len(i.EnvAfter) != 0 || i.ListenEnv["LISTEN_PID"] != "1" {
		t.Errorf("info %+v: want the port, and LISTEN_* unset", i)
	}
	s.term(t)
}

func TestMisuse(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"PORT=1", "TESTSERVER_BOOT_DELAY=soon"}, "TESTSERVER_BOOT_DELAY"},
		{[]string{}, "no socket"},
		{[]string{"PORT=1", "TESTSERVER_CRASH_IF=novalue"}, "TESTSERVER_CRASH_IF: want VAR=VALUE"},
		{[]string{"LISTEN_PID=x", "PORT=1"}, "LISTEN_PID"},
		{[]string{"NOTIFY_SOCKET=relative", "PORT=1"}, "NOTIFY_SOCKET"},
	} {
		s := start(t, false, nil, tc.env...)
		if code := s.exitCode(t); code != 2 || !strings.Contains(s.stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.env, code, s.stderr, tc.want)
		}
	}
	// One name per fd, or the fds cannot be told apart.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := start(t, true, []*os.File{f}, "LISTEN_FDS=1", "LISTEN_FDNAMES=a:b")
	if code := s.exitCode(t); code != 2 || !strings.Contains(s.stderr.String(), "LISTEN_FDNAMES") {
		t.Errorf("two names for one fd: exit %d, stderr %q", code, s.stderr)
	}
}

func TestCrash(t *testing.T) {
	crash := []string{"TESTSERVER_CRASH_IF=DB_URL=bad", "TESTSERVER_CRASH_CODE=7"}
	s := start(t, false, nil, append(crash, "DB_URL=bad", "PORT="+freePort(t))...)
	if code := s.exitCode(t); code != 7 || !strings.Contains(s.stderr.String(), "TESTSERVER_CRASH_IF") {
		t.Errorf("exit %d, stderr %q; want 7", code, s.stderr)
	}
	port := freePort(t)
	s = start(t, false, nil, append(crash, "DB_URL=good", "PORT="+port)...)
	if code, _ := get(t, s, client, "http://127.0.0.1:"+port+"/up"); code != 200 {
		t.Errorf("good value: /up %d", code)
	}
	s.term(t)
}

func receiver(t *testing.T) *sdnotify.Receiver {
	t.Helper()
	r, err := sdnotify.Listen("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func message(t *testing.T, r *sdnotify.Receiver) sdnotify.Message {
	t.Helper()
	select {
	case m := <-r.Messages():
		return m
	case <-time.After(deadline):
		t.Fatal("no notify message")
	}
	panic("unreachable")
}

func TestNotify(t *testing.T) {
	r := receiver(t)
	port := freePort(t)
	s := start(t, false, nil, "NOTIFY_SOCKET="+r.Path(), "PORT="+port, "TESTSERVER_NOTIFY_DELAY=200ms")
	pid := s.cmd.Process.Pid
	if m := message(t, r); m.Pid != pid || m.Ready || m.Status != "booting" {
		t.Errorf("first message %+v, want STATUS=booting from %d", m, pid)
	}
	m := message(t, r)
	if m.Pid != pid || !m.Ready || m.Status != fmt.Sprintf("serving pid %d", pid) {
		t.Errorf("second message %+v, want READY=1 from %d", m, pid)
	}
	// READY=1 comes after the listen: the port accepts now, without a retry.
	c, err := net.Dial("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatalf("READY=1 before listening: %v", err)
	}
	c.Close()
	s.cmd.Process.Signal(syscall.SIGUSR1)
	if m := message(t, r); m.Pid != pid || m.Ready || m.Status != fmt.Sprintf("still serving pid %d", pid) {
		t.Errorf("message after SIGUSR1 %+v, want STATUS=still serving pid %d", m, pid)
	}
	s.term(t)
}

func TestHang(t *testing.T) {
	r := receiver(t)
	port := freePort(t)
	s := start(t, false, nil, "NOTIFY_SOCKET="+r.Path(), "PORT="+port, "TESTSERVER_HANG_IF=MODE=stuck", "MODE=stuck")
	if m := message(t, r); m.Status != "booting" {
		t.Fatalf("first message %+v", m)
	}
	// Watched for 1 s: with no boot delay a server that boots listens and
	// says READY=1 within milliseconds of its STATUS=booting.
	select {
	case m := <-r.Messages():
		t.Errorf("hanging server sent %+v", m)
	case <-time.After(time.Second):
	}
	if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
		c.Close()
		t.Error("hanging server listens")
	}
	if code := s.term(t); code != 0 {
		t.Errorf("exit %d after SIGTERM", code)
	}
}

// SIGTERM: no new connections, the open request finishes, exit 0.
func TestDrain(t *testing.T) {
	port := freePort(t)
	s := start(t, false, nil, "PORT="+port)
	base := "http://127.0.0.1:" + port
	get(t, s, client, base+"/up")

	resp, err := client.Get(base + "/sleep?d=1500ms") // headers come before the sleep
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The listener closes at once; the sleeping request keeps the process.
	end := time.Now().Add(deadline)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err != nil {
			// Reset: the dial raced the close and sat in the backlog.
			if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("dial after SIGTERM: %v", err)
			}
			break
		}
		c.Close()
		if time.Now().After(end) {
			t.Fatal("still accepting after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != fmt.Sprintf("slept 1.5s pid %d\n", s.cmd.Process.Pid) {
		t.Errorf("open request ended with %q, %v", line, err)
	}
	if code := s.exitCode(t); code != 0 {
		t.Errorf("exit %d, stderr %s", code, s.stderr)
	}
}
