package ready

import (
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/harness"
)

// rollbackRun is paramexec watching one SSM parameter, DB_URL, with the
// test server as its child, which serves DB_URL's value on PORT.
type rollbackRun struct {
	t    *testing.T
	path string
	port string
	sd   *harness.FakeSystemd
	pe   *harness.Running
}

// startRollback seeds DB_URL with good and starts paramexec with flags;
// the child crashes (exit 3) when DB_URL is "crash" and never boots when it
// is "hang".
// {port} in a flag stands for the child's port.
func startRollback(t *testing.T, flags ...string) *rollbackRun {
	t.Helper()
	rr := &rollbackRun{t: t, path: harness.UniquePath(t), port: strconv.Itoa(harness.FreePort(t)), sd: harness.ListenSystemd(t)}
	for i, f := range flags {
		flags[i] = strings.ReplaceAll(f, "{port}", rr.port)
	}
	harness.Moto.PutParameter(t, rr.path+"/DB_URL", harness.Val("good"), "String")
	env := append(harness.BaseEnv(harness.Moto.URL), "NOTIFY_SOCKET="+rr.sd.Path, "PORT="+rr.port,
		"TESTSERVER_VALUE_ENV=DB_URL", "TESTSERVER_BOOT_DELAY=300ms",
		"TESTSERVER_CRASH_IF=DB_URL="+harness.Val("crash"), "TESTSERVER_CRASH_CODE=3",
		"TESTSERVER_HANG_IF=DB_URL="+harness.Val("hang"))
	args := append([]string{"--path", rr.path, "--interval", "1s", "--grace", "2s"}, flags...)
	rr.pe = harness.StartBinary(t, env, append(args, "--", harness.ServerBin)...)
	rr.serving(harness.Val("good"), 45*time.Second)
	return rr
}

// serving waits until the child serves value, and returns its pid.
func (rr *rollbackRun) serving(value string, within time.Duration) int {
	rr.t.Helper()
	var s harness.Served
	harness.WaitForWithin(rr.t, within, "the child to serve "+value, func() bool {
		var ok bool
		s, ok = harness.Get(rr.port)
		return ok && s.Value == value
	})
	return s.Pid
}

func (rr *rollbackRun) put(value string) {
	rr.t.Helper()
	harness.Moto.PutParameter(rr.t, rr.path+"/DB_URL", value, "String")
}

func (rr *rollbackRun) log() string { return rr.pe.Stderr.String() }

// starts is how many children paramexec's log says it started.
func (rr *rollbackRun) starts() int { return len(harness.ChildPids(rr.log())) }

func (rr *rollbackRun) waitLog(what string) {
	rr.t.Helper()
	harness.WaitFor(rr.t, what+" in the log", func() bool { return strings.Contains(rr.log(), what) })
}

// alive fails the test if paramexec has exited.
func (rr *rollbackRun) alive() {
	rr.t.Helper()
	select {
	case <-rr.pe.Done():
		rr.t.Fatalf("paramexec exited with %d; stderr:\n%s", rr.pe.Code(), rr.log())
	default:
	}
}

// rejectedOnce checks what a rejected change leaves: the rejected value is
// not tried again over several polls, and a further good change restarts
// once onto it.
func (rr *rollbackRun) rejectedOnce(startsAfterRollback int) {
	rr.t.Helper()
	// Four polls of 1s with jitter: each would retry the rejected
	// environment if anything did, and a retry is a start in the log.
	time.Sleep(4 * time.Second)
	if n := rr.starts(); n != startsAfterRollback {
		rr.t.Errorf("%d children started after the rollback settled, want %d: the rejected value was tried again", n, startsAfterRollback)
	}
	rr.alive()
	rr.put(harness.Val("better"))
	rr.serving(harness.Val("better"), 45*time.Second)
	rr.waitLog(`msg="restart finished"`)
	time.Sleep(2 * time.Second) // two more polls: one restart, not more
	if n := rr.starts(); n != startsAfterRollback+1 {
		rr.t.Errorf("%d children after a further good change, want %d", n, startsAfterRollback+1)
	}
	if strings.Contains(rr.log(), harness.ValueMark) {
		rr.t.Errorf("the log holds a value:\n%s", rr.log())
	}
	rr.pe.Signal(syscall.SIGTERM)
	if code := rr.pe.Wait(); code != 0 {
		rr.t.Errorf("exit %d after SIGTERM; stderr:\n%s", code, rr.log())
	}
}

var rejectedRe = regexp.MustCompile(`level=ERROR msg="change rejected; rolling back" app=paramexec pid=\d+ changed=\[DB_URL\] after=\S+ (.*)`)

