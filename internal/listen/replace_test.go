package listen_test

import (
	"bytes"
	"errors"
	"net"
	"os"
	osexec "os/exec"
	"slices"
	"strings"
	"testing"
)

// TestReplaceNeverDisturbsTheRuntime: Replace must put the sockets on fds
// 3, 4, … without touching a descriptor the Go runtime owns (its epoll and
// eventfd sit among the low fds). Placing them by dup3 in the running
// process crashed it ("epollwait on fd 7 failed with 22") about once in
// 200 runs with /bin/true, and on every run where the command did not
// exist, since the process then goes on running. Each run binds five
// sockets, so that fds 3 to 7 are to be replaced.
func TestReplaceNeverDisturbsTheRuntime(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	five := "HELPER_LISTEN=" + strings.Repeat("tcp://127.0.0.1:0,", 4) + "tcp://127.0.0.1:0"
	run := func(argv ...string) (int, string) {
		cmd := osexec.Command(self, argv...)
		cmd.Env = append(os.Environ(), helperEnv+"=replace", five, "HELPER_PATH=/usr/bin:/bin")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exit *osexec.ExitError
		switch {
		case err == nil:
			return 0, stderr.String()
		case errors.As(err, &exit):
			return exit.ExitCode(), stderr.String()
		}
		t.Fatal(err)
		return 0, ""
	}
	runs := 100
	if testing.Short() {
		runs = 20
	}
	for i := range runs {
		if code, stderr := run("true"); code != 0 || stderr != "" {
			t.Fatalf("run %d of true: exit %d; stderr:\n%s", i, code, stderr)
		}
	}
	for i := range 20 {
		code, stderr := run("no-such-command-paramexec")
		if code != 127 || strings.Contains(stderr, "runtime") || strings.Contains(stderr, "fatal") {
			t.Fatalf("run %d of a missing command: exit %d, want 127; stderr:\n%s", i, code, stderr)
		}
	}
}

// TestTrampolineReservesAgain: the trampoline of Replace finds fd 3 free
// (as if the process that exec'd it had closed a reserved fd at the last
// moment): it must reserve it and exec itself again rather than place the
// socket where its own runtime may have opened a file; the command then
// gets the socket on fd 3 and nothing else.
func TestTrampolineReservesAgain(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
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
	// ExtraFiles: fd 3 closed in the child, the socket on fd 4.
	cmd := osexec.Command(self, "__listen-exec-at", "1", "only", "4", "--", self)
	cmd.ExtraFiles = []*os.File{nil, f}
	cmd.Env = []string{helperEnv + "=check"}
	r, stderr := startReporting(t, cmd)
	if r.Fds != 1 || len(r.Sockets) != 1 || !r.Sockets[0].Listening || !slices.Equal(r.Open, []int{0, 1, 2, 3}) {
		t.Errorf("report %+v; want one listening socket on fd 3 and fds 0-3 alone", r)
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), deadline); err == nil {
		c.Close()
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("command: %v\n%s", err, stderr.String())
	}
}
