package ready

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/harness"
)

var readyAfterRe = regexp.MustCompile(`msg="child ready" app=paramexec pid=\d+ ready_after=(\S+)`)

// execCheck writes a check script that passes once flag exists.
func execCheck(t *testing.T, flag string) string {
	t.Helper()
	script := filepath.Join(t.TempDir(), "check.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ntest -e "+flag+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return "exec:" + script
}

// For each kind of check, systemd's READY=1 comes when the child is ready,
// not when it was started: the child boots for 1.5s first.
func TestReadyGatesSystemdReady(t *testing.T) {
	harness.ParallelE2E(t)
	const boot = 1500 * time.Millisecond
	for _, kind := range []string{"tcp", "http", "notify", "exec"} {
		t.Run(kind, func(t *testing.T) {
			port := strconv.Itoa(harness.FreePort(t))
			sd := harness.ListenSystemd(t)
			env := append(harness.BaseEnv(""), "NOTIFY_SOCKET="+sd.Path, "PORT="+port, "VALUE="+harness.Val("v"),
				"TESTSERVER_BOOT_DELAY="+boot.String())
			flag := filepath.Join(t.TempDir(), "pass")
			var check string
			switch kind {
			case "tcp":
				check = "tcp:" + port
			case "http":
				check = "http://127.0.0.1:" + port + "/up"
			case "notify":
				check = "notify"
				env = append(env, "TESTSERVER_NOTIFY_DELAY=500ms")
			case "exec":
				check = execCheck(t, flag)
			}
			pe := harness.StartBinary(t, env, "--ready", check, "--", harness.ServerBin)
			if kind == "exec" {
				// Serving is not ready: only the check says so. A second
				// of no READY=1 while the child serves shows that nothing
				// else sends it (without --ready it comes at the start).
				harness.WaitFor(t, "the child to serve", func() bool { _, ok := harness.Get(port); return ok })
				time.Sleep(time.Second)
				if sd.Count("READY=1") != 0 {
					t.Fatal("READY=1 before the exec: check passed")
				}
				if err := os.WriteFile(flag, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			harness.WaitFor(t, "READY=1", func() bool { return sd.Count("READY=1") > 0 })
			if _, ok := harness.Get(port); !ok {
				t.Error("READY=1 arrived while the child did not serve")
			}
			m := readyAfterRe.FindStringSubmatch(pe.Stderr.String())
			if m == nil {
				t.Fatalf("no 'child ready' line with ready_after:\n%s", pe.Stderr)
			}
			if d, err := time.ParseDuration(m[1]); err != nil || d < boot {
				t.Errorf("ready_after=%s: want at least the child's boot of %v", m[1], boot)
			}
			if kind == "notify" {
				// The child's own STATUS= goes on to systemd.
				harness.WaitFor(t, "the child's STATUS relayed", func() bool { return sd.With("STATUS=serving pid ") })
			}
			pe.Signal(syscall.SIGTERM)
			if code := pe.Wait(); code != 0 {
				t.Errorf("exit %d after SIGTERM; stderr:\n%s", code, pe.Stderr)
			}
			if sd.Count("READY=1") != 1 {
				t.Errorf("%d READY=1 for one start", sd.Count("READY=1"))
			}
		})
	}
}

// For each kind of check, a first child that never gets ready is stopped
// and paramexec exits 4.
func TestNeverReadyExitsNotReady(t *testing.T) {
	harness.ParallelE2E(t)
	for _, kind := range []string{"tcp", "http", "notify", "exec"} {
		t.Run(kind, func(t *testing.T) {
			port := strconv.Itoa(harness.FreePort(t))
			sd := harness.ListenSystemd(t)
			env := append(harness.BaseEnv(""), "NOTIFY_SOCKET="+sd.Path, "PORT="+port, "VALUE="+harness.Val("hang"),
				"TESTSERVER_HANG_IF=VALUE="+harness.Val("hang"))
			check := map[string]string{
				"tcp":    "tcp:127.0.0.1:" + port,
				"http":   "http://127.0.0.1:" + port + "/up",
				"notify": "notify",
				"exec":   execCheck(t, filepath.Join(t.TempDir(), "never")),
			}[kind]
			pe := harness.StartBinary(t, env, "--ready", check, "--ready-timeout", "2s", "--grace", "2s", "--", harness.ServerBin)
			code := pe.Wait()
			log := pe.Stderr.String()
			if code != 4 {
				t.Fatalf("exit %d, want 4 (not ready); stderr:\n%s", code, log)
			}
			pids := harness.ChildPids(log)
			if len(pids) != 1 {
				t.Fatalf("children started: %v, want one", pids)
			}
			if !harness.Gone(pids[0]) {
				t.Errorf("the child %d outlived paramexec", pids[0])
			}
			if !strings.Contains(log, "child not ready in time") || !strings.Contains(log, check) {
				t.Errorf("the log does not say which check failed:\n%s", log)
			}
			if sd.Count("READY=1") != 0 {
				t.Error("READY=1 for a child that never got ready")
			}
		})
	}
}

func TestReadyUsageErrors(t *testing.T) {
	harness.ParallelE2E(t)
	for _, tc := range []struct {
		env  []string
		args []string
		says string
	}{
		{nil, []string{"--ready", "bogus", "true"}, "--ready"},
		{nil, []string{"--ready", "tcp:0", "true"}, "--ready"},
		{nil, []string{"--ready", "http://127.0.0.1:{port}/", "true"}, "--proxy"},
		{nil, []string{"--ready", "exec:paramexec-no-such-check", "true"}, "--ready"},
		{nil, []string{"--ready", "tcp:80", "--ready-timeout", "0s", "true"}, "--ready-timeout"},
		{nil, []string{"--rollback-window", "-1s", "true"}, "--rollback-window"},
		{[]string{"PARAMEXEC_READY=tcp:80,bogus"}, []string{"true"}, "bogus"},
		{[]string{"PARAMEXEC_READY_TIMEOUT=soon"}, []string{"true"}, "PARAMEXEC_READY_TIMEOUT"},
		{[]string{"PARAMEXEC_ROLLBACK_WINDOW=-3s"}, []string{"true"}, "--rollback-window"},
	} {
		r := harness.RunBinary(t, append(harness.BaseEnv(""), tc.env...), tc.args...)
		if r.Code != harness.ExitUsage || !strings.Contains(r.Stderr, tc.says) {
			t.Errorf("%v %v: exit %d, want %d with %q; stderr:\n%s", tc.env, tc.args, r.Code, harness.ExitUsage, tc.says, r.Stderr)
		}
	}
}
