package container_test

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/testenv"
)

// TestDockerStop stops containers as docker stop does (SIGTERM to PID 1,
// SIGKILL after the stop timeout) and checks the status the runtime
// reports, what the application saw, and that nothing of the container
// outlives it.
func TestDockerStop(t *testing.T) {
	watching := []string{"PARAMEXEC_INTERVAL=1s"}
	for _, tc := range []struct {
		name    string
		env     []string // PARAMEXEC_* beyond the image's PARAMEXEC_INIT=true
		flags   []string // the application's
		timeout time.Duration
		want    int
		killed  bool // whether docker stop has to SIGKILL
		term    bool // whether the application gets SIGTERM
	}{
		{"watching/app exits 0", watching, []string{"-term-exit", "0"}, 10 * time.Second, 0, false, true},
		{"init only/app exits 0", nil, []string{"-term-exit", "0"}, 10 * time.Second, 0, false, true},
		{"watching/app's own code", watching, []string{"-term-exit", "7"}, 10 * time.Second, 7, false, true},
		{"init only/app's own code", nil, []string{"-term-exit", "7"}, 10 * time.Second, 7, false, true},
		// The application outlives the stop timeout: the runtime kills
		// PID 1 and reports 128+SIGKILL, the Dockerfile's warning about
		// --grace and --stop-timeout.
		{"watching/stop timeout before grace", append(watching, "PARAMEXEC_GRACE=60s"), []string{"-ignore-term"}, 2 * time.Second, 137, true, true},
		{"init only/stop timeout before grace", []string{"PARAMEXEC_GRACE=60s"}, []string{"-ignore-term"}, 2 * time.Second, 137, true, true},
		// Grace shorter than the stop timeout: paramexec kills the
		// application itself and reports it as 128+SIGKILL, in time.
		{"watching/grace before stop timeout", append(watching, "PARAMEXEC_GRACE=1s"), []string{"-ignore-term"}, 20 * time.Second, 137, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := runContainer(t, app(tc.flags...), awsEnv(tc.env...))
			started := c.waitStarts(t, 1)[0]
			before := c.pids(t)
			code, killed := c.dockerStop(t, tc.timeout)
			if code != tc.want || killed != tc.killed {
				t.Errorf("runc reports %d (SIGKILL needed: %v), want %d (%v); output:\n%s", code, killed, tc.want, tc.killed, c.logs.String())
			}
			recs := c.records(t)
			gotTerm := slices.ContainsFunc(recs, func(r recordT) bool { return r.Pid == started.Pid && r.Signal == "SIGTERM" })
			if gotTerm != tc.term {
				t.Errorf("application got SIGTERM: %v, want %v: %+v", gotTerm, tc.term, recs)
			}
			if !killed && tc.want < 128 {
				// It ended on its own, not by the namespace's teardown.
				if !slices.ContainsFunc(recs, func(r recordT) bool { return r.Event == "exit" && r.Pid == started.Pid }) {
					t.Errorf("the application has no exit record: it did not end on its own: %+v", recs)
				}
			}
			checkNothingLeft(t, c, before)
		})
	}
}

// TestExitStatus checks the status for an application that ends by itself:
// its code, or 128+N when signal N killed it, as a shell would report it.
func TestExitStatus(t *testing.T) {
	for _, tc := range []struct {
		flags []string
		want  int
	}{
		{[]string{"-exit", "0"}, 0},
		{[]string{"-exit", "3"}, 3},
		{[]string{"-die", "HUP"}, 128 + 1},
		{[]string{"-die", "KILL"}, 128 + 9},
	} {
		t.Run(strings.Join(tc.flags, ""), func(t *testing.T) {
			c := runContainer(t, app(tc.flags...), awsEnv())
			if code := c.wait(t); code != tc.want {
				t.Errorf("runc reports %d, want %d; output:\n%s", code, tc.want, c.logs.String())
			}
		})
	}
}

// checkNothingLeft fails if a process the container had is still alive
// once runc reports it ended, or the runtime still knows the container. It
// looks once, without waiting: the kernel lets a PID namespace's init end
// only after every other process in the namespace has gone, and runc
// reports the end of init, so anything alive now was never in it or
// escaped it.
func checkNothingLeft(t *testing.T, c *container, pids []int) {
	t.Helper()
	if len(pids) < 2 {
		t.Errorf("runc ps listed %v before the stop, want paramexec and the application", pids)
	}
	for _, pid := range pids {
		if !gone(pid) {
			t.Errorf("pid %d of the container is still there after it ended", pid)
		}
	}
	if out, err := runcState(c.id); err == nil {
		t.Errorf("runc still knows the container after runc run returned: %s", out)
	}
}

// TestZombiesReaped leaves orphans in the container: they are reparented
// to its PID 1, paramexec, which must reap them.
func TestZombiesReaped(t *testing.T) {
	c := runContainer(t, app("-orphans", "3"), awsEnv("PARAMEXEC_INTERVAL=1s"))
	started := c.waitStarts(t, 1)[0]
	pid1 := c.initPid(t)
	// The orphans sleep 50-200ms and exit; a PID 1 that reaps takes them
	// as they go. Ten seconds is fifty times their life: anything with
	// PID 1 as parent that is not the application by then is a zombie
	// (or an orphan that never ended) left behind.
	deadline := time.Now().Add(10 * time.Second)
	var left []string
	for {
		left = left[:0]
		for _, pid := range childrenOf(t, pid1) {
			st := testenv.ProcStatus(t, pid)
			if ns := strings.Fields(st["NSpid"]); len(ns) == 2 && ns[1] == strconv.Itoa(started.Pid) {
				continue
			}
			left = append(left, strconv.Itoa(pid)+" "+st["State"])
		}
		if len(left) == 0 && slices.ContainsFunc(c.records(t), func(r recordT) bool { return r.Kind == "orphans" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s PID 1 still has children other than the application: %v; records %+v", left, c.records(t))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, killed := c.dockerStop(t, 10*time.Second); code != 0 || killed {
		t.Errorf("docker stop: %d (SIGKILL needed: %v), want 0", code, killed)
	}
}
