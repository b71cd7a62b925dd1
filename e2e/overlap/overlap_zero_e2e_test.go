package overlap

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/harness"
)

const overlapChanges = 10

// checkOverlapLog asserts that each of n changes went through every step
// of an overlap, as the log names them.
func checkOverlapLog(t *testing.T, log string, n int) {
	t.Helper()
	for _, step := range []string{`msg="overlap begun"`, `msg="new child ready"`, "msg=switched", `msg="old child draining"`, `msg="old child exited"`} {
		if got := strings.Count(log, step); got != n {
			t.Errorf("%d lines %s, want %d", got, step, n)
		}
	}
	if strings.Contains(log, `msg="restart begun"`) || strings.Contains(log, "rolling back") {
		t.Errorf("a stop-first restart or a rollback in an overlap run:\n%s", log)
	}
}

// With --listen and --restart overlap the new child shares the socket; it
// is judged by its READY=1 (a connect or a GET on the shared socket could
// be answered by the old child). 10 changes under load: nothing refused,
// nothing failed, and once a new value has been served no request sent
// later gets an older one, but within an overlap, where both children
// accept on the shared socket (see sharedWindows).
func TestZeroDowntimeListenOverlap(t *testing.T) {
	harness.E2E(t)
	port := harness.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	pe, c, samples, values := harness.ZeroScenario(t, url, "TESTSERVER_NOTIFY_DELAY=1ms\n", overlapChanges,
		"--listen", fmt.Sprintf("web=tcp://127.0.0.1:%d", port), "--restart", "overlap", "--ready", "notify", "--grace", "5s")
	harness.CheckNothingLost(t, pe, c, samples, values, overlapChanges+1)
	checkOverlapLog(t, pe.Stderr.String(), overlapChanges)
	harness.StopAndCheckChildren(t, pe, c.Pids)
}

// With --proxy and --restart overlap the new child boots on a new port;
// the proxy switches to it once its check passes ({port} is its port),
// and the old child's connections drain.
func TestZeroDowntimeProxyOverlap(t *testing.T) {
	harness.E2E(t)
	port := harness.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	pe, c, samples, values := harness.ZeroScenario(t, url, "TESTSERVER_PORT_ENV=APP_PORT\n", overlapChanges,
		"--proxy", fmt.Sprintf("127.0.0.1:%d=APP_PORT", port), "--restart", "overlap", "--ready", "http://127.0.0.1:{port}/up", "--grace", "5s")
	harness.CheckNothingLost(t, pe, c, samples, values, overlapChanges+1)
	log := pe.Stderr.String()
	checkOverlapLog(t, log, overlapChanges)
	if n := strings.Count(log, `msg="proxy switched"`); n != overlapChanges+1 {
		t.Errorf("%d proxy switched lines, want %d (the first child's too)", n, overlapChanges+1)
	}
	harness.StopAndCheckChildren(t, pe, c.Pids)
}

// A server with no graceful stop at all (at SIGTERM it exits, dropping
// every connection it holds) behind --proxy, in both restart modes: the
// replaced child's stop signal waits until every connection the proxy
// sent it has been answered, so its abrupt exit drops nothing. Each answer
// takes 20 ms, so that at every restart about six requests are in flight
// to that child: without the wait, each restart loses them.
func TestProxySparesAnAbruptServer(t *testing.T) {
	harness.E2E(t)
	for _, tc := range []struct {
		mode  string
		flags []string
	}{
		{"stop-first", nil},
		{"overlap", []string{"--restart", "overlap", "--ready", "http://127.0.0.1:{port}/up"}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			port := harness.FreePort(t)
			url := fmt.Sprintf("http://127.0.0.1:%d/", port)
			args := append([]string{"--proxy", fmt.Sprintf("127.0.0.1:%d=APP_PORT", port), "--grace", "5s"}, tc.flags...)
			pe, c, samples, values := harness.ZeroScenario(t, url, "TESTSERVER_PORT_ENV=APP_PORT\nTESTSERVER_STOP=abrupt\nTESTSERVER_ANSWER_DELAY=20ms\n", harness.ZeroChanges, args...)
			harness.CheckNothingLost(t, pe, c, samples, values, harness.ZeroChanges+1)
			harness.StopAndCheckChildren(t, pe, c.Pids)
		})
	}
}

