package main

import (
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rollbackRun is paramexec watching one SSM parameter, DB_URL, with the
// test server as its child, which serves DB_URL's value on PORT.
type rollbackRun struct {
	t    *testing.T
	path string
	port string
	sd   *fakeSystemd
	pe   *running
}

// startRollback seeds DB_URL with good and starts paramexec with flags;
// the child crashes (exit 3) when DB_URL is "crash" and never boots when it
// is "hang".
// {port} in a flag stands for the child's port.
func startRollback(t *testing.T, flags ...string) *rollbackRun {
	t.Helper()
	rr := &rollbackRun{t: t, path: uniquePath(t), port: strconv.Itoa(freePort(t)), sd: listenSystemd(t)}
	for i, f := range flags {
		flags[i] = strings.ReplaceAll(f, "{port}", rr.port)
	}
	moto.PutParameter(t, rr.path+"/DB_URL", val("good"), "String")
	env := append(baseEnv(moto.URL), "NOTIFY_SOCKET="+rr.sd.path, "PORT="+rr.port,
		"TESTSERVER_VALUE_ENV=DB_URL", "TESTSERVER_BOOT_DELAY=300ms",
		"TESTSERVER_CRASH_IF=DB_URL="+val("crash"), "TESTSERVER_CRASH_CODE=3",
		"TESTSERVER_HANG_IF=DB_URL="+val("hang"))
	args := append([]string{"--path", rr.path, "--interval", "1s", "--grace", "2s"}, flags...)
	rr.pe = startBinary(t, env, append(args, "--", serverBin)...)
	rr.serving(val("good"), 45*time.Second)
	return rr
}

// serving waits until the child serves value, and returns its pid.
func (rr *rollbackRun) serving(value string, within time.Duration) int {
	rr.t.Helper()
	var s served
	waitForWithin(rr.t, within, "the child to serve "+value, func() bool {
		var ok bool
		s, ok = get(rr.port)
		return ok && s.Value == value
	})
	return s.Pid
}

func (rr *rollbackRun) put(value string) {
	rr.t.Helper()
	moto.PutParameter(rr.t, rr.path+"/DB_URL", value, "String")
}

func (rr *rollbackRun) log() string { return rr.pe.stderr.String() }

// starts is how many children paramexec's log says it started.
func (rr *rollbackRun) starts() int { return len(childPids(rr.log())) }

func (rr *rollbackRun) waitLog(what string) {
	rr.t.Helper()
	waitFor(rr.t, what+" in the log", func() bool { return strings.Contains(rr.log(), what) })
}

// alive fails the test if paramexec has exited.
func (rr *rollbackRun) alive() {
	rr.t.Helper()
	select {
	case <-rr.pe.done:
		rr.t.Fatalf("paramexec exited with %d; stderr:\n%s", rr.pe.code, rr.log())
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
	rr.put(val("better"))
	rr.serving(val("better"), 45*time.Second)
	rr.waitLog(`msg="restart finished"`)
	time.Sleep(2 * time.Second) // two more polls: one restart, not more
	if n := rr.starts(); n != startsAfterRollback+1 {
		rr.t.Errorf("%d children after a further good change, want %d", n, startsAfterRollback+1)
	}
	if strings.Contains(rr.log(), valueMark) {
		rr.t.Errorf("the log holds a value:\n%s", rr.log())
	}
	rr.pe.signal(syscall.SIGTERM)
	if code := rr.pe.wait(); code != 0 {
		rr.t.Errorf("exit %d after SIGTERM; stderr:\n%s", code, rr.log())
	}
}

var rejectedRe = regexp.MustCompile(`level=ERROR msg="change rejected; rolling back" app=paramexec pid=\d+ changed=\[DB_URL\] after=\S+ (.*)`)

// The child started for a bad value crashes; paramexec, the same process,
// starts a child with the previous value, says in the log and to systemd
// which variable was rejected (never its value), does not try that value
// again, and takes a further good change.
func TestRollbackOnCrash(t *testing.T) {
	e2e(t)
	rr := startRollback(t, "--ready", "http://127.0.0.1:{port}/up", "--ready-timeout", "10s")
	first := rr.serving(val("good"), time.Second)
	rr.put(val("crash"))
	rr.waitLog(`msg="change rejected; rolling back"`)
	// The restored child within --ready-timeout + --grace of the failure.
	back := rr.serving(val("good"), 12*time.Second)
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
	waitFor(t, "the rollback in systemd's STATUS", func() bool { return rr.sd.with("STATUS=testserver: rolled back at ") })
	if !rr.sd.with("STATUS=testserver running (pid ") || rr.sd.count("READY=1") < 2 {
		t.Errorf("systemd did not get READY=1 for the restored child: %q", rr.sd.received())
	}
	for _, msg := range rr.sd.received() {
		if strings.Contains(msg, "rolled back") && !strings.Contains(msg, "DB_URL rejected (exit 3)") {
			t.Errorf("rollback STATUS does not name DB_URL and exit 3: %q", msg)
		}
		if strings.Contains(msg, valueMark) {
			t.Errorf("a notification holds a value: %q", msg)
		}
	}
	rr.rejectedOnce(3)
}

// The same with a child that never gets ready instead of crashing.
func TestRollbackOnReadyTimeout(t *testing.T) {
	e2e(t)
	rr := startRollback(t, "--ready", "tcp:{port}", "--ready-timeout", "3s")
	rr.put(val("hang"))
	rr.waitLog(`msg="change rejected; rolling back"`)
	rr.serving(val("good"), 2*time.Second+10*time.Second)
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
	e2e(t)
	rr := startRollback(t, "--rollback-window", "5s")
	rr.put(val("crash"))
	rr.waitLog(`msg="change rejected; rolling back"`)
	rr.serving(val("good"), 12*time.Second)
	rr.alive()
	if m := rejectedRe.FindStringSubmatch(rr.log()); m == nil || !strings.Contains(m[1], "exit_code=3") {
		t.Errorf("no rollback ERROR naming DB_URL and exit_code=3:\n%s", rr.log())
	}
	rr.rejectedOnce(3)
}

// A change back to the good value after a rollback is no change: the
// restored child keeps running.
func TestChangeBackToGoodIsNoChange(t *testing.T) {
	e2e(t)
	rr := startRollback(t, "--ready", "http://127.0.0.1:{port}/up")
	rr.put(val("crash"))
	rr.waitLog(`msg="rollback finished"`)
	back := rr.serving(val("good"), 12*time.Second)
	rr.put(val("good"))
	rr.waitLog(`msg="no change: the child runs with this environment already"`)
	if s, ok := get(rr.port); !ok || s.Pid != back || rr.starts() != 3 {
		t.Errorf("after the change back: serving %+v (ok %v), %d starts; want pid %d, 3 starts", s, ok, rr.starts(), back)
	}
	rr.pe.signal(syscall.SIGTERM)
	rr.pe.wait()
}

// --on-change exit is not rolled back: a change ends paramexec with the
// child's status, for the orchestrator to start anew, as without --ready.
func TestOnChangeExitIsNotRolledBack(t *testing.T) {
	parallelE2E(t)
	rr := startRollback(t, "--ready", "tcp:{port}", "--on-change", "exit")
	rr.put(val("crash"))
	if code := rr.pe.wait(); code != 0 {
		t.Errorf("exit %d, want the child's 0 after its SIGTERM", code)
	}
	if strings.Contains(rr.log(), "rolling back") || rr.starts() != 1 {
		t.Errorf("--on-change exit rolled back or restarted:\n%s", rr.log())
	}
}
