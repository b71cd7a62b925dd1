package sdnotify

import (
	"errors"
	"io"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// senderEnv makes the test binary a child that notifies NOTIFY_SOCKET.
const senderEnv = "SDNOTIFY_TEST_SENDER"

func TestMain(m *testing.M) {
	if os.Getenv(senderEnv) == "" {
		os.Exit(m.Run())
	}
	n, err := New(os.Getenv("NOTIFY_SOCKET"))
	if err == nil {
		err = n.Ready("serving from the child")
	}
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	os.Exit(0)
}

func listenReceiver(t *testing.T) *Receiver {
	t.Helper()
	r, err := Listen("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func next(t *testing.T, r *Receiver) Message {
	t.Helper()
	select {
	case m, ok := <-r.Messages():
		if !ok {
			t.Fatal("Messages closed")
		}
		return m
	case <-time.After(waitFor):
		t.Fatal("no message")
	}
	panic("unreachable")
}

func send(t *testing.T, path, msg string) {
	t.Helper()
	n, err := New(path)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if _, err := n.write(msg); err != nil {
		t.Fatal(err)
	}
}

func TestReceiverModes(t *testing.T) {
	r := listenReceiver(t)
	for path, want := range map[string]os.FileMode{
		filepath.Dir(r.Path()): os.ModeDir | 0o700,
		r.Path():               os.ModeSocket | 0o600,
	} {
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode() & (os.ModeType | os.ModePerm); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
	}
	if entries, _ := os.ReadDir(filepath.Dir(r.Path())); len(entries) != 1 {
		t.Errorf("the private directory holds %d entries, want the socket alone", len(entries))
	}
}

// The sender's pid comes from the kernel, here for a real child process:
// the pid the owner filters on.
func TestReceiverSenderPid(t *testing.T) {
	r := listenReceiver(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := osexec.Command(self)
	cmd.Env = append(os.Environ(), senderEnv+"=1", "NOTIFY_SOCKET="+r.Path())
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m := next(t, r)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sender: %v", err)
	}
	if m.Pid != cmd.Process.Pid || m.Pid == os.Getpid() {
		t.Errorf("Pid = %d, want the sender's %d", m.Pid, cmd.Process.Pid)
	}
	if !m.Ready || !m.HasStatus || m.Status != "serving from the child" {
		t.Errorf("message %+v, want READY=1 and its STATUS", m)
	}

	send(t, r.Path(), "STATUS=from the test itself")
	if m := next(t, r); m.Pid != os.Getpid() || m.Ready {
		t.Errorf("message %+v, want pid %d and no READY", m, os.Getpid())
	}
}

func TestParseMessage(t *testing.T) {
	m := ParseMessage([]byte("READY=1\nSTATUS=a=b\n\nRELOADING=1\nMONOTONIC_USEC=12\nnonsense\nMAINPID=4242\nSTOPPING=1\nSTATUS=second\nX_CUSTOM=yes"))
	if !m.Ready || !m.Reloading || !m.Stopping || m.Status != "a=b" || !m.HasStatus || m.MainPid != 4242 ||
		m.Fields["MONOTONIC_USEC"] != "12" || m.Fields["X_CUSTOM"] != "yes" || len(m.Fields) != 7 {
		t.Errorf("ParseMessage = %+v", m)
	}
	for msg, check := range map[string]func(Message) bool{
		"READY=0":          func(m Message) bool { return !m.Ready },
		"READY=1 ":         func(m Message) bool { return !m.Ready }, // systemd wants exactly 1
		"STATUS=":          func(m Message) bool { return m.HasStatus && m.Status == "" },
		"MAINPID=x":        func(m Message) bool { return m.MainPid == 0 },
		"MAINPID=-3":       func(m Message) bool { return m.MainPid == 0 },
		"=1\nREADY":        func(m Message) bool { return !m.Ready && len(m.Fields) == 0 },
		"WATCHDOG=1":       func(m Message) bool { return !m.HasStatus && m.Fields["WATCHDOG"] == "1" },
		"READY=0\nREADY=1": func(m Message) bool { return m.Ready }, // as systemd: any READY=1 line
	} {
		if m := ParseMessage([]byte(msg)); !check(m) {
			t.Errorf("ParseMessage(%q) = %+v", msg, m)
		}
	}
}

// A datagram longer than systemd accepts is dropped whole, not cut into a
// shorter message that could still say READY=1.
func TestReceiverDropsLong(t *testing.T) {
	r := listenReceiver(t)
	send(t, r.Path(), "READY=1\nSTATUS="+strings.Repeat("x", maxDatagram))
	send(t, r.Path(), "STATUS=short")
	if m := next(t, r); m.Ready || m.Status != "short" {
		t.Errorf("first message delivered: %+v, want the long one dropped", m)
	}
}

// Descriptors a child passes (sd_pid_notify_with_fds) are closed: paramexec
// keeps no fd store, and must not carry them into the next child.
func TestReceiverClosesPassedFds(t *testing.T) {
	r := listenReceiver(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	err = syscall.Sendmsg(fd, []byte("FDSTORE=1"), syscall.UnixRights(int(pw.Fd())), &syscall.SockaddrUnix{Name: r.Path()}, 0)
	if err != nil {
		t.Fatal(err)
	}
	pw.Close() // the receiver's copy is now the only write end
	if m := next(t, r); m.Fields["FDSTORE"] != "1" || m.Pid != os.Getpid() {
		t.Errorf("message %+v", m)
	}
	// EOF only once every write end is closed: the receiver closed its copy.
	pr.SetReadDeadline(time.Now().Add(waitFor))
	if n, err := pr.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read from the pipe = %d, %v; want EOF: the passed fd is still open", n, err)
	}
}

func TestReceiverClose(t *testing.T) {
	r, err := Listen("")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(r.Path())
	send(t, r.Path(), "READY=1")
	// Close does not wait for the owner to read what is queued.
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory after Close: %v, want it removed", err)
	}
	timeout := time.After(waitFor)
	for open := true; open; {
		select {
		case _, open = <-r.Messages():
		case <-timeout:
			t.Fatal("Messages not closed after Close")
		}
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := New(r.Path()); err == nil {
		t.Error("the socket still accepts after Close")
	}
}

func TestReceiverLongDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	r, err := Listen(dir)
	if err == nil {
		r.Close()
		t.Fatal("Listen in a too-long directory succeeded")
	}
	if !strings.Contains(err.Error(), "107 bytes") {
		t.Errorf("error %q should say why", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("Listen left %d entries behind", len(entries))
	}
}