// A new child that crashes while booting during the overlap: the old child
// serves throughout (0 failed requests, answers from it alone), one
// rollback is logged, and a later good change switches as usual.
func TestOverlapCrashUnderLoad(t *testing.T) {
	harness.E2E(t)
	for _, mode := range []string{"listen", "proxy"} {
		t.Run(mode, func(t *testing.T) {
			port := harness.FreePort(t)
			url := fmt.Sprintf("http://127.0.0.1:%d/", port)
			file := filepath.Join(t.TempDir(), "app.env")
			common := "TESTSERVER_BOOT_DELAY=1s\nTESTSERVER_CRASH_IF=VALUE=" + harness.Val("crash") + "\nTESTSERVER_CRASH_AFTER=500ms\nTESTSERVER_CRASH_CODE=3\nTESTSERVER_PORT_ENV=APP_PORT\nTESTSERVER_NOTIFY_DELAY=1ms\n"
			write := func(v string) { harness.MustDo(t, os.WriteFile(file, []byte("VALUE="+v+"\n"+common), 0o600)) }
			write(harness.Val("v0"))
			args := []string{"--env-file", file, "--interval", "1h", "--restart", "overlap", "--grace", "5s"}
			if mode == "listen" {
				args = append(args, "--listen", fmt.Sprintf("tcp://127.0.0.1:%d", port), "--ready", "notify")
			} else {
				args = append(args, "--proxy", fmt.Sprintf("127.0.0.1:%d=APP_PORT", port))
			}
			pe := harness.StartBinary(t, harness.BaseEnv(""), append(args, "--", harness.ServerBin)...)
			client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			first := harness.GetInfo(t, client, url+"info")
			load := harness.StartLoad(url)
			time.Sleep(300 * time.Millisecond)
			write(harness.Val("crash"))
			harness.WaitFor(t, "the rollback", func() bool {
				return strings.Contains(pe.Stderr.String(), "rollback finished; the old child kept serving")
			})
			time.Sleep(300 * time.Millisecond)
			write(harness.Val("v1"))
			harness.WaitFor(t, "the good change to be served", func() bool { return load.Latest.Load() == harness.Val("v1") })
			time.Sleep(300 * time.Millisecond)
			samples := load.Stop()
			c := harness.Count(samples)
			t.Logf("%d requests, %d refused, %d failed, %d children answered", c.Total, c.Refused, c.Failed, len(c.Pids))
			if c.Refused != 0 || c.Failed != 0 {
				t.Errorf("%d refused, %d failed of %d requests, want none (first failure: %v); log:\n%s", c.Refused, c.Failed, c.Total, c.FirstFailure, pe.Stderr.String())
			}
			if len(c.Pids) != 2 || !slices.Contains(c.Pids, first.Pid) {
				t.Errorf("children %v answered; want the first %d and the good change's, never the crashed one", c.Pids, first.Pid)
			}
			harness.CheckOrder(t, samples, []string{harness.Val("v0"), harness.Val("v1")}, harness.SharedWindows(t, pe.Stderr.String()))
			log := pe.Stderr.String()
			if n := strings.Count(log, `msg="change rejected; rolling back"`); n != 1 || !strings.Contains(log, "exit_code=3") {
				t.Errorf("%d rollbacks logged, want 1 with exit_code=3:\n%s", n, log)
			}
			harness.StopAndCheckChildren(t, pe, c.Pids)
		})
	}
}

