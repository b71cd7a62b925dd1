package exec

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"syscall"
	"time"
)

// The simulation's world: a fake clock, a fake process table, readiness
// checks and handovers that answer when the schedule says so. Nothing in
// it sleeps, forks or waits: a step is a function call.

// fproc is one fake process: a child the core started, or something a
// child left behind outside its group.
type fproc struct {
	pid, pgid   int
	start       uint64
	ours        bool // started by the core
	booted      bool // its handlers are installed
	ignoresTerm bool
	stopped     bool // SIGSTOPped: signals wait until SIGCONT
	pending     []syscall.Signal
	dead        bool // exited (a zombie until reaped)
	reaped      bool
	status      syscall.WaitStatus
	bySent      bool      // died of a signal the core sent
	gotStop     time.Time // when the core sent it the stop signal
	stopStep    int       // at which step
}

type fakeCheck struct{ gen, pid int }

type fakeWorld struct {
	sim       *sim
	clock     time.Time
	procs     map[int]*fproc
	order     []int // pids by creation
	nextPid   int
	ticks     uint64
	failNext  bool // the next fork fails
	checks    []fakeCheck
	handing   []int // gens handing over
	handsOver bool  // Supervisor.Handover is set
	events    []Event
}

func newFakeWorld(s *sim) *fakeWorld {
	return &fakeWorld{sim: s, clock: time.Unix(1_000_000, 0), procs: map[int]*fproc{}, nextPid: 100}
}

func (w *fakeWorld) now() time.Time { return w.clock }

var errBadEnv = errors.New("bad environment")

func (w *fakeWorld) checkStart(env []string) error {
	if slices.Contains(env, "V=bad") {
		return errBadEnv
	}
	return nil
}

func (w *fakeWorld) spawn(ours bool) *fproc {
	w.nextPid++
	w.ticks++
	p := &fproc{pid: w.nextPid, pgid: w.nextPid, start: w.ticks, ours: ours}
	w.procs[p.pid] = p
	w.order = append(w.order, p.pid)
	return p
}

func (w *fakeWorld) start(env []string) (int, uint64, error) {
	m := w.sim.m
	if m.terminated || m.phase == stopping || m.phase == ended {
		w.sim.fail("a child started after a stop (phase %v, terminated %v)", m.phase, m.terminated)
	}
	for _, c := range m.kids {
		if c.role == serving && c.exited && c.stopAt.IsZero() {
			w.sim.fail("a child starts while the serving child pid %d, which exited by itself, is still to be taken", c.pid)
		}
	}
	if w.failNext {
		w.failNext = false
		return 0, 0, fmt.Errorf("fork: %w", syscall.EAGAIN)
	}
	p := w.spawn(true)
	if w.live() > 2 {
		w.sim.fail("%d children alive", w.live())
	}
	return p.pid, p.start, nil
}

// live counts the children of the core that have not exited.
func (w *fakeWorld) live() int {
	n := 0
	for _, p := range w.procs {
		if p.ours && !p.dead {
			n++
		}
	}
	return n
}

func (w *fakeWorld) die(p *fproc, ws syscall.WaitStatus, bySent bool) {
	if p.dead {
		return
	}
	p.dead, p.status, p.bySent = true, ws, bySent
}

// deliver applies sig to p as the kernel would for a simple program: the
// default action (death) until its handlers are installed, a clean exit
// on the stop signal after, unless it ignores it.
func (w *fakeWorld) deliver(p *fproc, sig syscall.Signal, fromCore bool) {
	if p.dead {
		return
	}
	switch {
	case sig == syscall.SIGKILL:
		w.die(p, syscall.WaitStatus(sig), fromCore)
		return
	case sig == syscall.SIGSTOP:
		p.stopped = true
		return
	case sig == syscall.SIGCONT:
		// As the kernel does, SIGCONT discards the pending stop signals.
		p.stopped = false
		pend := slices.DeleteFunc(p.pending, jobStop)
		p.pending = nil
		for _, s := range pend {
			w.deliver(p, s, fromCore)
		}
		return
	case p.stopped:
		p.pending = append(p.pending, sig)
		return
	case sig == syscall.SIGWINCH:
		return // ignored by default
	case jobStop(sig):
		p.stopped = true
		return
	case !p.booted:
		w.die(p, syscall.WaitStatus(sig), fromCore)
	case sig == w.sim.m.cfg.stopSig && !p.ignoresTerm:
		w.die(p, 0, false)
	}
}

