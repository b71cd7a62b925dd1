package exec_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/exec"
	"github.com/paramexec/paramexec/signals"
)

// helperEnv makes the test binary, re-executed, play a part instead of
// running tests: the os/exec test pattern.
const helperEnv = "PARAMEXEC_EXEC_TEST_HELPER"

// deadline bounds every wait for an event; it is no speed assertion.
const deadline = 30 * time.Second

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "replace":
		helperReplace()
	case "supervise":
		helperSupervise()
	case "lookpath":
		_, err := exec.LookPath(os.Args[1], nil)
		fmt.Fprintln(os.Stderr, "lookpath:", err)
		os.Exit(exec.ExitCode(err))
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// helperReplace sets up some signal handling, then replaces itself with
// os.Args[1:], giving it its own environment minus helperEnv.
func helperReplace() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR1)
	signal.Ignore(syscall.SIGUSR2)
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, helperEnv+"=") })
	err := exec.Replace(os.Args[1:], env)
	fmt.Fprintln(os.Stderr, "replace:", err)
	os.Exit(exec.ExitCode(err))
}

// helperSupervise is paramexec in miniature, as main wires it: subreaper,
// signals.Notify, Supervisor with signals.Reap. It supervises os.Args[1:];
// with HELPER_RESTART_WHEN=FILE set, it asks for one restart (GEN=2) once
// FILE exists. With HELPER_STAT=FILE it writes "pgrp tpgid" of itself there
// after Run, to show who owns the terminal.
func helperSupervise() {
	if err := signals.SetSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	sigs := make(chan os.Signal, 128)
	stop := signals.Notify(sigs)
	defer stop()
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, helperEnv+"=") })
	changes := make(chan exec.Change)
	sup := &exec.Supervisor{
		Argv:  os.Args[1:],
		Grace: 300 * time.Millisecond,
		Log:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Reap:  signals.Reap,
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if when := os.Getenv("HELPER_RESTART_WHEN"); when != "" {
		go func() {
			for !exists(when) {
				select {
				case <-ctx.Done():
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
			select {
			case changes <- exec.Change{Env: append(slices.Clone(env), "GEN=2"), Reason: "GEN changed"}:
			case <-ctx.Done():
			}
		}()
	}
	code, err := sup.Run(ctx, append(env, "GEN=1"), changes, sigs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
	}
	if f := os.Getenv("HELPER_STAT"); f != "" {
		pgrp, tpgid := procStat(os.Getpid())
		os.WriteFile(f, fmt.Appendf(nil, "%d %d\n", pgrp, tpgid), 0o600)
	}
	os.Exit(code)
}

// procStat returns the process group and the terminal's foreground group
// of pid, from /proc/PID/stat.
func procStat(pid int) (pgrp, tpgid int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1, -1
	}
	// The command name may hold spaces; fields count from its closing ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	pgrp, _ = strconv.Atoi(f[2])
	tpgid, _ = strconv.Atoi(f[5])
	return pgrp, tpgid
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// alive reports whether pid runs: it exists and is no zombie. Grandchildren
// orphaned in this test process go to PID 1, which may be slow to reap them
// (or, in some sandboxes, never does), so a zombie counts as gone.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// eventually polls cond until it holds, failing the test after deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for l := range strings.Lines(string(b)) {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	eventually(t, path, func() bool { b, _ := os.ReadFile(path); return bytes.HasSuffix(b, []byte("\n")) })
	b, _ := os.ReadFile(path)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return pid
}
