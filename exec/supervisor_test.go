package exec_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/exec"
	"github.com/paramexec/paramexec/signals"
)

// harness runs a Supervisor in a goroutine and lets the test talk to it.
type harness struct {
	t       *testing.T
	dir     string
	sigs    chan os.Signal // unbuffered: a send returns once Run has it
	changes chan exec.Change
	events  chan exec.Event
	seen    []exec.Event
	done    chan result
	cancel  context.CancelFunc
	res     *result
}

type result struct {
	code int
	err  error
}

// env is the child's environment: PATH, D (the test's directory) and GEN.
func (h *harness) env(gen int) []string {
	return []string{"PATH=" + os.Getenv("PATH"), "D=" + h.dir, "GEN=" + strconv.Itoa(gen)}
}

func (h *harness) path(name string) string { return filepath.Join(h.dir, name) }

// newHarness prepares sup for a test: reaping with signals.Reap on real
// SIGCHLDs, events recorded, output to the test log.
func newHarness(t *testing.T, sup *exec.Supervisor) *harness {
	h := &harness{
		t:       t,
		dir:     t.TempDir(),
		sigs:    make(chan os.Signal),
		changes: make(chan exec.Change),
		events:  make(chan exec.Event, 100),
		done:    make(chan result, 1),
	}
	sup.Reap = signals.Reap
	sup.OnEvent = func(e exec.Event) { h.events <- e }
	// paramexec's defaults (config.go): exec has none of its own.
	if sup.Grace == 0 {
		sup.Grace = 10 * time.Second
	}
	if sup.ReadyTimeout == 0 {
		sup.ReadyTimeout = 60 * time.Second
	}
	if sup.Log == nil {
		sup.Log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if sup.Stdin == nil {
		devnull, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { devnull.Close() })
		sup.Stdin = devnull
	}
	if sup.Stdout == nil {
		sup.Stdout, sup.Stderr = t.Output(), t.Output()
	}
	return h
}

