package listen_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/paramexec/paramexec/internal/listen"
)

// startHolder starts script under sh as a supervised child is started
// (through the trampoline, the sockets on fds 3, 4) and waits for the line
// it prints once it has done what it does with them: the "ready" of a real
// app. It returns the child's pid; the child is killed at the test's end.
func startHolder(t *testing.T, set *listen.Set, script string) int {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	files, err := set.Files()
	if err != nil {
		t.Fatal(err)
	}
	fds := []uintptr{0, w.Fd(), 2}
	for _, f := range files {
		fds = append(fds, f.Fd())
	}
	path, argv := set.Command([]string{"/bin/sh", "-c", script})
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{Env: []string{"PATH=/usr/bin:/bin"}, Files: fds, Sys: &syscall.SysProcAttr{Setpgid: true}})
	w.Close()
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-pid, syscall.SIGKILL)
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, 0, nil)
	})
	line, err := bufio.NewReader(r).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("child said %q (%v), want ready", line, err)
	}
	return pid
}

// TestTaken: a child that closes the socket it was given is not ready, and
// the error names the address and what to do; one that keeps it, or
// whose descendant keeps it, is. Each child says "ready" only after it has
// closed (or kept) its fds, as an app's READY=1 would.
func TestTaken(t *testing.T) {
	specs, err := listen.ParseAll([]string{"tcp://127.0.0.1:0", "web=tcp://127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	set, err := listen.Bind(context.Background(), specs)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	for _, c := range []struct {
		name, script string
		lost         []string // the addresses the error must name; none: ready
	}{
		{"keeps both", "echo ready; exec sleep 60", nil},
		{"dups then closes", "exec 7<&3 8<&4 3<&- 4<&-; echo ready; exec sleep 60", nil},
		{"a grandchild keeps them", "sleep 60 & exec 3<&- 4<&-; echo ready; wait", nil},
		{"closes fd 3", "exec 3<&-; echo ready; exec sleep 60", []string{specs[0].String()}},
		{"closes both", "exec 3<&- 4<&-; echo ready; exec sleep 60", []string{specs[0].String(), specs[1].String()}},
	} {
		t.Run(c.name, func(t *testing.T) {
			pid := startHolder(t, set, c.script)
			err := set.Taken(pid)
			if c.lost == nil {
				if err != nil {
					t.Fatalf("Taken: %v; want nil", err)
				}
				return
			}
			if err == nil || errors.Is(err, listen.ErrCannotTell) {
				t.Fatalf("Taken: %v; want an error naming %v", err, c.lost)
			}
			for _, a := range c.lost {
				if !strings.Contains(err.Error(), a) {
					t.Errorf("error %q does not name %s", err, a)
				}
			}
			if !strings.Contains(err.Error(), "--proxy") {
				t.Errorf("error %q does not say what to do", err)
			}
		})
	}
}
