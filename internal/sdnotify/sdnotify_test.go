package sdnotify

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

// waitFor is a deadline for a datagram that should already be queued; it
// bounds a hung test, it does not measure anything.
const waitFor = 10 * time.Second

// listen plays systemd: a real unixgram socket at a short filesystem path
// (sun_path holds 108 bytes; t.TempDir can be longer on some machines).
func listen(t *testing.T) (*net.UnixConn, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, path
}

// listenAbstract is systemd's other form: "@name" in the abstract namespace.
func listenAbstract(t *testing.T) (*net.UnixConn, string) {
	t.Helper()
	name := fmt.Sprintf("@paramexec-sdnotify-test-%d-%d", os.Getpid(), rand.Uint64())
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, name
}

// recv reads exactly one datagram.
func recv(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(waitFor)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, _, err := conn.ReadFromUnix(buf)
	if err != nil {
		t.Fatalf("no datagram: %v", err)
	}
	return string(buf[:n])
}

func monotonicNow(t *testing.T) uint64 {
	t.Helper()
	u, err := monotonicUsec()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestMessages(t *testing.T) {
	for _, tc := range []struct {
		name   string
		listen func(*testing.T) (*net.UnixConn, string)
	}{
		{"path", listen},
		{"abstract", listenAbstract},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, socket := tc.listen(t)
			n, err := New(socket)
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			if !n.Enabled() {
				t.Fatal("Enabled() = false with a socket")
			}

			// Each call is one datagram, read in order: a message split in
			// two, or an extra one, shows up as a mismatch of the next read.
			if err := n.Ready("running server (pid 42)"); err != nil {
				t.Fatal(err)
			}
			if got, want := recv(t, srv), "READY=1\nSTATUS=running server (pid 42)"; got != want {
				t.Errorf("Ready sent %q, want %q", got, want)
			}

			before := monotonicNow(t)
			if err := n.Reloading("restarting: DB_PASSWORD changed"); err != nil {
				t.Fatal(err)
			}
			after := monotonicNow(t)
			lines := strings.Split(recv(t, srv), "\n")
			if len(lines) != 3 || lines[0] != "RELOADING=1" || lines[2] != "STATUS=restarting: DB_PASSWORD changed" {
				t.Fatalf("Reloading sent %q, want RELOADING=1, MONOTONIC_USEC=…, STATUS=…", lines)
			}
			usec, ok := strings.CutPrefix(lines[1], "MONOTONIC_USEC=")
			if !ok {
				t.Fatalf("second line %q, want MONOTONIC_USEC=", lines[1])
			}
			// The stamp is CLOCK_MONOTONIC, taken during the call: between
			// readings of the same clock before and after it.
			u, err := strconv.ParseUint(usec, 10, 64)
			if err != nil || u < before || u > after {
				t.Errorf("MONOTONIC_USEC=%s, want a CLOCK_MONOTONIC µs reading in [%d, %d]", usec, before, after)
			}

			if err := n.Ready(""); err != nil {
				t.Fatal(err)
			}
			if got := recv(t, srv); got != "READY=1" {
				t.Errorf("Ready(\"\") sent %q, want READY=1 alone", got)
			}

			if err := n.Stopping("stopping: SIGTERM"); err != nil {
				t.Fatal(err)
			}
			if got, want := recv(t, srv), "STOPPING=1\nSTATUS=stopping: SIGTERM"; got != want {
				t.Errorf("Stopping sent %q, want %q", got, want)
			}

			if err := n.Status("poll failed: ThrottlingException; next try 12:00:05"); err != nil {
				t.Fatal(err)
			}
			if got, want := recv(t, srv), "STATUS=poll failed: ThrottlingException; next try 12:00:05"; got != want {
				t.Errorf("Status sent %q, want %q", got, want)
			}
		})
	}
}

// A newline in a status would start a new assignment: "x\nREADY=1" must not
// make systemd think the service is ready.
func TestStatusStaysOneLine(t *testing.T) {
	srv, socket := listen(t)
	n, err := New(socket)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()

	if err := n.Status("a\nREADY=1\r\nb\x00c"); err != nil {
		t.Fatal(err)
	}
	got := recv(t, srv)
	if strings.ContainsAny(got, "\n\r\x00") || got != "STATUS=a READY=1  b c" {
		t.Errorf("sent %q, want one STATUS line", got)
	}
	if err := n.Stopping("x\nREADY=1"); err != nil {
		t.Fatal(err)
	}
	if got, want := recv(t, srv), "STOPPING=1\nSTATUS=x READY=1"; got != want {
		t.Errorf("sent %q, want %q", got, want)
	}
}

