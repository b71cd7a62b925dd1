package harness

import (
	osexec "os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/faultproxy"
	"github.com/paramexec/paramexec/internal/testenv"
)

// Running is a paramexec started in the background, as a container runtime
// would start it.
type Running struct {
	t      *testing.T
	Cmd    *osexec.Cmd
	Stderr *SyncBuffer
	done   chan struct{}
	code   int
}

func StartBinary(t *testing.T, env []string, args ...string) *Running {
	t.Helper()
	return StartCommand(t, env, BinPath, args...)
}

// StartCommand is StartBinary with a command in front of paramexec that
// execs it (prlimit, say), so that the pid is paramexec's all the same.
func StartCommand(t *testing.T, env []string, name string, args ...string) *Running {
	t.Helper()
	return StartCommandWith(t, env, nil, name, args...)
}

// StartCommandWith is StartCommand with setup adjusting the command (its
// ExtraFiles, say) before it starts.
func StartCommandWith(t *testing.T, env []string, setup func(*osexec.Cmd), name string, args ...string) *Running {
	t.Helper()
	cmd := osexec.Command(name, args...)
	cmd.Env = env
	r := &Running{t: t, Cmd: cmd, Stderr: &SyncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = r.Stderr
	if setup != nil {
		setup(cmd)
	}
	// Descendants that outlive a killed paramexec keep the pipe open; do
	// not let them hang the test.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := cmd.Wait()
		r.code = cmd.ProcessState.ExitCode()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.code = -int(ws.Signal())
		}
		_ = err
		LogScan.Add(r.Stderr.String())
		close(r.done)
	}()
	// A test that ends early leaves paramexec running: stop it as a
	// container runtime would, so that it stops its child too, and kill
	// it only if that does not work.
	t.Cleanup(func() {
		select {
		case <-r.done:
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
			cmd.Process.Signal(syscall.SIGKILL)
			<-r.done
		}
	})
	return r
}

func (r *Running) Signal(sig syscall.Signal) {
	if err := r.Cmd.Process.Signal(sig); err != nil {
		r.t.Fatalf("signal paramexec: %v", err)
	}
}

// Done is closed once paramexec has exited.
func (r *Running) Done() <-chan struct{} { return r.done }

// Code is what Wait returns, valid once Done is closed.
func (r *Running) Code() int { return r.code }

// Wait returns paramexec's exit code; a negative code is death by signal.
func (r *Running) Wait() int {
	r.t.Helper()
	select {
	case <-r.done:
		return r.code
	case <-time.After(60 * time.Second):
		r.t.Fatalf("paramexec did not exit; stderr:\n%s", r.Stderr.String())
		return 0
	}
}

// WaitFor polls cond until it holds, failing the test after a deadline
// that is generous because it is no measure of speed.
func WaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	WaitForWithin(t, 45*time.Second, what, cond)
}

func WaitForWithin(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func WaitStarts(t *testing.T, rec string, n int) []Record {
	t.Helper()
	return WaitStartsWithin(t, 45*time.Second, rec, n)
}

func WaitStartsWithin(t *testing.T, limit time.Duration, rec string, n int) []Record {
	t.Helper()
	var s []Record
	WaitForWithin(t, limit, strconv.Itoa(n)+" child start(s)", func() bool {
		s = Starts(ReadRecords(t, rec))
		return len(s) >= n
	})
	return s
}

// SyncBuffer collects a process's stderr while the test reads it.
type SyncBuffer = testenv.Buffer

// Proxied starts a fault proxy in front of moto for one test.
func Proxied(t *testing.T) *faultproxy.Proxy {
	p, err := faultproxy.Start(Moto.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// Gone reports whether pid no longer exists (zombies count as existing).
func Gone(pid int) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func MustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
