package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paramexec/paramexec/internal/testchild/childrec"
)

// bin is the testchild binary, built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "testchild")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "testchild")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build testchild: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// rec is one parsed record line.
type rec = childrec.Record

func readRecords(t *testing.T, path string) []rec {
	t.Helper()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	recs, err := childrec.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		t.Fatalf("record file does not end in a newline")
	}
	return recs
}

// waitRecord waits for a record matching match; the deadline only stops a
// broken test from hanging.
func waitRecord(t *testing.T, path string, match func(rec) bool) rec {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, r := range readRecords(t, path) {
			if match(r) {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no matching record within 30s; have %+v", readRecords(t, path))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func event(pid int, ev string) func(rec) bool {
	return func(r rec) bool { return r.Pid == pid && r.Event == ev }
}

func signalRec(pid int, sig string) func(rec) bool {
	return func(r rec) bool { return r.Pid == pid && r.Event == "signal" && r.Signal == sig }
}

// startChild runs testchild in its own process group with a fresh record
// file; cleanup kills the group.
func startChild(t *testing.T, args ...string) (*exec.Cmd, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "records.jsonl")
	cmd := exec.Command(bin, append([]string{"-record", path}, args...)...)
	cmd.Env = append(os.Environ(), "TESTCHILD_MARK=a=b c")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	return cmd, path
}

func wait(t *testing.T, cmd *exec.Cmd) syscall.WaitStatus {
	t.Helper()
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("child did not exit within 30s")
	}
	return cmd.ProcessState.Sys().(syscall.WaitStatus)
}

func TestStartSignalsAndTerm(t *testing.T) {
	cmd, path := startChild(t)
	pid := cmd.Process.Pid
	start := waitRecord(t, path, event(pid, "start"))
	if start.Ppid != os.Getpid() || start.Pgid != pid {
		t.Errorf("start record ppid %d pgid %d, want %d and %d", start.Ppid, start.Pgid, os.Getpid(), pid)
	}
	if start.Env["TESTCHILD_MARK"] != "a=b c" || start.Env["PATH"] != os.Getenv("PATH") {
		t.Errorf("start record env lacks the environment it was given")
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("record file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}

	for _, s := range []struct {
		sig  syscall.Signal
		name string
	}{
		{syscall.SIGUSR1, "SIGUSR1"}, {syscall.SIGHUP, "SIGHUP"}, {syscall.SIGQUIT, "SIGQUIT"},
		{syscall.SIGWINCH, "SIGWINCH"}, {syscall.SIGUSR2, "SIGUSR2"}, {syscall.Signal(35), "SIGRTMIN+1"},
	} {
		if err := cmd.Process.Signal(s.sig); err != nil {
			t.Fatal(err)
		}
		waitRecord(t, path, signalRec(pid, s.name))
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if ws := wait(t, cmd); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("after SIGTERM: %v, want exit 0", ws)
	}
	recs := readRecords(t, path)
	var events []string
	for _, r := range recs {
		events = append(events, r.Event+r.Signal)
	}
	want := []string{"start", "signalSIGUSR1", "signalSIGHUP", "signalSIGQUIT", "signalSIGWINCH", "signalSIGUSR2", "signalSIGRTMIN+1", "signalSIGTERM", "exit"}
	if !slices.Equal(events, want) {
		t.Errorf("records %q, want %q", events, want)
	}
	if last := recs[len(recs)-1]; last.Code == nil || *last.Code != 0 {
		t.Errorf("exit record %+v, want code 0", last)
	}
}

func TestExitCode(t *testing.T) {
	cmd, path := startChild(t, "-exit", "3")
	if ws := wait(t, cmd); !ws.Exited() || ws.ExitStatus() != 3 {
		t.Fatalf("%v, want exit 3", ws)
	}
	recs := readRecords(t, path)
	if len(recs) != 2 || recs[0].Event != "start" || recs[1].Event != "exit" || recs[1].Code == nil || *recs[1].Code != 3 {
		t.Errorf("records %+v, want start then exit code 3", recs)
	}
}

func TestRunFor(t *testing.T) {
	cmd, path := startChild(t, "-run", "100ms")
	if ws := wait(t, cmd); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("%v, want exit 0", ws)
	}
	waitRecord(t, path, event(cmd.Process.Pid, "exit"))
}

func TestTermExitAfterStopDelay(t *testing.T) {
	const delay = 300 * time.Millisecond
	cmd, path := startChild(t, "-term-exit", "7", "-stop-delay", delay.String())
	pid := cmd.Process.Pid
	waitRecord(t, path, event(pid, "start"))
	sent := time.Now()
	cmd.Process.Signal(syscall.SIGINT)
	if ws := wait(t, cmd); !ws.Exited() || ws.ExitStatus() != 7 {
		t.Fatalf("%v, want exit 7", ws)
	}
	if elapsed := time.Since(sent); elapsed < delay {
		t.Errorf("exited %v after SIGINT, before the %v stop delay", elapsed, delay)
	}
	waitRecord(t, path, signalRec(pid, "SIGINT"))
	if r := waitRecord(t, path, event(pid, "exit")); *r.Code != 7 {
		t.Errorf("exit record code %d, want 7", *r.Code)
	}
}

func TestIgnoreTerm(t *testing.T) {
	cmd, path := startChild(t, "-ignore-term")
	pid := cmd.Process.Pid
	waitRecord(t, path, event(pid, "start"))
	cmd.Process.Signal(syscall.SIGTERM)
	waitRecord(t, path, signalRec(pid, "SIGTERM"))
	cmd.Process.Signal(syscall.SIGINT)
	waitRecord(t, path, signalRec(pid, "SIGINT"))
	// SIGUSR1 after both: once it is recorded, TERM and INT were handled
	// without exiting.
	cmd.Process.Signal(syscall.SIGUSR1)
	waitRecord(t, path, signalRec(pid, "SIGUSR1"))
	cmd.Process.Signal(syscall.SIGKILL)
	if ws := wait(t, cmd); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("%v, want killed by SIGKILL", ws)
	}
	for _, r := range readRecords(t, path) {
		if r.Event == "exit" {
			t.Error("child with -ignore-term exited on its own")
		}
	}
}