func TestNoSocketIsNoOp(t *testing.T) {
	n, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	var nilNotifier *Notifier
	for name, n := range map[string]*Notifier{"New(\"\")": n, "nil": nilNotifier} {
		if n.Enabled() {
			t.Errorf("%s: Enabled() = true", name)
		}
		for call, err := range map[string]error{
			"Ready":     n.Ready("x"),
			"Reloading": n.Reloading("x"),
			"Stopping":  n.Stopping("x"),
			"Status":    n.Status("x"),
			"Close":     n.Close(),
		} {
			if err != nil {
				t.Errorf("%s: %s = %v, want nil", name, call, err)
			}
		}
	}
}

func TestMissingSocket(t *testing.T) {
	dir := t.TempDir()
	for _, socket := range []string{
		filepath.Join(dir, "absent"),
		fmt.Sprintf("@paramexec-sdnotify-absent-%d-%d", os.Getpid(), rand.Uint64()),
	} {
		n, err := New(socket)
		if err == nil {
			n.Close()
			t.Errorf("New(%q) = nil error for a socket nobody listens on", socket)
			continue
		}
		if !strings.Contains(err.Error(), socket) {
			t.Errorf("New(%q) error %q does not name the socket", socket, err)
		}
	}
}

func TestUnsupportedAddress(t *testing.T) {
	for _, socket := range []string{"relative/notify", "vsock:2:1234"} {
		if n, err := New(socket); err == nil {
			n.Close()
			t.Errorf("New(%q) = nil error", socket)
		}
	}
}

// systemd going away after start (a daemon-reexec gone wrong, a test's
// listener closing) is an error for the caller to log, not a panic.
func TestListenerGone(t *testing.T) {
	srv, socket := listen(t)
	n, err := New(socket)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	srv.Close()
	err = n.Ready("status-text-marker")
	if err == nil {
		t.Fatal("Ready after the listener closed = nil error")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Ready error = %v, want ECONNREFUSED", err)
	}
	if msg := err.Error(); strings.Contains(msg, "status-text-marker") || !strings.Contains(msg, "READY") {
		t.Errorf("error %q should name the message's first key, not its text", err)
	}
}

func TestClose(t *testing.T) {
	_, socket := listen(t)
	n, err := New(socket)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Ready(""); err == nil {
		t.Error("Ready after Close = nil error")
	}
}

// systemd drops a notification over 4096 bytes whole, READY=1 with it: a
// restart that changed many variables must still say it is ready, and the
// status must say how many names it left out.
func TestLongStatusIsBounded(t *testing.T) {
	srv, socket := listen(t)
	n, err := New(socket)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	names := make([]string, 500)
	for i := range names {
		names[i] = fmt.Sprintf("VARIABLE_NUMBER_%03d", i)
	}
	long := "restarting server: " + strings.Join(names, ", ") + " changed"
	for _, tc := range []struct {
		name  string
		send  func() error
		state string
	}{
		{"Ready", func() error { return n.Ready(long) }, "READY=1\n"},
		{"Reloading", func() error { return n.Reloading(long) }, "RELOADING=1\n"},
		{"Status", func() error { return n.Status(long) }, ""},
		{"no list", func() error { return n.Ready(strings.Repeat("é", 3000)) }, "READY=1\n"},
	} {
		if err := tc.send(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		// A buffer larger than systemd's, so that an oversized message
		// shows as one rather than being cut to fit.
		if err := srv.SetReadDeadline(time.Now().Add(waitFor)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1<<16)
		m, _, err := srv.ReadFromUnix(buf)
		if err != nil {
			t.Fatalf("%s: no datagram: %v", tc.name, err)
		}
		got := string(buf[:m])
		if len(got) > maxMessage {
			t.Errorf("%s: sent %d bytes, over systemd's %d", tc.name, len(got), maxMessage)
		}
		if !strings.HasPrefix(got, tc.state) {
			t.Errorf("%s: message starts %.40q, want %q", tc.name, got, tc.state)
		}
		if !utf8.ValidString(got) {
			t.Errorf("%s: status cut inside a character", tc.name)
		}
		if tc.name == "no list" {
			if !strings.HasSuffix(got, " bytes more)") {
				t.Errorf("%s: ends %q, want the bytes left out", tc.name, got[len(got)-40:])
			}
			continue
		}
		_, status, _ := strings.Cut(got, "STATUS=")
		kept := strings.Count(status, "VARIABLE_NUMBER_")
		want := fmt.Sprintf(" ... and %d more", len(names)-kept)
		if kept == 0 || !strings.HasSuffix(status, want) {
			t.Errorf("%s: status ends %q with %d names kept, want %q", tc.name, status[len(status)-40:], kept, want)
		}
	}
}