func (w *fakeWorld) signal(pid int, sig syscall.Signal) {
	p := w.procs[pid]
	if p == nil {
		w.sim.fail("signal %v to unknown pid %d", sig, pid)
		return
	}
	w.sim.sent(p, sig)
	w.deliver(p, sig, true)
}

func (w *fakeWorld) signalGroup(pgid int, sig syscall.Signal) {
	for _, pid := range w.order {
		if p := w.procs[pid]; p.pgid == pgid && !p.dead {
			w.deliver(p, sig, true)
		}
	}
}

func (w *fakeWorld) killGroup(pgid int) { w.signalGroup(pgid, syscall.SIGKILL) }

func (w *fakeWorld) checkReady(gen, pid int) func() {
	w.checks = append(w.checks, fakeCheck{gen, pid})
	return func() {
		w.checks = slices.DeleteFunc(w.checks, func(c fakeCheck) bool { return c.gen == gen })
	}
}

func (w *fakeWorld) handover(gen, _ int) bool {
	if w.handsOver {
		w.handing = append(w.handing, gen)
	}
	return w.handsOver
}

func (w *fakeWorld) descendantsOutside(pgid int) []proc {
	var out []proc
	for _, pid := range w.order {
		if p := w.procs[pid]; !p.dead && p.pgid != pgid {
			out = append(out, proc{p.pid, p.start})
		}
	}
	return out
}

func (w *fakeWorld) alive(pr proc) bool {
	p := w.procs[pr.pid]
	return p != nil && !p.dead && p.start == pr.start
}

func (w *fakeWorld) signalProc(pr proc, sig syscall.Signal) {
	if !w.alive(pr) {
		return
	}
	p := w.procs[pr.pid]
	if sig == w.sim.m.cfg.stopSig && p.gotStop.IsZero() {
		p.gotStop, p.stopStep = w.clock, w.sim.step
	}
	w.deliver(p, sig, true)
}

func (w *fakeWorld) killProcs(procs []proc) {
	for _, pr := range procs {
		w.signalProc(pr, syscall.SIGKILL)
	}
}

func (w *fakeWorld) continueStopped(pid int, group bool) {
	p := w.procs[pid]
	if p == nil || !p.stopped {
		return
	}
	if group {
		w.signalGroup(p.pgid, syscall.SIGCONT)
		return
	}
	w.deliver(p, syscall.SIGCONT, true)
}

func (w *fakeWorld) stopSelf()      {}
func (w *fakeWorld) foreground(int) {}

func (w *fakeWorld) emit(e Event) {
	w.events = append(w.events, e)
	w.sim.event(e)
}

// zombies lists the exited, unreaped processes, oldest first.
func (w *fakeWorld) zombies() []*fproc {
	var out []*fproc
	for _, pid := range w.order {
		if p := w.procs[pid]; p.dead && !p.reaped {
			out = append(out, p)
		}
	}
	return out
}

// drops records the log's "dropping held signals" lines: a held signal
// that reaches no child must be logged so.
type drops struct {
	sim *sim
}

func (h drops) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h drops) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "dropping held signals" && r.Message != "signal dropped: no child is left" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "signals" || a.Key == "signal" {
			h.sim.dropped(fmt.Sprint(a.Value.Any()))
		}
		return true
	})
	return nil
}

func (h drops) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h drops) WithGroup(string) slog.Handler      { return h }