func TestDieBySignal(t *testing.T) {
	for _, tc := range []struct {
		arg string
		sig syscall.Signal
	}{
		{"KILL", syscall.SIGKILL}, {"TERM", syscall.SIGTERM}, {"SIGINT", syscall.SIGINT},
		{"QUIT", syscall.SIGQUIT}, {"ABRT", syscall.SIGABRT}, {"10", syscall.SIGUSR1},
	} {
		t.Run(tc.arg, func(t *testing.T) {
			cmd, path := startChild(t, "-die", tc.arg)
			ws := wait(t, cmd)
			if !ws.Signaled() || ws.Signal() != tc.sig {
				t.Fatalf("%v, want death by %v", ws, tc.sig)
			}
			if ws.CoreDump() {
				t.Errorf("dumped core")
			}
			recs := readRecords(t, path)
			if len(recs) != 1 || recs[0].Event != "start" {
				t.Errorf("records %+v, want only start", recs)
			}
		})
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{}, {"-record", filepath.Join(t.TempDir(), "r"), "-die", "NOPE"}, {"-bogus"}} {
		err := exec.Command(bin, args...).Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("testchild %q: %v, want exit 2", args, err)
		}
	}
}

// alive reports whether pid runs and is not a zombie; it reaps pid if it
// is a dead child of this process.
func alive(pid int) bool {
	var ws unix.WaitStatus
	unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(stat)
	return !strings.HasPrefix(s[strings.LastIndexByte(s, ')')+1:], " Z")
}

func TestSpawnSurvivesTerm(t *testing.T) {
	path := filepath.Join(t.TempDir(), "records.jsonl")
	var stdout bytes.Buffer
	cmd := exec.Command(bin, "-record", path, "-spawn", "2", "-print", "hello")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout = &stdout // a pipe: Wait would block while a sleeper held it
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })

	sp := waitRecord(t, path, event(pid, "spawned"))
	if sp.Kind != "spawn" || len(sp.Children) != 2 {
		t.Fatalf("spawned record %+v, want 2 children", sp)
	}
	for _, c := range sp.Children {
		if pgid, err := syscall.Getpgid(c); err != nil || pgid != pid {
			t.Errorf("sleeper %d in group %d (%v), want the child's group %d", c, pgid, err, pid)
		}
	}
	syscall.Kill(-pid, syscall.SIGTERM)
	if ws := wait(t, cmd); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("child: %v, want exit 0 on SIGTERM", ws)
	}
	if stdout.String() != "hello\n" {
		t.Errorf("stdout %q, want the -print text", stdout.String())
	}
	for _, c := range sp.Children {
		if !alive(c) {
			t.Errorf("sleeper %d did not survive SIGTERM", c)
		}
	}
	syscall.Kill(-pid, syscall.SIGKILL)
	deadline := time.Now().Add(30 * time.Second)
	for _, c := range sp.Children {
		for alive(c) {
			if time.Now().After(deadline) {
				t.Fatalf("sleeper %d survived SIGKILL", c)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestOrphansReparentToSubreaper(t *testing.T) {
	// The test binary becomes the subreaper, so the orphans must become its
	// children; nothing else in this package minds.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	cmd, path := startChild(t, "-orphans", "3", "-exit", "0")
	if ws := wait(t, cmd); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("child: %v", ws)
	}
	sp := waitRecord(t, path, event(cmd.Process.Pid, "spawned"))
	if sp.Kind != "orphans" || len(sp.Children) != 3 {
		t.Fatalf("spawned record %+v, want 3 orphans", sp)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, o := range sp.Children {
		for {
			var ws unix.WaitStatus
			got, err := unix.Wait4(o, &ws, unix.WNOHANG, nil)
			if err != nil {
				t.Fatalf("orphan %d is not a child of the subreaper: %v", o, err)
			}
			if got == o {
				if !ws.Exited() || ws.ExitStatus() != 0 {
					t.Errorf("orphan %d: %v, want exit 0", o, ws)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("orphan %d did not exit", o)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestConcurrentWritersKeepLinesWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.jsonl")
	// A large environment makes each start record tens of kilobytes, enough
	// to interleave were it written in pieces.
	big := strings.Repeat("x", 64<<10)
	const n = 6
	var wg sync.WaitGroup
	pids := make([]int, n)
	for i := range n {
		wg.Go(func() {
			cmd := exec.Command(bin, "-record", path, "-exit", "0")
			cmd.Env = append(os.Environ(), "BIG="+big)
			if err := cmd.Run(); err != nil {
				t.Errorf("child %d: %v", i, err)
			}
			pids[i] = cmd.Process.Pid
		})
	}
	wg.Wait()
	recs := readRecords(t, path)
	if len(recs) != 2*n {
		t.Fatalf("%d records, want %d", len(recs), 2*n)
	}
	for _, pid := range pids {
		var start, exit bool
		for _, r := range recs {
			if r.Pid == pid {
				start = start || (r.Event == "start" && len(r.Env["BIG"]) == len(big))
				exit = exit || r.Event == "exit"
			}
		}
		if !start || !exit {
			t.Errorf("pid %d: start record whole %v, exit record %v", pid, start, exit)
		}
	}
}