// The child started for a bad value crashes; paramexec, the same process,
// starts a child with the previous value, says in the log and to systemd
// which variable was rejected (never its value), does not try that value
// again, and takes a further good change.
func TestRollbackOnCrash(t *testing.T) {
	harness.E2E(t)
	rr := startRollback(t, "--ready", "http://127.0.0.1:{port}/up", "--ready-timeout", "10s")
	first := rr.serving(harness.Val("good"), time.Second)
	rr.put(harness.Val("crash"))
	rr.waitLog(`msg="change rejected; rolling back"`)
	// The restored child within --ready-timeout + --grace of the failure.
	back := rr.serving(harness.Val("good"), 12*time.Second)
	rr.alive()
	if back == first {
		t.Errorf("the child serving after the rollback is the first one (%d): no restart happened", back)
	}
	m := rejectedRe.FindStringSubmatch(rr.log())
	if m == nil || !strings.Contains(m[1], "exit_code=3") {
		t.Errorf("no rollback ERROR naming DB_URL and exit_code=3:\n%s", rr.log())
	}
	rr.waitLog(`msg="rollback finished"`)
	if n := rr.starts(); n != 3 {
		t.Errorf("%d children started; want 3: good, crash, good", n)
	}
	harness.WaitFor(t, "the rollback in systemd's STATUS", func() bool { return rr.sd.With("STATUS=testserver: rolled back at ") })
	if !rr.sd.With("STATUS=testserver running (pid ") || rr.sd.Count("READY=1") < 2 {
		t.Errorf("systemd did not get READY=1 for the restored child: %q", rr.sd.Received())
	}
	for _, msg := range rr.sd.Received() {
		if strings.Contains(msg, "rolled back") && !strings.Contains(msg, "DB_URL rejected (exit 3)") {
			t.Errorf("rollback STATUS does not name DB_URL and exit 3: %q", msg)
		}
		if strings.Contains(msg, harness.ValueMark) {
			t.Errorf("a notification holds a value: %q", msg)
		}
	}
	rr.rejectedOnce(3)
}

// The same with a child that never gets ready instead of crashing.
func TestRollbackOnReadyTimeout(t *testing.T) {
	harness.E2E(t)
	rr := startRollback(t, "--ready", "tcp:{port}", "--ready-timeout", "3s")
	rr.put(harness.Val("hang"))
	rr.waitLog(`msg="change rejected; rolling back"`)
	rr.serving(harness.Val("good"), 2*time.Second+10*time.Second)
	rr.alive()
	m := rejectedRe.FindStringSubmatch(rr.log())
	if m == nil || !strings.Contains(m[1], `not_ready="ready check tcp:`+rr.port) {
		t.Errorf("no rollback ERROR naming DB_URL and the tcp check:\n%s", rr.log())
	}
	rr.rejectedOnce(3)
}

// Without --ready, --rollback-window judges: a child that exits within it
// is rolled back.
func TestRollbackWindowWithoutReady(t *testing.T) {
	harness.E2E(t)
	rr := startRollback(t, "--rollback-window", "5s")
	rr.put(harness.Val("crash"))
	rr.waitLog(`msg="change rejected; rolling back"`)
	rr.serving(harness.Val("good"), 12*time.Second)
	rr.alive()
	if m := rejectedRe.FindStringSubmatch(rr.log()); m == nil || !strings.Contains(m[1], "exit_code=3") {
		t.Errorf("no rollback ERROR naming DB_URL and exit_code=3:\n%s", rr.log())
	}
	rr.rejectedOnce(3)
}

// A change back to the good value after a rollback is no change: the
// restored child keeps running.
func TestChangeBackToGoodIsNoChange(t *testing.T) {
	harness.E2E(t)
	rr := startRollback(t, "--ready", "http://127.0.0.1:{port}/up")
	rr.put(harness.Val("crash"))
	rr.waitLog(`msg="rollback finished"`)
	back := rr.serving(harness.Val("good"), 12*time.Second)
	rr.put(harness.Val("good"))
	rr.waitLog(`msg="no change: the child runs with this environment already"`)
	if s, ok := harness.Get(rr.port); !ok || s.Pid != back || rr.starts() != 3 {
		t.Errorf("after the change back: serving %+v (ok %v), %d starts; want pid %d, 3 starts", s, ok, rr.starts(), back)
	}
	rr.pe.Signal(syscall.SIGTERM)
	rr.pe.Wait()
}

// --on-change exit is not rolled back: a change ends paramexec with the
// child's status, for the orchestrator to start anew, as without --ready.
func TestOnChangeExitIsNotRolledBack(t *testing.T) {
	harness.ParallelE2E(t)
	rr := startRollback(t, "--ready", "tcp:{port}", "--on-change", "exit")
	rr.put(harness.Val("crash"))
	if code := rr.pe.Wait(); code != 0 {
		t.Errorf("exit %d, want the child's 0 after its SIGTERM", code)
	}
	if strings.Contains(rr.log(), "rolling back") || rr.starts() != 1 {
		t.Errorf("--on-change exit rolled back or restarted:\n%s", rr.log())
	}
}
