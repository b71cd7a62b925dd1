package exec_test

import (
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/exec"
)

// overlapSup is a Supervisor in Overlap mode judged by fileReady.
func overlapSup(t *testing.T, argv []string) (*exec.Supervisor, *harness, *logBuffer) {
	sup := &exec.Supervisor{Argv: argv, Restart: exec.Overlap, Rollback: true}
	logs := &logBuffer{}
	sup.Log = logs.logger()
	h := newHarness(t, sup)
	sup.Ready = fileReady(h)
	return sup, h, logs
}

// kinds lists the kinds of the events seen, with their pids.
func (h *harness) order() []string {
	var out []string
	for _, e := range h.seen {
		out = append(out, e.Kind.String()+" "+strconv.Itoa(e.Pid))
	}
	return out
}

// index is the position of "kind pid" in order, -1 if absent.
func index(order []string, kind exec.EventKind, pid int) int {
	return slices.Index(order, kind.String()+" "+strconv.Itoa(pid))
}

func TestOverlapNeedsReady(t *testing.T) {
	sup := &exec.Supervisor{Argv: sh("exit 0"), Restart: exec.Overlap}
	h := newHarness(t, sup)
	h.start(sup)
	if code, err := h.wait(); code != 2 || err == nil {
		t.Fatalf("Run = %d, %v; want 2 and an error", code, err)
	}
	if h.count(exec.Started) != 0 {
		t.Errorf("a child started without a readiness check: %v", h.seen)
	}
}

// The new child starts while the old one serves; the old one gets the stop
// signal only once the new one is ready, and the two never overlap longer.
func TestOverlapSwitchesWhenReady(t *testing.T) {
	sup, h, logs := overlapSup(t, judgedScript("", "", "2"))
	h.start(sup)
	first := h.event(exec.Ready)
	h.change(2, "GEN changed")
	begun := h.event(exec.OverlapBegun)
	eventually(t, "GEN 2 to run", func() bool { return len(h.gens()) == 2 })
	// GEN 2 waits for go.2: as long as it is not ready, the old child is
	// left alone. 300 ms without an event after both run shows it is not
	// stopped on a timer of its own.
	select {
	case e := <-h.events:
		t.Fatalf("event %v while the new child was not ready", e)
	case <-time.After(300 * time.Millisecond):
	}
	if !alive(first.Pid) || !alive(begun.Pid) {
		t.Fatalf("old %d alive %v, new %d alive %v: want both during the overlap", first.Pid, alive(first.Pid), begun.Pid, alive(begun.Pid))
	}
	touch(t, h.path("go.2"))
	restarted := h.event(exec.Restarted)
	draining := h.event(exec.Draining)
	exited := h.event(exec.Exited)
	if restarted.Pid != begun.Pid || draining.Pid != first.Pid || exited.Pid != first.Pid || exited.Code != 0 {
		t.Errorf("Restarted %+v, Draining %+v, Exited %+v; want the new %d current, the old %d drained and exited 0", restarted, draining, exited, begun.Pid, first.Pid)
	}
	if restarted.Gap != 0 || restarted.ReadyAfter < 300*time.Millisecond {
		t.Errorf("Restarted = %+v; want no gap, ready_after ≥ 300ms", restarted)
	}
	log := logs.String()
	for _, want := range []string{`msg="overlap begun"`, `msg="new child ready"`, "msg=switched", `msg="old child draining"`, `msg="old child exited"`, "drained="} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s:\n%s", want, log)
		}
	}
	// The new child is the current one: a terminating signal reaches it.
	h.signal(syscall.SIGTERM)
	if code, err := h.wait(); code != 0 || err != nil {
		t.Fatalf("Run = %d, %v; want 0", code, err)
	}
	if alive(begun.Pid) || !slices.Equal(h.gens(), []string{"1", "2"}) {
		t.Errorf("new child alive %v after Run, starts %v", alive(begun.Pid), h.gens())
	}
}