// start runs sup with the environment for generation 1, or env if given.
func (h *harness) start(sup *exec.Supervisor, env ...string) {
	if env == nil {
		env = h.env(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	// Real SIGCHLDs reach Run through a relay, so that the test's own sends
	// can be unbuffered.
	notified := make(chan os.Signal, 64)
	signal.Notify(notified, syscall.SIGCHLD)
	relayDone := make(chan struct{})
	var relay sync.WaitGroup
	relay.Go(func() {
		for {
			select {
			case s := <-notified:
				select {
				case h.sigs <- s:
				case <-relayDone:
					return
				}
			case <-relayDone:
				return
			}
		}
	})
	go func() {
		code, err := sup.Run(ctx, env, h.changes, h.sigs)
		h.done <- result{code, err}
	}()
	h.t.Cleanup(func() {
		cancel()
		if h.res == nil {
			select {
			case r := <-h.done:
				h.res = &r
			case <-time.After(deadline):
				h.t.Error("Run did not return after cancel")
			}
		}
		signal.Stop(notified)
		close(relayDone)
		relay.Wait()
	})
}

func (h *harness) signal(sig syscall.Signal) {
	h.t.Helper()
	select {
	case h.sigs <- sig:
	case <-time.After(deadline):
		h.t.Fatalf("Run did not take %v", sig)
	}
}

func (h *harness) change(gen int, reason string) {
	h.t.Helper()
	select {
	case h.changes <- exec.Change{Env: h.env(gen), Reason: reason}:
	case <-time.After(deadline):
		h.t.Fatalf("Run did not take change to GEN=%d", gen)
	}
}

// event waits for the next event of kind, recording all it passes.
func (h *harness) event(kind exec.EventKind) exec.Event {
	h.t.Helper()
	timeout := time.After(deadline)
	for {
		select {
		case e := <-h.events:
			h.seen = append(h.seen, e)
			if e.Kind == kind {
				return e
			}
		case <-timeout:
			h.t.Fatalf("no %v event; saw %v", kind, h.seen)
		}
	}
}

// wait returns Run's result and drains the remaining events into seen.
func (h *harness) wait() (int, error) {
	h.t.Helper()
	if h.res == nil {
		select {
		case r := <-h.done:
			h.res = &r
		case <-time.After(deadline):
			h.t.Fatalf("Run did not return; saw %v", h.seen)
		}
	}
	for {
		select {
		case e := <-h.events:
			h.seen = append(h.seen, e)
		default:
			return h.res.code, h.res.err
		}
	}
}

// seenEvent returns the first recorded event of kind.
func (h *harness) seenEvent(kind exec.EventKind) exec.Event {
	h.t.Helper()
	for _, e := range h.seen {
		if e.Kind == kind {
			return e
		}
	}
	h.t.Fatalf("no %v event among %v", kind, h.seen)
	return exec.Event{}
}

func (h *harness) count(kind exec.EventKind) int {
	n := 0
	for _, e := range h.seen {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

func (h *harness) waitFile(name string) {
	h.t.Helper()
	eventually(h.t, name, func() bool { return exists(h.path(name)) })
}

func sh(script string) []string { return []string{"sh", "-c", script} }

func TestRunExitCode(t *testing.T) {
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 42", 42},
		{"kill -KILL $$", 128 + 9},
		{"kill -TERM $$", 128 + 15},
	} {
		t.Run(tc.script, func(t *testing.T) {
			sup := &exec.Supervisor{Argv: sh(tc.script)}
			h := newHarness(t, sup)
			h.start(sup)
			started := h.event(exec.Started)
			code, err := h.wait()
			if err != nil || code != tc.want {
				t.Fatalf("Run = %d, %v; want %d, nil", code, err, tc.want)
			}
			if h.count(exec.Exited) != 1 || h.seen[len(h.seen)-1].Code != tc.want || h.seen[len(h.seen)-1].Pid != started.Pid {
				t.Errorf("events %v: want Exited of pid %d with code %d last", h.seen, started.Pid, tc.want)
			}
			if err := syscall.Kill(started.Pid, 0); err != syscall.ESRCH {
				t.Errorf("child %d not reaped: kill(0) = %v", started.Pid, err)
			}
		})
	}
}

func TestRunStartError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "plain"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "badinterp"), []byte("#!/nonexistent/interpreter\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		argv []string
		env  []string
		want int
		is   error
	}{
		{"not found", []string{"paramexec-no-such-command"}, nil, 127, exec.ErrNotFound},
		{"PATH from env", []string{"sh", "-c", "exit 0"}, []string{"PATH=" + dir}, 127, exec.ErrNotFound},
		{"not executable", []string{filepath.Join(dir, "plain")}, nil, 126, exec.ErrNotExecutable},
		{"directory", []string{dir}, nil, 126, exec.ErrNotExecutable},
		{"bad interpreter", []string{filepath.Join(dir, "badinterp")}, nil, 126, exec.ErrNotExecutable},
		{"empty", nil, nil, 127, exec.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var started bool
			sup := &exec.Supervisor{Argv: tc.argv, Reap: signals.Reap, OnEvent: func(exec.Event) { started = true }}
			env := tc.env
			if env == nil {
				env = []string{"PATH=" + os.Getenv("PATH")}
			}
			code, err := sup.Run(context.Background(), env, nil, nil)
			if code != tc.want || !errors.Is(err, tc.is) {
				t.Fatalf("Run = %d, %v; want %d and an error wrapping %v", code, err, tc.want, tc.is)
			}
			if started {
				t.Error("an event was reported though nothing started")
			}
		})
	}
}

func TestRunContextDoneBeforeStart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var started bool
	sup := &exec.Supervisor{Argv: sh("exit 0"), Reap: signals.Reap, OnEvent: func(exec.Event) { started = true }}
	code, err := sup.Run(ctx, nil, nil, nil)
	if code != 1 || !errors.Is(err, context.Canceled) || started {
		t.Fatalf("Run = %d, %v (started %v); want 1, context.Canceled, nothing started", code, err, started)
	}
}

