package exec_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/exec"
)

// judgedScript records each start as "PID GEN" in $D/starts, then behaves
// as its generation is told to: the GENs listed in CRASH exit 3 at once,
// those in HANG never get ready, those in SLOW wait for $D/go.GEN first.
// A ready child creates $D/up.PID, which fileReady looks for. SIGTERM
// ends it with 0. ONCE=FILE makes a generation crash when FILE exists.
func judgedScript(crash, hang, slow string) []string {
	return sh(fmt.Sprintf(`
echo "$$ $GEN" >> $D/starts
trap 'exit 0' TERM
case " %s " in *" $GEN "*) exit 3;; esac
if [ -e $D/crash-now ]; then exit 9; fi
case " %s " in *" $GEN "*) while :; do sleep 1000 & wait $!; done;; esac
case " %s " in *" $GEN "*) while [ ! -e $D/go.$GEN ]; do sleep 0.05; done;; esac
: > $D/up.$$
sleep 1000 &
while :; do wait $!; done
`, crash, hang, slow))
}

// fileReady is a Ready that passes once the child has created $D/up.PID.
func fileReady(h *harness) func(context.Context, int) error {
	return func(ctx context.Context, pid int) error {
		for {
			if exists(h.path("up." + strconv.Itoa(pid))) {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("no up file: %w", ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// gens lists the generations started, in order, from $D/starts.
func (h *harness) gens() []string {
	var out []string
	for _, l := range readLines(h.t, h.path("starts")) {
		_, gen, _ := strings.Cut(l, " ")
		out = append(out, gen)
	}
	return out
}

// logBuffer collects a Supervisor's log for assertions on its lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestRunReadyGatesFirstStart(t *testing.T) {
	sup := &exec.Supervisor{Argv: judgedScript("", "", "1")}
	h := newHarness(t, sup)
	sup.Ready = fileReady(h)
	h.start(sup)
	started := h.event(exec.Started)
	h.waitFile("starts")
	// Not ready until told: 300 ms of no Ready event is enough to see that
	// the event does not follow Started by itself, as it does without Ready.
	select {
	case e := <-h.events:
		t.Fatalf("event %v before the child was ready", e)
	case <-time.After(300 * time.Millisecond):
	}
	touch(t, h.path("go.1"))
	ready := h.event(exec.Ready)
	if ready.Pid != started.Pid || ready.ReadyAfter < 300*time.Millisecond {
		t.Errorf("Ready = %+v; want pid %d, ready_after ≥ 300ms", ready, started.Pid)
	}
	if !exists(h.path("up." + strconv.Itoa(started.Pid))) {
		t.Error("Ready before the child said so")
	}
	h.signal(syscall.SIGTERM)
	if code, err := h.wait(); code != 0 || err != nil {
		t.Fatalf("Run = %d, %v; want 0", code, err)
	}
}

func TestRunFirstChildNotReady(t *testing.T) {
	sup := &exec.Supervisor{Argv: judgedScript("", "1", ""), ReadyTimeout: 300 * time.Millisecond, Rollback: true}
	logs := &logBuffer{}
	sup.Log = logs.logger()
	h := newHarness(t, sup)
	sup.Ready = fileReady(h)
	h.start(sup)
	started := h.event(exec.Started)
	if s := h.event(exec.Stopping); s.Signal != syscall.SIGTERM || !strings.Contains(s.Reason, "not ready") {
		t.Errorf("Stopping = %+v", s)
	}
	code, err := h.wait()
	if code != exec.ExitNotReady || err != nil {
		t.Fatalf("Run = %d, %v; want %d (not ready)", code, err, exec.ExitNotReady)
	}
	if h.count(exec.Ready) != 0 || h.count(exec.RolledBack) != 0 || len(h.gens()) != 1 {
		t.Errorf("events %v, starts %v: want one child, never ready, no rollback", h.seen, h.gens())
	}
	if err := syscall.Kill(started.Pid, 0); err != syscall.ESRCH {
		t.Errorf("child %d still there: %v", started.Pid, err)
	}
	if !strings.Contains(logs.String(), "no up file") {
		t.Errorf("the log does not say why:\n%s", logs)
	}
}

func TestRunFirstChildExitsBeforeReady(t *testing.T) {
	sup := &exec.Supervisor{Argv: judgedScript("1", "", ""), Rollback: true}
	h := newHarness(t, sup)
	sup.Ready = fileReady(h)
	h.start(sup)
	if code, err := h.wait(); code != 3 || err != nil {
		t.Fatalf("Run = %d, %v; want the child's 3", code, err)
	}
	if h.count(exec.Ready) != 0 {
		t.Errorf("Ready among %v", h.seen)
	}
}

func TestRunRollbackOnCrash(t *testing.T) {
	sup := &exec.Supervisor{Argv: judgedScript("2", "", ""), Rollback: true}
	logs := &logBuffer{}
	sup.Log = logs.logger()
	h := newHarness(t, sup)
	sup.Ready = fileReady(h)
	h.start(sup)
	first := h.event(exec.Ready)

	h.change(2, "GEN changed")
	rb := h.event(exec.RolledBack)
	if rb.Code != 3 || !slices.Equal(rb.Changed, []string{"GEN"}) || rb.Pid == first.Pid {
		t.Errorf("RolledBack = %+v; want the new child's exit 3, Changed [GEN]", rb)
	}
	back := h.event(exec.Ready)
	if got := h.gens(); !slices.Equal(got, []string{"1", "2", "1"}) {
		t.Fatalf("generations started %v; want 1 2 1", got)
	}
	if h.count(exec.Restarted) != 0 {
		t.Errorf("a failed restart was reported as finished: %v", h.seen)
	}

	// The rejected environment again, and a change back to the running
	// one: neither starts a child. The good change after them is the next
	// start, since Run takes changes in order.
	h.change(2, "GEN changed")
	h.change(1, "GEN changed")
	h.change(3, "GEN changed")
	restarted := h.event(exec.Restarted)
	if got := h.gens(); !slices.Equal(got, []string{"1", "2", "1", "3"}) {
		t.Errorf("generations started %v; want 1 2 1 3", got)
	}
	if restarted.Pid == back.Pid || h.count(exec.RestartBegun) != 2 {
		t.Errorf("Restarted = %+v; %d restarts begun, want 2", restarted, h.count(exec.RestartBegun))
	}
	log := logs.String()
	for _, want := range []string{
		`msg="change rejected; rolling back"`, "changed=[GEN]", "exit_code=3",
		`msg="change ignored: environment was rejected"`, `msg="no change: the child runs with this environment already"`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s:\n%s", want, log)
		}
	}
	h.signal(syscall.SIGTERM)
	if code, err := h.wait(); code != 0 || err != nil {
		t.Fatalf("Run = %d, %v; want 0", code, err)
	}
}

func TestRunRollbackOnNotReady(t *testing.T) {
	sup := &exec.Supervisor{Argv: judgedScript("", "2", ""), Rollback: true, ReadyTimeout: 500 * time.Millisecond}
	logs := &logBuffer{}
	sup.Log = logs.logger()
	h := newHarness(t, sup)
	sup.Ready = fileReady(h)
	h.start(sup)
	h.event(exec.Ready)
	h.change(2, "GEN changed")
	rb := h.event(exec.RolledBack)
	if rb.Code != -1 || !strings.Contains(rb.Reason, "not ready") || !slices.Equal(rb.Changed, []string{"GEN"}) {
		t.Errorf("RolledBack = %+v", rb)
	}
	if e := h.event(exec.Exited); e.Pid != rb.Pid || e.Code != 0 {
		t.Errorf("Exited = %+v; want the hung child %d, stopped by SIGTERM (0)", e, rb.Pid)
	}
	h.event(exec.Ready)
	if got := h.gens(); !slices.Equal(got, []string{"1", "2", "1"}) {
		t.Fatalf("generations started %v; want 1 2 1", got)
	}
	if log := logs.String(); !strings.Contains(log, "not_ready=") || !strings.Contains(log, "no up file") {
		t.Errorf("the rollback does not say which check failed:\n%s", log)
	}
}

func TestRunRollbackWindow(t *testing.T) {
	// No Ready: only the window judges. GEN 2 crashes at once, inside it.
	sup := &exec.Supervisor{Argv: judgedScript("2", "", ""), Rollback: true, RollbackWindow: time.Second}
	h := newHarness(t, sup)
	h.start(sup)
	h.event(exec.Ready)
	// Ready at start without a check: wait for the script to set its trap.
	eventually(t, "GEN 1 to run", func() bool { return len(h.gens()) == 1 })
	h.change(2, "GEN changed")
	if rb := h.event(exec.RolledBack); rb.Code != 3 {
		t.Errorf("RolledBack = %+v", rb)
	}
	h.event(exec.Ready)
	eventually(t, "GEN 1 to run again", func() bool { return len(h.gens()) == 3 })
	asked := time.Now()
	h.change(3, "GEN changed")
	restarted := h.event(exec.Restarted)
	// Verified only once it has lived the window (a lower bound that Run
	// itself sets, not a speed).
	if waited := time.Since(asked); waited < time.Second {
		t.Errorf("Restarted %+v after %v, before the window of 1s was over", restarted, waited)
	}
	if got := h.gens(); !slices.Equal(got, []string{"1", "2", "1", "3"}) {
		t.Errorf("generations started %v; want 1 2 1 3", got)
	}
}

func TestRunRolledBackChildFailsToo(t *testing.T) {
	sup := &exec.Supervisor{Argv: judgedScript("2", "", ""), Rollback: true}
	h := newHarness(t, sup)
	sup.Ready = fileReady(h)
	h.start(sup)
	h.event(exec.Ready)
	// From now on every start crashes with 9: the last good environment
	// no longer works either.
	touch(t, h.path("crash-now"))
	h.change(2, "GEN changed")
	h.event(exec.RolledBack)
	code, err := h.wait()
	if code != 9 || err != nil {
		t.Fatalf("Run = %d, %v; want the rolled-back child's 9", code, err)
	}
	if got := h.gens(); !slices.Equal(got, []string{"1", "2", "1"}) || h.count(exec.RolledBack) != 1 {
		t.Errorf("generations %v, events %v: want 1 2 1 and one rollback", got, h.seen)
	}
}

func TestRunWithoutRollbackAFailedChangeEndsRun(t *testing.T) {
	sup := &exec.Supervisor{Argv: judgedScript("2", "", "")}
	h := newHarness(t, sup)
	sup.Ready = fileReady(h)
	h.start(sup)
	h.event(exec.Ready)
	h.change(2, "GEN changed")
	if code, err := h.wait(); code != 3 || err != nil {
		t.Fatalf("Run = %d, %v; want the new child's 3", code, err)
	}
	if h.count(exec.RolledBack) != 0 {
		t.Errorf("rolled back without Rollback: %v", h.seen)
	}
}

func TestRunChangeHeldWhileVerifying(t *testing.T) {
	sup := &exec.Supervisor{Argv: judgedScript("", "", "2"), Rollback: true}
	logs := &logBuffer{}
	sup.Log = logs.logger()
	h := newHarness(t, sup)
	sup.Ready = fileReady(h)
	h.start(sup)
	h.event(exec.Ready)
	h.change(2, "GEN changed")
	h.event(exec.Exited)
	h.change(3, "GEN changed") // GEN 2 is waiting for go.2
	eventually(t, "the change to be held", func() bool { return strings.Contains(logs.String(), "change held until the child is ready") })
	eventually(t, "GEN 2 to run", func() bool { return len(h.gens()) == 2 })
	if got := h.gens(); !slices.Equal(got, []string{"1", "2"}) {
		t.Fatalf("generations %v while verifying; want 1 2", got)
	}
	touch(t, h.path("go.2"))
	if r := h.event(exec.Restarted); r.ReadyAfter <= 0 {
		t.Errorf("Restarted = %+v; want ready_after > 0", r)
	}
	h.event(exec.Restarted)
	if got := h.gens(); !slices.Equal(got, []string{"1", "2", "3"}) {
		t.Errorf("generations %v; want 1 2 3", got)
	}
}

func TestRunTerminateWhileVerifying(t *testing.T) {
	sup := &exec.Supervisor{Argv: judgedScript("", "2", ""), Rollback: true}
	h := newHarness(t, sup)
	sup.Ready = fileReady(h)
	h.start(sup)
	h.event(exec.Ready)
	h.change(2, "GEN changed")
	h.event(exec.Exited)
	h.waitFile("starts")
	eventually(t, "GEN 2 to start", func() bool { return len(h.gens()) == 2 })
	h.signal(syscall.SIGTERM)
	if code, err := h.wait(); code != 0 || err != nil {
		t.Fatalf("Run = %d, %v; want the child's 0", code, err)
	}
	if h.count(exec.RolledBack) != 0 || len(h.gens()) != 2 {
		t.Errorf("a stop became a rollback: %v, starts %v", h.seen, h.gens())
	}
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}