// A new child that crashes during the overlap: the old one never stopped,
// nothing starts again, and the crashed environment is never retried.
func TestOverlapCrashKeepsOldChild(t *testing.T) {
	sup, h, logs := overlapSup(t, judgedScript("2", "", ""))
	h.start(sup)
	first := h.event(exec.Ready)
	h.change(2, "GEN changed")
	rb := h.event(exec.RolledBack)
	back := h.event(exec.Ready)
	if rb.Code != 3 || !slices.Equal(rb.Changed, []string{"GEN"}) || back.Pid != first.Pid || back.Reason != "rolled back" {
		t.Errorf("RolledBack %+v, Ready %+v; want the new child's 3 and the old %d ready again", rb, back, first.Pid)
	}
	if index(h.order(), exec.Draining, first.Pid) >= 0 || index(h.order(), exec.Exited, first.Pid) >= 0 || !alive(first.Pid) {
		t.Fatalf("the old child was touched: %v", h.order())
	}
	h.change(2, "GEN changed") // rejected already: ignored
	h.change(3, "GEN changed")
	restarted := h.event(exec.Restarted)
	h.event(exec.Exited)
	if got := h.gens(); !slices.Equal(got, []string{"1", "2", "3"}) {
		t.Errorf("generations started %v; want 1 2 3 (no restart of 1)", got)
	}
	if restarted.Pid == first.Pid || h.count(exec.RolledBack) != 1 {
		t.Errorf("Restarted %+v, events %v", restarted, h.order())
	}
	if n := strings.Count(logs.String(), `msg="change rejected; rolling back"`); n != 1 {
		t.Errorf("%d rollbacks logged, want 1:\n%s", n, logs.String())
	}
	h.signal(syscall.SIGTERM)
	h.wait()
}

// A new child that is not ready within ReadyTimeout is stopped, with the
// stop signal and Grace; the old one serves on.
func TestOverlapNotReadyKeepsOldChild(t *testing.T) {
	sup, h, logs := overlapSup(t, judgedScript("", "2", ""))
	sup.ReadyTimeout = 500 * time.Millisecond
	h.start(sup)
	first := h.event(exec.Ready)
	h.change(2, "GEN changed")
	begun := h.event(exec.OverlapBegun)
	rb := h.event(exec.RolledBack)
	draining := h.event(exec.Draining)
	exited := h.event(exec.Exited)
	if rb.Code != -1 || rb.Pid != begun.Pid || draining.Pid != begun.Pid || exited.Pid != begun.Pid || exited.Code != 0 {
		t.Errorf("RolledBack %+v, Draining %+v, Exited %+v; want the hung new child %d stopped by SIGTERM", rb, draining, exited, begun.Pid)
	}
	if !alive(first.Pid) || index(h.order(), exec.Exited, first.Pid) >= 0 {
		t.Errorf("the old child %d stopped: %v", first.Pid, h.order())
	}
	if log := logs.String(); !strings.Contains(log, `msg="stopping the rejected child"`) || !strings.Contains(log, `msg="rejected child exited"`) {
		t.Errorf("log:\n%s", log)
	}
	h.signal(syscall.SIGTERM)
	if code, err := h.wait(); code != 0 || err != nil {
		t.Fatalf("Run = %d, %v", code, err)
	}
}