// signalScript records every signal it gets in $D/got, ends on SIGTERM with
// code 7, and has a grandchild that records a SIGUSR1 reaching it as "gc".
const signalScript = `
for s in 1 3 10 12 14 18 28 30 40; do trap "echo $s >> $D/got" $s; done
trap 'echo 15 >> $D/got; exit 7' TERM
sh -c 'trap "echo gc >> $D/got" USR1; : > $D/gc-ready; sleep 1000 & while :; do wait $!; done' &
sleep 1000 &
: > $D/ready
while :; do wait $!; done
`

func TestRunForwardsSignals(t *testing.T) {
	sup := &exec.Supervisor{Argv: sh(signalScript)}
	h := newHarness(t, sup)
	h.start(sup)
	h.waitFile("ready")
	h.waitFile("gc-ready")
	sent := []syscall.Signal{syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2,
		syscall.SIGALRM, syscall.SIGCONT, syscall.SIGWINCH, syscall.SIGPWR, syscall.Signal(40)}
	for _, sig := range sent {
		h.signal(sig)
	}
	var want []string
	for _, sig := range sent {
		want = append(want, strconv.Itoa(int(sig)))
	}
	slices.Sort(want)
	eventually(t, "the child to record "+strings.Join(want, " "), func() bool {
		got := slices.DeleteFunc(readLines(t, h.path("got")), func(s string) bool { return s == "gc" })
		slices.Sort(got)
		return slices.Equal(slices.Compact(got), want)
	})
	if slices.Contains(readLines(t, h.path("got")), "gc") {
		t.Error("SIGUSR1 reached the grandchild: signals must go to the child's pid, not its group")
	}
	h.signal(syscall.SIGTERM)
	code, err := h.wait()
	if code != 7 || err != nil {
		t.Fatalf("Run = %d, %v; want the child's 7", code, err)
	}
	if !slices.Contains(readLines(t, h.path("got")), "15") {
		t.Error("SIGTERM was not forwarded")
	}
	if stopping := h.seenEvent(exec.Stopping); stopping.Reason != "received SIGTERM" {
		t.Errorf("Stopping reason %q", stopping.Reason)
	}
}

// stubbornScript ignores SIGTERM, as does its grandchild, whose pid it
// writes to $D/gc.$GEN.
const stubbornScript = `
echo "$$ $GEN" >> $D/starts
trap '' TERM
sleep 1000 & echo $! > $D/gc.$GEN
: > $D/ready.$GEN
while :; do wait $!; done
`

func TestRunTerminateKillsGroupAfterGrace(t *testing.T) {
	sup := &exec.Supervisor{Argv: sh(stubbornScript), Grace: 200 * time.Millisecond}
	h := newHarness(t, sup)
	h.start(sup)
	child := h.event(exec.Started).Pid
	h.waitFile("ready.1")
	grandchild := readPid(t, h.path("gc.1"))
	h.signal(syscall.SIGTERM)
	h.event(exec.Killed)
	code, err := h.wait()
	if code != 128+9 || err != nil {
		t.Fatalf("Run = %d, %v; want 137", code, err)
	}
	if err := syscall.Kill(child, 0); err != syscall.ESRCH {
		t.Errorf("child %d still there: %v", child, err)
	}
	eventually(t, "the grandchild to die", func() bool { return !alive(grandchild) })
}

// restartScript records each start in $D/starts, leaves a grandchild behind
// that ignores SIGTERM, and exits 0 on SIGTERM.
const restartScript = `
echo "$$ $GEN" >> $D/starts
trap 'exit 0' TERM
sh -c 'trap "" TERM; exec sleep 1000' & echo $! > $D/gc.$GEN
: > $D/ready.$GEN
while :; do wait $!; done
`