// A terminating signal during an overlap (the new child never boots) stops
// both children and starts nothing; paramexec exits with the new child's
// status, and neither child outlives it.
func TestOverlapTerminateDuringOverlap(t *testing.T) {
	harness.E2E(t)
	port := harness.FreePort(t)
	file := filepath.Join(t.TempDir(), "app.env")
	common := "TESTSERVER_HANG_IF=VALUE=" + harness.Val("hang") + "\nTESTSERVER_NOTIFY_DELAY=1ms\n"
	write := func(v string) { harness.MustDo(t, os.WriteFile(file, []byte("VALUE="+v+"\n"+common), 0o600)) }
	write(harness.Val("v0"))
	pe := harness.StartBinary(t, harness.BaseEnv(""), "--env-file", file, "--interval", "1h", "--restart", "overlap", "--ready", "notify",
		"--listen", fmt.Sprintf("tcp://127.0.0.1:%d", port), "--grace", "5s", "--", harness.ServerBin)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	first := harness.GetInfo(t, client, fmt.Sprintf("http://127.0.0.1:%d/info", port))
	write(harness.Val("hang"))
	harness.WaitFor(t, "the overlap", func() bool { return strings.Contains(pe.Stderr.String(), `msg="overlap begun"`) })
	pids := harness.ChildPids(pe.Stderr.String())
	if len(pids) != 2 {
		t.Fatalf("children %v; want the first and the hung one", pids)
	}
	pe.Signal(syscall.SIGTERM)
	// The new child has just started: it may take SIGTERM before its
	// handler is installed (143) or after (0). Either is its own status.
	if code := pe.Wait(); code != 0 && code != 128+int(syscall.SIGTERM) {
		t.Errorf("exit %d, want the new child's 0 or 143 after SIGTERM; log:\n%s", code, pe.Stderr.String())
	}
	log := pe.Stderr.String()
	if !strings.Contains(log, `msg="old child draining" app=paramexec pid=`+strconv.Itoa(first.Pid)) || !strings.Contains(log, `why="received SIGTERM"`) {
		t.Errorf("the serving child was not asked to stop by the signal:\n%s", log)
	}
	if n := len(harness.ChildPids(log)); n != 2 || strings.Contains(log, "rolling back") {
		t.Errorf("%d children started, or a rollback, after a terminating signal:\n%s", n, log)
	}
	for _, pid := range pids {
		if harness.IsAlive(pid) {
			t.Errorf("child %d outlived paramexec", pid)
		}
	}
}

// The serving child dies on its own while the new child of an overlap is
// still booting: the proxy holds new connections for the new child instead
// of sending them to the dead child's port, so a request made then waits
// for the boot and is answered with the new value.
func TestOverlapProxyHoldsWhenServingChildDies(t *testing.T) {
	harness.E2E(t)
	port := harness.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	file := filepath.Join(t.TempDir(), "app.env")
	write := func(v string) {
		harness.MustDo(t, os.WriteFile(file, []byte("VALUE="+v+"\nTESTSERVER_PORT_ENV=APP_PORT\nTESTSERVER_BOOT_DELAY=1500ms\n"), 0o600))
	}
	write(harness.Val("v0"))
	pe := harness.StartBinary(t, harness.BaseEnv(""), "--env-file", file, "--interval", "1h", "--restart", "overlap", "--grace", "5s",
		"--proxy", fmt.Sprintf("127.0.0.1:%d=APP_PORT", port), "--", harness.ServerBin)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	first := harness.GetInfo(t, client, url+"info")
	write(harness.Val("v1"))
	harness.WaitFor(t, "the overlap", func() bool { return strings.Contains(pe.Stderr.String(), `msg="overlap begun"`) })
	harness.MustDo(t, syscall.Kill(first.Pid, syscall.SIGKILL))
	harness.WaitFor(t, "paramexec to reap the serving child", func() bool { return syscall.Kill(first.Pid, 0) == syscall.ESRCH })
	// One request, not a retrying wait: a refused or reset one is the bug.
	resp, err := client.Get(url + "info")
	if err != nil {
		t.Fatalf("a request while the new child boots failed: %v; log:\n%s", err, pe.Stderr.String())
	}
	var got harness.Info
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, decode error %v", resp.StatusCode, err)
	}
	if got.Pid == first.Pid || got.Value != harness.Val("v1") {
		t.Errorf("answered by pid %d with %q; want the new child (not %d) with the new value", got.Pid, got.Value, first.Pid)
	}
	harness.StopAndCheckChildren(t, pe, []int{first.Pid, got.Pid})
}