// Changes arriving during an overlap and during the drain are held, the
// newest winning; the next overlap begins only when the old child is gone:
// never three children.
func TestOverlapHoldsChanges(t *testing.T) {
	// GEN 1 takes its time to stop: the drain lasts until $D/go.stop.
	script := judgedScript("", "", "2")
	script[2] = strings.Replace(script[2], "trap 'exit 0' TERM", `trap 'while [ ! -e $D/go.stop ]; do sleep 0.05; done; exit 0' TERM`, 1)
	sup, h, logs := overlapSup(t, script)
	h.start(sup)
	first := h.event(exec.Ready)
	h.change(2, "GEN changed")
	h.event(exec.OverlapBegun)
	h.change(3, "GEN changed") // during the overlap
	touch(t, h.path("go.2"))
	h.event(exec.Draining)
	h.change(4, "GEN changed") // during the drain: wins over 3
	eventually(t, "the changes to be held", func() bool {
		return strings.Count(logs.String(), "change held until the child is ready") == 2
	})
	if got := h.gens(); !slices.Equal(got, []string{"1", "2"}) {
		t.Fatalf("generations %v while draining; want 1 2", got)
	}
	touch(t, h.path("go.stop"))
	h.event(exec.Exited)
	next := h.event(exec.OverlapBegun)
	h.event(exec.Restarted)
	order := h.order()
	if i, j := index(order, exec.Exited, first.Pid), index(order, exec.OverlapBegun, next.Pid); i < 0 || i > j {
		t.Errorf("the third child started before the first exited: %v", order)
	}
	if got := h.gens(); !slices.Equal(got, []string{"1", "2", "4"}) {
		t.Errorf("generations %v; want 1 2 4", got)
	}
	h.signal(syscall.SIGTERM)
	h.wait()
}

// A terminating signal during an overlap stops both children, each with
// the stop signal, then SIGKILL after Grace, and starts nothing.
func TestOverlapTerminateStopsBoth(t *testing.T) {
	// Every generation ignores SIGTERM but records it; GEN 2 is never ready.
	sup, h, _ := overlapSup(t, sh(`
echo "$$ $GEN" >> $D/starts
trap 'echo $$ >> $D/termed' TERM
[ "$GEN" = 2 ] || : > $D/up.$$
while :; do sleep 0.05; done
`))
	sup.Grace = 300 * time.Millisecond
	h.start(sup)
	first := h.event(exec.Ready)
	h.change(2, "GEN changed")
	begun := h.event(exec.OverlapBegun)
	eventually(t, "GEN 2 to run", func() bool { return len(h.gens()) == 2 })
	h.signal(syscall.SIGTERM)
	code, err := h.wait()
	if code != 128+9 || err != nil {
		t.Fatalf("Run = %d, %v; want the new child's 137", code, err)
	}
	termed := readLines(t, h.path("termed"))
	slices.Sort(termed)
	want := []string{strconv.Itoa(first.Pid), strconv.Itoa(begun.Pid)}
	slices.Sort(want)
	if !slices.Equal(termed, want) {
		t.Errorf("SIGTERM reached %v; want both children %v", termed, want)
	}
	if h.count(exec.Killed) != 2 || alive(first.Pid) || alive(begun.Pid) {
		t.Errorf("events %v; want both killed after the grace", h.order())
	}
	if len(h.gens()) != 2 || h.count(exec.Restarted) != 0 {
		t.Errorf("starts %v, events %v: want nothing started after the signal", h.gens(), h.order())
	}
}

// Other signals during an overlap go to the serving child at once and to
// the new one when it takes over.
func TestOverlapSignalsDuringOverlap(t *testing.T) {
	sup, h, _ := overlapSup(t, sh(`
echo "$$ $GEN" >> $D/starts
trap 'exit 0' TERM
trap 'echo "$GEN" >> $D/hup' HUP
if [ "$GEN" = 2 ]; then while [ ! -e $D/go.2 ]; do sleep 0.05; done; fi
: > $D/up.$$
while :; do sleep 0.05; done
`))
	h.start(sup)
	h.event(exec.Ready)
	h.change(2, "GEN changed")
	h.event(exec.OverlapBegun)
	eventually(t, "GEN 2 to run", func() bool { return len(h.gens()) == 2 })
	h.signal(syscall.SIGHUP)
	h.waitFile("hup")
	// The new child would get it within the 50 ms of its loop: 300 ms
	// without a second line shows it was held.
	time.Sleep(300 * time.Millisecond)
	if got := readLines(t, h.path("hup")); !slices.Equal(got, []string{"1"}) {
		t.Fatalf("SIGHUP reached generations %v during the overlap; want only the serving 1", got)
	}
	touch(t, h.path("go.2"))
	h.event(exec.Restarted)
	eventually(t, "the held SIGHUP to reach GEN 2", func() bool { return len(readLines(t, h.path("hup"))) == 2 })
	if got := readLines(t, h.path("hup")); !slices.Equal(got, []string{"1", "2"}) {
		t.Errorf("SIGHUP reached %v; want 1 then 2", got)
	}
	h.signal(syscall.SIGTERM)
	h.wait()
}