func TestRunRestart(t *testing.T) {
	sup := &exec.Supervisor{Argv: sh(restartScript)}
	h := newHarness(t, sup)
	h.start(sup)
	old := h.event(exec.Started).Pid
	h.waitFile("ready.1")
	oldGrandchild := readPid(t, h.path("gc.1"))

	h.change(2, "GEN changed")
	begun := h.event(exec.RestartBegun)
	if begun.Pid != old || begun.Signal != syscall.SIGTERM || begun.Reason != "GEN changed" {
		t.Errorf("RestartBegun = %+v", begun)
	}
	exited := h.event(exec.Exited)
	if exited.Pid != old || exited.Code != 0 {
		t.Errorf("Exited = %+v; want pid %d code 0", exited, old)
	}
	restarted := h.event(exec.Restarted)
	if restarted.Reason != "GEN changed" || restarted.Gap < 0 || restarted.Gap > restarted.Took {
		t.Errorf("Restarted = %+v", restarted)
	}
	h.waitFile("ready.2")
	newGrandchild := readPid(t, h.path("gc.2"))

	starts := readLines(t, h.path("starts"))
	want := []string{strconv.Itoa(old) + " 1", strconv.Itoa(restarted.Pid) + " 2"}
	if !slices.Equal(starts, want) {
		t.Errorf("starts = %q; want %q", starts, want)
	}
	if err := syscall.Kill(old, 0); err != syscall.ESRCH {
		t.Errorf("old child %d still there: %v", old, err)
	}
	eventually(t, "the old child's grandchild to die", func() bool { return !alive(oldGrandchild) })
	if !alive(newGrandchild) || !alive(restarted.Pid) {
		t.Error("the new child or its grandchild is not running")
	}

	h.signal(syscall.SIGTERM)
	code, err := h.wait()
	if code != 0 || err != nil {
		t.Fatalf("Run = %d, %v; want 0", code, err)
	}
	if n := len(readLines(t, h.path("starts"))); n != 2 {
		t.Errorf("%d children started; want 2", n)
	}
	eventually(t, "the last grandchild to die", func() bool { return !alive(newGrandchild) })
}

func TestRunRestartKillsStubbornChild(t *testing.T) {
	sup := &exec.Supervisor{Argv: sh(stubbornScript), Grace: 200 * time.Millisecond}
	h := newHarness(t, sup)
	h.start(sup)
	old := h.event(exec.Started).Pid
	h.waitFile("ready.1")
	oldGrandchild := readPid(t, h.path("gc.1"))

	h.change(2, "GEN changed")
	h.event(exec.RestartBegun)
	if k := h.event(exec.Killed); k.Pid != old {
		t.Errorf("Killed = %+v; want pid %d", k, old)
	}
	if e := h.event(exec.Exited); e.Pid != old || e.Code != 137 {
		t.Errorf("Exited = %+v; want pid %d code 137", e, old)
	}
	restarted := h.event(exec.Restarted)
	h.waitFile("ready.2")
	if err := syscall.Kill(old, 0); err != syscall.ESRCH {
		t.Errorf("old child %d still there: %v", old, err)
	}
	eventually(t, "the old grandchild to die", func() bool { return !alive(oldGrandchild) })
	if !alive(restarted.Pid) {
		t.Error("new child not running")
	}
	h.cancel()
	if code, err := h.wait(); code != 137 || err != nil {
		t.Errorf("Run = %d, %v after cancel; want 137 (killed after grace)", code, err)
	}
}

// slowScript, as generation 1, takes its time to stop: on SIGTERM it waits
// for $D/release, then exits 3. Later generations record their start and
// exit 0 on SIGTERM.
const slowScript = `
echo "$$ $GEN" >> $D/starts
trap "echo 10 >> $D/got.$GEN" USR1
if [ "$GEN" = 1 ]; then
	trap 'while [ ! -e $D/release ]; do sleep 0.02; done; exit 3' TERM
else
	trap 'exit 0' TERM
fi
sleep 1000 &
: > $D/ready.$GEN
while :; do wait $!; done
`

