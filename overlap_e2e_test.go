package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestRestartOverlapUsageErrors(t *testing.T) {
	parallelE2E(t)
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
		r := runBinary(t, append(baseEnv(""), tc.env...), tc.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.says) {
			t.Errorf("%v %v: exit %d, want %d with %q; stderr:\n%s", tc.env, tc.args, r.code, exitUsage, tc.says, r.stderr)
		}
	}
}

// With two generations alive at once, the old one's setsid daemons end
// with it, and the new one's, started after the new child, are not taken
// for the old one's: they run while their child is current.
func TestOverlapSetsidLeftoversEndWithTheirGeneration(t *testing.T) {
	e2e(t)
	file := filepath.Join(t.TempDir(), "app.env")
	mustDo(t, os.WriteFile(file, []byte("V=1\n"), 0o600))
	args, rec := childArgs(t, "-daemons", "2")
	// Ready once every child started has reported its daemons: the new
	// child's are running when the old one's are swept.
	check := filepath.Join(t.TempDir(), "daemons-up")
	mustDo(t, os.WriteFile(check, []byte("#!/bin/sh\n"+
		`[ "$(grep -c '"event":"start"' `+rec+`)" = "$(grep -c '"kind":"daemons"' `+rec+`)" ]`+"\n"), 0o700))
	flags := []string{"--env-file", file, "--interval", "1h", "--grace", "1s", "--restart", "overlap", "--ready", "exec:" + check}
	pe := startBinary(t, baseEnv(""), append(flags, args...)...)
	var daemons []int
	for gen := 1; gen <= 4; gen++ {
		child := waitStarts(t, rec, gen)[gen-1]
		waitFor(t, "the daemons of child "+strconv.Itoa(gen), func() bool { return len(daemonsOf(t, rec)[child.Pid]) == 2 })
		if gen > 1 {
			waitFor(t, "the old child to exit", func() bool { return strings.Count(pe.stderr.String(), `msg="old child exited"`) == gen-1 })
		}
		mine := daemonsOf(t, rec)[child.Pid]
		// gone waits 10 s for each: the leftovers have 1 s of grace.
		for _, pid := range daemons {
			if !gone(pid) {
				t.Errorf("daemon %d of an earlier generation is alive with child %d (generation %d)", pid, child.Pid, gen)
			}
		}
		for _, pid := range mine {
			if !isAlive(pid) {
				t.Errorf("daemon %d of the current child %d is not running: swept with the old generation", pid, child.Pid)
			}
		}
		daemons = append(daemons, mine...)
		if gen < 4 {
			mustDo(t, os.WriteFile(file, []byte("V="+strconv.Itoa(gen+1)+"\n"), 0o600))
		}
	}
	if !strings.Contains(pe.stderr.String(), "left outside its process group") || !strings.Contains(pe.stderr.String(), `msg="overlap begun"`) {
		t.Errorf("the log does not say leftovers were stopped after an overlap:\n%s", pe.stderr.String())
	}
	pe.signal(syscall.SIGTERM)
	pe.wait()
	for _, pid := range daemons {
		if !gone(pid) {
			t.Errorf("daemon %d outlived paramexec", pid)
		}
	}
}

// After an overlap whose new child crashed, the old child serves on and is
// the current one again for --ready notify: its STATUS= lines reach
// systemd again at once, not only from the next start.
func TestOverlapRollbackRelaysTheServingChildsStatus(t *testing.T) {
	parallelE2E(t)
	sd := listenSystemd(t)
	port := freePort(t)
	file := filepath.Join(t.TempDir(), "app.env")
	common := "TESTSERVER_CRASH_IF=VALUE=" + val("crash") + "\nTESTSERVER_CRASH_AFTER=200ms\nTESTSERVER_CRASH_CODE=3\nTESTSERVER_NOTIFY_DELAY=1ms\n"
	write := func(v string) { mustDo(t, os.WriteFile(file, []byte("VALUE="+v+"\n"+common), 0o600)) }
	write(val("v0"))
	pe := startBinary(t, append(baseEnv(""), "NOTIFY_SOCKET="+sd.path),
		"--env-file", file, "--interval", "1h", "--restart", "overlap", "--ready", "notify",
		"--listen", "tcp://127.0.0.1:"+strconv.Itoa(port), "--", serverBin)
	waitFor(t, "the first child ready", func() bool { return sd.count("READY=1") == 1 })
	pids := childPids(pe.stderr.String())
	if len(pids) != 1 {
		t.Fatalf("children started %v; want one:\n%s", pids, pe.stderr)
	}
	first := pids[0]
	write(val("crash"))
	waitFor(t, "the rollback", func() bool {
		return strings.Contains(pe.stderr.String(), "rollback finished; the old child kept serving")
	})
	pe.signal(syscall.SIGUSR1) // forwarded to the serving child, which reports
	want := "STATUS=still serving pid " + strconv.Itoa(first)
	waitFor(t, "the serving child's STATUS relayed", func() bool { return sd.with(want) })
	pe.signal(syscall.SIGTERM)
	if code := pe.wait(); code != 0 {
		t.Errorf("exit %d after SIGTERM; log:\n%s", code, pe.stderr)
	}
}