// The old child exiting by itself during the overlap leaves a stop-first
// restart: the new child is judged alone and becomes current when ready.
func TestOverlapOldChildExitsDuringOverlap(t *testing.T) {
	sup, h, _ := overlapSup(t, judgedScript("", "", "2"))
	h.start(sup)
	first := h.event(exec.Ready)
	h.change(2, "GEN changed")
	begun := h.event(exec.OverlapBegun)
	syscall.Kill(first.Pid, syscall.SIGTERM)
	if e := h.event(exec.Exited); e.Pid != first.Pid {
		t.Fatalf("Exited %+v; want the old child %d", e, first.Pid)
	}
	touch(t, h.path("go.2"))
	r := h.event(exec.Restarted)
	if r.Pid != begun.Pid {
		t.Errorf("Restarted %+v; want the new child %d", r, begun.Pid)
	}
	// D5: the new child ran before the old one exited: no gap, never a
	// negative one.
	if r.Gap != 0 {
		t.Errorf("Restarted.Gap = %v; want 0", r.Gap)
	}
	h.signal(syscall.SIGTERM)
	if code, err := h.wait(); code != 0 || err != nil {
		t.Fatalf("Run = %d, %v", code, err)
	}
}

// With Handover, the old child gets its stop signal only once Handover's
// channel is closed (a proxy's connections to it all answered), or at the
// latest Grace after the switch; a terminating signal meanwhile stops both.
func TestOverlapHandoverHoldsTheStopSignal(t *testing.T) {
	type handover struct {
		pid  int
		done chan struct{}
	}
	setUp := func(t *testing.T, grace time.Duration) (*harness, *logBuffer, chan handover, exec.Event, exec.Event) {
		sup, h, logs := overlapSup(t, judgedScript("", "", ""))
		sup.Grace = grace
		calls := make(chan handover, 1)
		sup.Handover = func(pid int) <-chan struct{} {
			c := handover{pid: pid, done: make(chan struct{})}
			calls <- c
			return c.done
		}
		h.start(sup)
		first := h.event(exec.Ready)
		h.change(2, "GEN changed")
		return h, logs, calls, first, h.event(exec.Restarted)
	}
	// 300 ms with no event after the switch shows the stop signal waits:
	// without the hold, Draining comes within milliseconds of Restarted.
	quiet := func(t *testing.T, h *harness, oldPid int) {
		t.Helper()
		select {
		case e := <-h.events:
			t.Fatalf("event %v during the handover", e)
		case <-time.After(300 * time.Millisecond):
		}
		if !alive(oldPid) {
			t.Fatalf("the old child %d is gone during the handover", oldPid)
		}
	}

	t.Run("released", func(t *testing.T) {
		h, _, calls, first, _ := setUp(t, 30*time.Second)
		c := <-calls
		if c.pid != first.Pid {
			t.Errorf("Handover(%d); want the old child %d", c.pid, first.Pid)
		}
		quiet(t, h, first.Pid)
		close(c.done)
		if d := h.event(exec.Draining); d.Pid != first.Pid || d.Signal != syscall.SIGTERM {
			t.Errorf("Draining %+v; want SIGTERM to %d", d, first.Pid)
		}
		h.event(exec.Exited)
		h.signal(syscall.SIGTERM)
		if code, err := h.wait(); code != 0 || err != nil {
			t.Fatalf("Run = %d, %v; want 0", code, err)
		}
	})
	t.Run("bounded by grace", func(t *testing.T) {
		// Grace well past quiet's 300 ms, however slow the box.
		h, logs, calls, first, _ := setUp(t, 2*time.Second)
		<-calls // never closed
		quiet(t, h, first.Pid)
		if d := h.event(exec.Draining); d.Pid != first.Pid {
			t.Errorf("Draining %+v; want the old child %d", d, first.Pid)
		}
		h.event(exec.Exited)
		if !strings.Contains(logs.String(), "still has connections waiting") {
			t.Errorf("the log does not say the handover timed out:\n%s", logs.String())
		}
		h.signal(syscall.SIGTERM)
		if code, err := h.wait(); code != 0 || err != nil {
			t.Fatalf("Run = %d, %v; want 0", code, err)
		}
	})
	t.Run("serving child dies", func(t *testing.T) {
		h, _, calls, first, restarted := setUp(t, 30*time.Second)
		<-calls
		syscall.Kill(restarted.Pid, syscall.SIGKILL)
		// Run ends with the serving child's code, as with one child, once
		// the old one, never asked to stop until now, has exited.
		if code, err := h.wait(); code != 128+9 || err != nil {
			t.Fatalf("Run = %d, %v; want 137", code, err)
		}
		if alive(first.Pid) {
			t.Errorf("the old child %d outlived Run", first.Pid)
		}
	})
	t.Run("terminated", func(t *testing.T) {
		h, _, calls, first, restarted := setUp(t, 30*time.Second)
		<-calls
		h.signal(syscall.SIGTERM)
		if code, err := h.wait(); code != 0 || err != nil {
			t.Fatalf("Run = %d, %v; want 0", code, err)
		}
		if alive(first.Pid) || alive(restarted.Pid) {
			t.Errorf("old %d alive %v, new %d alive %v after Run; want neither", first.Pid, alive(first.Pid), restarted.Pid, alive(restarted.Pid))
		}
	})
}