func TestRunCoalescesChanges(t *testing.T) {
	sup := &exec.Supervisor{Argv: sh(slowScript), Grace: 5 * time.Minute}
	h := newHarness(t, sup)
	h.start(sup)
	h.waitFile("ready.1")
	h.change(2, "A changed")
	h.event(exec.RestartBegun)
	h.change(3, "B changed")
	h.change(4, "A changed")
	// Run has taken all three before the old child may exit.
	if err := os.WriteFile(h.path("release"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	restarted := h.event(exec.Restarted)
	if restarted.Reason != "A changed; B changed" {
		t.Errorf("Restarted reason %q", restarted.Reason)
	}
	h.waitFile("ready.4")
	h.signal(syscall.SIGTERM)
	if code, err := h.wait(); code != 0 || err != nil {
		t.Fatalf("Run = %d, %v", code, err)
	}
	starts := readLines(t, h.path("starts"))
	if len(starts) != 2 || starts[1] != strconv.Itoa(restarted.Pid)+" 4" {
		t.Errorf("starts = %q; want the first child and one more with GEN=4", starts)
	}
	if h.count(exec.RestartBegun) != 1 || h.count(exec.Restarted) != 1 {
		t.Errorf("events %v: want one restart", h.seen)
	}
}

func TestRunTerminatingSignalEndsRestart(t *testing.T) {
	sup := &exec.Supervisor{Argv: sh(slowScript), Grace: 5 * time.Minute}
	h := newHarness(t, sup)
	h.start(sup)
	h.waitFile("ready.1")
	h.change(2, "A changed")
	h.event(exec.RestartBegun)
	h.signal(syscall.SIGTERM)
	if s := h.event(exec.Stopping); s.Reason != "received SIGTERM" {
		t.Errorf("Stopping = %+v", s)
	}
	h.change(3, "A changed") // ignored: stopping
	if err := os.WriteFile(h.path("release"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, err := h.wait(); code != 3 || err != nil {
		t.Fatalf("Run = %d, %v; want the old child's 3", code, err)
	}
	if h.count(exec.Restarted) != 0 {
		t.Errorf("events %v: a new child started", h.seen)
	}
	if starts := readLines(t, h.path("starts")); len(starts) != 1 {
		t.Errorf("starts = %q; want only the first child", starts)
	}
}

func TestRunContextDoneEndsRestart(t *testing.T) {
	sup := &exec.Supervisor{Argv: sh(slowScript), Grace: 5 * time.Minute}
	h := newHarness(t, sup)
	h.start(sup)
	h.waitFile("ready.1")
	h.change(2, "A changed")
	h.event(exec.RestartBegun)
	h.cancel()
	h.event(exec.Stopping)
	if err := os.WriteFile(h.path("release"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, err := h.wait(); code != 3 || err != nil || h.count(exec.Restarted) != 0 {
		t.Fatalf("Run = %d, %v, events %v; want the old child's 3, no restart", code, err, h.seen)
	}
}

func TestRunSignalDuringRestartReachesNewChild(t *testing.T) {
	sup := &exec.Supervisor{Argv: sh(slowScript), Grace: 5 * time.Minute}
	h := newHarness(t, sup)
	h.start(sup)
	h.waitFile("ready.1")
	h.change(2, "A changed")
	h.event(exec.RestartBegun)
	h.signal(syscall.SIGUSR1)
	h.signal(syscall.SIGUSR1) // held once, like a pending signal
	if err := os.WriteFile(h.path("release"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	restarted := h.event(exec.Restarted)
	// The new child may get SIGUSR1 before its trap is set (default action:
	// death) or after (it records it). Either proves delivery.
	eventually(t, "SIGUSR1 to reach the new child", func() bool {
		select {
		case e := <-h.events:
			h.seen = append(h.seen, e)
		default:
		}
		return h.count(exec.Exited) == 2 || slices.Equal(readLines(t, h.path("got.2")), []string{"10"})
	})
	if exists(h.path("got.1")) {
		t.Error("the old child got the signal meant for the new one")
	}
	h.cancel()
	code, err := h.wait()
	if err != nil || (code != 0 && code != 128+10) {
		t.Fatalf("Run = %d, %v", code, err)
	}
	if last := h.seen[len(h.seen)-1]; last.Kind != exec.Exited || last.Pid != restarted.Pid {
		t.Errorf("last event %+v; want the new child's exit", last)
	}
	if lines := readLines(t, h.path("got.2")); len(lines) > 1 {
		t.Errorf("new child got %q; want SIGUSR1 once", lines)
	}
}

func TestRunOnChangeExit(t *testing.T) {
	sup := &exec.Supervisor{
		Argv:       sh(`trap 'exit 5' USR2; sleep 1000 & : > $D/ready.$GEN; while :; do wait $!; done`),
		OnChange:   exec.Action{Kind: exec.Exit},
		StopSignal: syscall.SIGUSR2,
	}
	h := newHarness(t, sup)
	h.start(sup)
	h.waitFile("ready.1")
	h.change(2, "A changed")
	if s := h.event(exec.Stopping); s.Signal != syscall.SIGUSR2 || s.Reason != "A changed" {
		t.Errorf("Stopping = %+v", s)
	}
	if code, err := h.wait(); code != 5 || err != nil || h.count(exec.Restarted) != 0 {
		t.Fatalf("Run = %d, %v, events %v; want 5 and no restart", code, err, h.seen)
	}
}

func TestRunOnChangeSignal(t *testing.T) {
	sup := &exec.Supervisor{Argv: sh(signalScript), OnChange: exec.Action{Kind: exec.Signal, Signal: syscall.SIGHUP}}
	h := newHarness(t, sup)
	h.start(sup)
	h.waitFile("ready")
	h.change(2, "A changed")
	eventually(t, "SIGHUP to reach the child", func() bool { return slices.Contains(readLines(t, h.path("got")), "1") })
	h.signal(syscall.SIGTERM)
	if code, err := h.wait(); code != 7 || err != nil {
		t.Fatalf("Run = %d, %v; want 7", code, err)
	}
	if h.count(exec.Started) != 1 || h.count(exec.RestartBegun) != 0 || h.count(exec.Exited) != 1 {
		t.Errorf("events %v: want one child, no restart", h.seen)
	}
}

func TestRunContextDoneStopsChild(t *testing.T) {
	sup := &exec.Supervisor{
		Argv:       sh(`trap 'exit 9' USR2; sleep 1000 & : > $D/ready.$GEN; while :; do wait $!; done`),
		StopSignal: syscall.SIGUSR2,
	}
	h := newHarness(t, sup)
	h.start(sup)
	h.waitFile("ready.1")
	h.cancel()
	if s := h.event(exec.Stopping); s.Signal != syscall.SIGUSR2 || !strings.Contains(s.Reason, "context canceled") {
		t.Errorf("Stopping = %+v", s)
	}
	if code, err := h.wait(); code != 9 || err != nil {
		t.Fatalf("Run = %d, %v; want 9", code, err)
	}
}

func TestRunChildExitDuringSignalActionIsNotRestarted(t *testing.T) {
	sup := &exec.Supervisor{
		Argv:     sh(`trap 'exit 4' HUP; sleep 1000 & : > $D/ready.$GEN; while :; do wait $!; done`),
		OnChange: exec.Action{Kind: exec.Signal, Signal: syscall.SIGHUP},
	}
	h := newHarness(t, sup)
	h.start(sup)
	h.waitFile("ready.1")
	h.change(2, "A changed")
	if code, err := h.wait(); code != 4 || err != nil || h.count(exec.Started) != 1 {
		t.Fatalf("Run = %d, %v, events %v; want 4 and no second child", code, err, h.seen)
	}
}

// A change whose PATH no longer leads to the command is rejected before the
// working child is touched (it used to stop the child and exit 127).
func TestRunRestartRejectsUnresolvableCommand(t *testing.T) {
	sup := &exec.Supervisor{Argv: sh(slowScript)}
	h := newHarness(t, sup)
	h.start(sup)
	h.waitFile("ready.1")
	select {
	case h.changes <- exec.Change{Env: []string{"PATH=" + h.dir, "D=" + h.dir, "GEN=2"}, Reason: "PATH changed"}:
	case <-time.After(deadline):
		t.Fatal("change not taken")
	}
	if r := h.event(exec.Rejected); !strings.Contains(r.Reason, "not found") {
		t.Errorf("Rejected reason %q", r.Reason)
	}
	// The child runs on, and stops as it would have.
	if err := os.WriteFile(h.path("release"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	h.cancel()
	code, err := h.wait()
	if code != 3 || err != nil || h.count(exec.RestartBegun) != 0 {
		t.Fatalf("Run = %d, %v, events %v; want the first child's own 3, no restart", code, err, h.seen)
	}
}

func TestRunPipesNonFileOutput(t *testing.T) {
	var out bytes.Buffer
	sup := &exec.Supervisor{Argv: sh(`echo out; echo err >&2; exit 0`), Stdout: &out, Stderr: &out}
	h := newHarness(t, sup)
	h.start(sup)
	if code, err := h.wait(); code != 0 || err != nil {
		t.Fatalf("Run = %d, %v", code, err)
	}
	if got := out.String(); got != "out\nerr\n" {
		t.Errorf("output %q", got)
	}
}

func TestRunPipesNonFileInput(t *testing.T) {
	var out bytes.Buffer
	sup := &exec.Supervisor{Argv: sh(`read line; echo "got $line"`), Stdin: strings.NewReader("hello\n"), Stdout: &out, Stderr: &out}
	h := newHarness(t, sup)
	h.start(sup)
	if code, err := h.wait(); code != 0 || err != nil {
		t.Fatalf("Run = %d, %v", code, err)
	}
	if got := out.String(); got != "got hello\n" {
		t.Errorf("output %q", got)
	}
}

// No source can hand paramexec a variable over execve's 128 KiB per string
// (SSM stops at 8 KiB, Secrets Manager at 64 KiB), so the per-string check
// is proved here, with a change made by hand.
func TestRunRejectsVariableTooLargeForExec(t *testing.T) {
	sup := &exec.Supervisor{Argv: sh(restartScript)}
	h := newHarness(t, sup)
	h.start(sup)
	first := h.event(exec.Started)
	h.waitFile("ready.1")
	big := append(h.env(2), "BIG="+strings.Repeat("x", 130<<10))
	select {
	case h.changes <- exec.Change{Env: big, Reason: "BIG changed"}:
	case <-time.After(deadline):
		t.Fatal("Run did not take the change")
	}
	rejected := h.event(exec.Rejected)
	if !strings.Contains(rejected.Reason, "variable BIG is 133125 bytes") || strings.Contains(rejected.Reason, "xxx") {
		t.Errorf("Rejected reason %q: want BIG's name and size, never its value", rejected.Reason)
	}
	// The child was not touched: the next good change restarts it as usual.
	h.change(3, "A changed")
	restarted := h.event(exec.Restarted)
	h.waitFile("ready.3")
	if starts := readLines(t, h.path("starts")); len(starts) != 2 || starts[1] != strconv.Itoa(restarted.Pid)+" 3" {
		t.Errorf("starts = %q; want the first child and one with GEN=3", starts)
	}
	if h.count(exec.RestartBegun) != 1 || restarted.Pid == first.Pid {
		t.Errorf("events %v: want one restart, for GEN=3", h.seen)
	}
	h.signal(syscall.SIGTERM)
	h.wait()
}

// The start hooks of --listen and --proxy: PrepareEnv's environment is the
// child's, ExtraFiles land on fd 3 and are closed by Run once the child
// has started, and Wrap's program is what runs.
func TestStartHooks(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	prepared := 0
	sup := &exec.Supervisor{
		Argv: sh("exit 3"), // replaced by Wrap: never run
		PrepareEnv: func(env []string) ([]string, error) {
			prepared++
			return append(env, "EXTRA=from-hook"), nil
		},
		ExtraFiles: func() ([]*os.File, error) { return []*os.File{r}, nil },
		Wrap: func(path string, argv []string) (string, []string) {
			if filepath.Base(path) != "sh" || argv[2] != "exit 3" {
				t.Errorf("Wrap got %q %q; want the command found in PATH", path, argv)
			}
			return path, sh(`{ echo "$EXTRA"; test -p /proc/self/fd/3 && echo fd3; } > "$D/out"`)
		},
	}
	h := newHarness(t, sup)
	h.start(sup)
	h.event(exec.Started)
	if code, err := h.wait(); code != 0 || err != nil {
		t.Fatalf("Run = %d, %v; want the wrapped command's 0", code, err)
	}
	out, err := os.ReadFile(h.path("out"))
	if err != nil || string(out) != "from-hook\nfd3\n" {
		t.Errorf("the child wrote %q, %v; want the hook's variable and fd 3", out, err)
	}
	if prepared != 1 {
		t.Errorf("PrepareEnv called %d times for one start", prepared)
	}
	if err := r.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("the extra file is still open after the start: Close = %v", err)
	}
}
