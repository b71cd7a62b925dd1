package overlap

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/paramexec/paramexec/internal/harness"
)

func TestRestartOverlapUsageErrors(t *testing.T) {
	harness.ParallelE2E(t)
	for _, tc := range []struct {
		env  []string
		args []string
		says string
	}{
		{nil, []string{"--restart", "overlap", "--interval", "1m", "true"}, "needs --ready"},
		{nil, []string{"--restart", "overlap", "--ready", "exec:true", "true"}, "give --interval"},
		{nil, []string{"--restart", "overlap", "--ready", "exec:true", "--interval", "1m", "--on-change", "exit", "true"}, "--on-change restart"},
		{nil, []string{"--restart", "rolling", "true"}, "want stop-first or overlap"},
		{[]string{"PARAMEXEC_RESTART=overlap", "PARAMEXEC_INTERVAL=1m"}, []string{"true"}, "needs --ready"},
		{[]string{"PARAMEXEC_RESTART=both"}, []string{"true"}, "PARAMEXEC_RESTART"},
	} {
		r := harness.RunBinary(t, append(harness.BaseEnv(""), tc.env...), tc.args...)
		if r.Code != harness.ExitUsage || !strings.Contains(r.Stderr, tc.says) {
			t.Errorf("%v %v: exit %d, want %d with %q; stderr:\n%s", tc.env, tc.args, r.Code, harness.ExitUsage, tc.says, r.Stderr)
		}
	}
}

// With two generations alive at once, the old one's setsid daemons end
// with it, and the new one's, started after the new child, are not taken
// for the old one's: they run while their child is current.
func TestOverlapSetsidLeftoversEndWithTheirGeneration(t *testing.T) {
	harness.E2E(t)
	file := filepath.Join(t.TempDir(), "app.env")
	harness.MustDo(t, os.WriteFile(file, []byte("V=1\n"), 0o600))
	args, rec := harness.ChildArgs(t, "-daemons", "2")
	// Ready once every child started has reported its daemons: the new
	// child's are running when the old one's are swept.
	check := filepath.Join(t.TempDir(), "daemons-up")
	harness.MustDo(t, os.WriteFile(check, []byte("#!/bin/sh\n"+
		`[ "$(grep -c '"event":"start"' `+rec+`)" = "$(grep -c '"kind":"daemons"' `+rec+`)" ]`+"\n"), 0o700))
	flags := []string{"--env-file", file, "--interval", "1h", "--grace", "1s", "--restart", "overlap", "--ready", "exec:" + check}
	pe := harness.StartBinary(t, harness.BaseEnv(""), append(flags, args...)...)
	var daemons []int
	for gen := 1; gen <= 4; gen++ {
		child := harness.WaitStarts(t, rec, gen)[gen-1]
		harness.WaitFor(t, "the daemons of child "+strconv.Itoa(gen), func() bool { return len(harness.DaemonsOf(t, rec)[child.Pid]) == 2 })
		if gen > 1 {
			harness.WaitFor(t, "the old child to exit", func() bool { return strings.Count(pe.Stderr.String(), `msg="old child exited"`) == gen-1 })
		}
		mine := harness.DaemonsOf(t, rec)[child.Pid]
		// gone waits 10 s for each: the leftovers have 1 s of grace.
		for _, pid := range daemons {
			if !harness.Gone(pid) {
				t.Errorf("daemon %d of an earlier generation is alive with child %d (generation %d)", pid, child.Pid, gen)
			}
		}
		for _, pid := range mine {
			if !harness.IsAlive(pid) {
				t.Errorf("daemon %d of the current child %d is not running: swept with the old generation", pid, child.Pid)
			}
		}
		daemons = append(daemons, mine...)
		if gen < 4 {
			harness.MustDo(t, os.WriteFile(file, []byte("V="+strconv.Itoa(gen+1)+"\n"), 0o600))
		}
	}
	if !strings.Contains(pe.Stderr.String(), "left outside its process group") || !strings.Contains(pe.Stderr.String(), `msg="overlap begun"`) {
		t.Errorf("the log does not say leftovers were stopped after an overlap:\n%s", pe.Stderr.String())
	}
	pe.Signal(syscall.SIGTERM)
	pe.Wait()
	for _, pid := range daemons {
		if !harness.Gone(pid) {
			t.Errorf("daemon %d outlived paramexec", pid)
		}
	}
}

// After an overlap whose new child crashed, the old child serves on and is
// the current one again for --ready notify: its STATUS= lines reach
// systemd again at once, not only from the next start.
func TestOverlapRollbackRelaysTheServingChildsStatus(t *testing.T) {
	harness.ParallelE2E(t)
	sd := harness.ListenSystemd(t)
	port := harness.FreePort(t)
	file := filepath.Join(t.TempDir(), "app.env")
	common := "TESTSERVER_CRASH_IF=VALUE=" + harness.Val("crash") + "\nTESTSERVER_CRASH_AFTER=200ms\nTESTSERVER_CRASH_CODE=3\nTESTSERVER_NOTIFY_DELAY=1ms\n"
	write := func(v string) { harness.MustDo(t, os.WriteFile(file, []byte("VALUE="+v+"\n"+common), 0o600)) }
	write(harness.Val("v0"))
	pe := harness.StartBinary(t, append(harness.BaseEnv(""), "NOTIFY_SOCKET="+sd.Path),
		"--env-file", file, "--interval", "1h", "--restart", "overlap", "--ready", "notify",
		"--listen", "tcp://127.0.0.1:"+strconv.Itoa(port), "--", harness.ServerBin)
	harness.WaitFor(t, "the first child ready", func() bool { return sd.Count("READY=1") == 1 })
	pids := harness.ChildPids(pe.Stderr.String())
	if len(pids) != 1 {
		t.Fatalf("children started %v; want one:\n%s", pids, pe.Stderr)
	}
	first := pids[0]
	write(harness.Val("crash"))
	harness.WaitFor(t, "the rollback", func() bool {
		return strings.Contains(pe.Stderr.String(), "rollback finished; the old child kept serving")
	})
	pe.Signal(syscall.SIGUSR1) // forwarded to the serving child, which reports
	want := "STATUS=still serving pid " + strconv.Itoa(first)
	harness.WaitFor(t, "the serving child's STATUS relayed", func() bool { return sd.With(want) })
	pe.Signal(syscall.SIGTERM)
	if code := pe.Wait(); code != 0 {
		t.Errorf("exit %d after SIGTERM; log:\n%s", code, pe.Stderr)
	}
}