// Stop-first with Handover: the child replaced for a change gets its stop
// signal once Handover's channel is closed, and the new one starts after
// it has exited, as always; a terminating signal during the hold stops it
// at once and starts nothing.
func TestStopFirstHandoverHoldsTheStopSignal(t *testing.T) {
	setUp := func(t *testing.T) (*harness, chan chan struct{}, exec.Event) {
		sup, h, _ := overlapSup(t, judgedScript("", "", ""))
		sup.Restart = exec.StopFirst
		sup.Grace = 30 * time.Second
		calls := make(chan chan struct{}, 1)
		sup.Handover = func(int) <-chan struct{} {
			done := make(chan struct{})
			calls <- done
			return done
		}
		h.start(sup)
		first := h.event(exec.Ready)
		h.change(2, "GEN changed")
		if begun := h.event(exec.RestartBegun); begun.Pid != first.Pid {
			t.Fatalf("RestartBegun %+v; want the child %d", begun, first.Pid)
		}
		return h, calls, first
	}
	t.Run("released", func(t *testing.T) {
		h, calls, first := setUp(t)
		done := <-calls
		// 300 ms with no event and the child alive shows the signal waits:
		// without the hold, the child exits within milliseconds.
		select {
		case e := <-h.events:
			t.Fatalf("event %v during the handover", e)
		case <-time.After(300 * time.Millisecond):
		}
		if !alive(first.Pid) {
			t.Fatal("the child is gone during the handover")
		}
		close(done)
		if e := h.event(exec.Exited); e.Pid != first.Pid {
			t.Errorf("Exited %+v; want the old child %d", e, first.Pid)
		}
		h.event(exec.Restarted)
		if got := h.gens(); !slices.Equal(got, []string{"1", "2"}) {
			t.Errorf("generations %v; want 1 2", got)
		}
		h.signal(syscall.SIGTERM)
		if code, err := h.wait(); code != 0 || err != nil {
			t.Fatalf("Run = %d, %v; want 0", code, err)
		}
	})
	t.Run("terminated", func(t *testing.T) {
		h, calls, first := setUp(t)
		<-calls
		h.signal(syscall.SIGTERM)
		if code, err := h.wait(); code != 0 || err != nil {
			t.Fatalf("Run = %d, %v; want 0", code, err)
		}
		if alive(first.Pid) || !slices.Equal(h.gens(), []string{"1"}) {
			t.Errorf("child alive %v, generations %v; want it stopped and nothing started", alive(first.Pid), h.gens())
		}
	})
}
