package exec_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/exec"
	"github.com/paramexec/paramexec/signals"
)

// bootScript installs its SIGHUP handler only 0.5 s into its boot, as a
// JVM or a Python app does: a SIGHUP before that kills it (129). Once its
// handlers are in, it creates $D/up.PID (fileReady), and records each
// SIGHUP in $D/hup.PID.
var bootScript = sh(`
sleep 0.5
trap 'echo hup >> "$D/hup.$$"' HUP
trap 'exit 0' TERM
: > "$D/up.$$"
while :; do sleep 0.05; done
`)

// D1: a signal held during a stop-first restart reaches the new child
// once it is ready, not right after its fork, when it would kill it and
// have a good change rejected.
func TestHeldSignalWaitsForTheNewChildToBeReady(t *testing.T) {
	sup := &exec.Supervisor{Argv: bootScript, Rollback: true, Grace: 5 * time.Second}
	h := newHarness(t, sup)
	sup.Ready = fileReady(h)
	h.start(sup)
	h.event(exec.Ready)
	h.change(2, "GEN changed")
	h.event(exec.RestartBegun)
	h.signal(syscall.SIGHUP) // held: the old child is stopping
	e := h.event(exec.Restarted)
	eventually(t, "the held SIGHUP to reach the new child", func() bool { return exists(h.path("hup." + strconv.Itoa(e.Pid))) })
	if n := h.count(exec.RolledBack); n != 0 {
		t.Fatalf("%d rollbacks; saw %v", n, h.seen)
	}
	h.signal(syscall.SIGTERM)
	if code, err := h.wait(); code != 0 || err != nil {
		t.Fatalf("Run = %d, %v", code, err)
	}
}

// D1, after a rollback: the child restored with the last good values
// boots too, and a SIGHUP meanwhile waits for it to be ready; before, it
// killed the restored child, and Run ended with it.
func TestHeldSignalWaitsForTheRestoredChild(t *testing.T) {
	sup := &exec.Supervisor{Argv: sh(`
[ "$GEN" = 2 ] && exit 3
` + bootScript[2]), Rollback: true, Grace: 5 * time.Second}
	h := newHarness(t, sup)
	sup.Ready = fileReady(h)
	h.start(sup)
	h.event(exec.Ready)
	h.change(2, "GEN changed")
	h.event(exec.RolledBack)
	h.signal(syscall.SIGHUP) // the restored child is booting
	e := h.event(exec.Ready)
	if e.Reason != "rolled back" {
		t.Fatalf("Ready %+v; want the restored child", e)
	}
	eventually(t, "the held SIGHUP to reach the restored child", func() bool { return exists(h.path("hup." + strconv.Itoa(e.Pid))) })
	h.signal(syscall.SIGTERM)
	if code, err := h.wait(); code != 0 || err != nil {
		t.Fatalf("Run = %d, %v", code, err)
	}
}

// D3: a start that fails during a restart still gives the leftovers of
// the old generation their grace period, then SIGKILL, before Run
// returns.
func TestFailedRestartStillKillsLeftovers(t *testing.T) {
	if err := signals.SetSubreaper(); err != nil {
		t.Fatal(err)
	}
	sup := &exec.Supervisor{Argv: sh(`
setsid sh -c 'trap "" TERM; echo $$ > "$D/left"; exec sleep 1000' &
trap 'exit 0' TERM
while :; do sleep 0.05; done
`), Grace: 300 * time.Millisecond}
	var starts atomic.Int32
	sup.PrepareEnv = func(env []string) ([]string, error) {
		if starts.Add(1) > 1 {
			return nil, errors.New("no port left") // as EAGAIN or EMFILE would
		}
		return env, nil
	}
	h := newHarness(t, sup)
	h.start(sup)
	h.event(exec.Started)
	left := readPid(t, h.path("left"))
	h.change(2, "GEN changed")
	code, err := h.wait()
	if err == nil || !strings.Contains(err.Error(), "no port left") {
		t.Fatalf("Run = %d, %v; want the failed start", code, err)
	}
	if alive(left) {
		syscall.Kill(left, syscall.SIGKILL)
		t.Fatalf("leftover %d, which ignores SIGTERM, still runs after Run returned", left)
	}
}

// gatedReap reaps only once open is set: the test decides which exits
// one reaping pass sees together.
func gatedReap(open *atomic.Bool) func(func(int, syscall.WaitStatus)) {
	return func(onExit func(int, syscall.WaitStatus)) {
		if open.Load() {
			signals.Reap(onExit)
		}
	}
}

// zombie reports whether pid has exited and waits to be reaped.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] == "Z"
}

// D4: while the old child drains with a change held, the serving child
// exits by itself and both exits are reaped in one pass: Run ends with
// the serving child's code; the held change starts nothing.
func TestTwoExitsInOnePassWhileDraining(t *testing.T) {
	sup, h, _ := overlapSup(t, sh(`
trap 'sleep 0.3; exit 0' TERM
: > "$D/up.$$"
while [ ! -e "$D/exit.$$" ]; do sleep 0.05; done
exit 7
`))
	var open atomic.Bool
	sup.Reap = gatedReap(&open)
	h.start(sup)
	old := h.event(exec.Ready)
	h.change(2, "GEN changed")
	cur := h.event(exec.Restarted)
	h.event(exec.Draining)
	h.change(3, "GEN changed again") // held: two children live
	touch(t, h.path("exit."+strconv.Itoa(cur.Pid)))
	eventually(t, "both children to exit", func() bool { return zombie(old.Pid) && zombie(cur.Pid) })
	open.Store(true)
	h.signal(syscall.SIGCHLD)
	code, err := h.wait()
	if code != 7 || err != nil {
		t.Errorf("Run = %d, %v; want the serving child's 7", code, err)
	}
	if n := h.count(exec.OverlapBegun); n != 1 {
		t.Errorf("%d overlaps; want the held change to start nothing: %v", n, h.order())
	}
}

// stoppedScript is a child whose SIGTERM handler exits 0; it records its
// pid in $D/pid.
var stoppedScript = sh(`
trap 'exit 0' TERM
echo $$ > "$D/pid"
while :; do sleep 0.05; done
`)

// D8: a child stopped with SIGSTOP gets SIGCONT right after its stop
// signal, so that it runs its handler (exit 0) rather than being killed
// after Grace (137): on a restart, and on paramexec's own stop.
func TestStoppedChildRunsItsHandler(t *testing.T) {
	for _, how := range []string{"restart", "stop"} {
		t.Run(how, func(t *testing.T) {
			sup := &exec.Supervisor{Argv: stoppedScript, Grace: 20 * time.Second}
			h := newHarness(t, sup)
			h.start(sup)
			first := h.event(exec.Started)
			readPid(t, h.path("pid"))
			if err := syscall.Kill(first.Pid, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the child to stop", func() bool { return procState(first.Pid) == "T" })
			if how == "restart" {
				h.change(2, "GEN changed")
			} else {
				h.signal(syscall.SIGTERM)
			}
			start := time.Now()
			if e := h.event(exec.Exited); e.Pid != first.Pid || e.Code != 0 {
				t.Fatalf("Exited %+v; want pid %d with 0 (its handler ran)", e, first.Pid)
			}
			t.Logf("the stopped child exited %v after its stop signal", time.Since(start))
			if how == "restart" {
				h.event(exec.Restarted)
				h.signal(syscall.SIGTERM)
			}
			h.wait()
			if n := h.count(exec.Killed); n != 0 {
				t.Errorf("%d Killed events: %v", n, h.seen)
			}
		})
	}
}

// procState is pid's state letter in /proc/PID/stat ("T" when stopped).
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}
