package exec

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"syscall"
	"time"
)

// config is what the core takes from a Supervisor, defaults applied.
type config struct {
	argv         []string
	onChange     Action
	grace        time.Duration // ≥ 0
	stopSig      syscall.Signal
	readyTimeout time.Duration
	checked      bool // Supervisor.Ready is set
	window       time.Duration
	rollback     bool
	restart      RestartMode
}

// readySlack is how long past ReadyTimeout the core waits for a readiness
// check that ought to have answered when its ctx ended: then the child is
// taken as not ready all the same, so that no wait is without a deadline.
const readySlack = time.Second

// errNoAnswer is a readiness check's failure to answer in time.
var errNoAnswer = errors.New("the readiness check did not answer in time")

// core is one Run's state machine: every decision about the children is
// taken here, on one goroutine, from the inputs the loop (or the
// simulation) feeds it: begin, change, signal, answered, handedOver,
// reaped, childStopped, cancelled and fire. Everything it does to the
// world goes through w; it keeps no time but w's and arms no timer: its
// deadlines are fields, the earliest of which deadline returns.
type core struct {
	cfg   config
	w     world
	log   *slog.Logger
	onBug func(msg string) // nil: log it

	phase      phase
	terminated bool             // a terminating signal was received
	kids       []*child         // the living children, oldest first: at most two
	named      *child           // the child a Stopping event named
	gen        int              // the last generation started
	next       []string         // the environment of the next candidate
	good       []string         // the last environment whose child was ready
	rejected   map[envHash]bool // environments whose child failed
	pending    *Change          // a change held until one child is ready
	pendingAt  time.Time        // when the first change of pending came
	reason     string           // why the restart or stop under way
	begun      time.Time        // when the restart under way was asked for
	lastExit   time.Time        // when the previous child exited
	rolledAt   time.Time        // when the rollback under way was decided
	overlapAt  time.Time        // when the overlap under way began
	exitCode   int              // when ≥ 0, Run's code instead of the child's
	held       []syscall.Signal // held for the next ready child, each once, in order
	stopBy     time.Time        // when the grace period of the last stop ends
	left       []leftovers      // earlier generations' leftovers, by deadline

	code int   // Run's result once ended
	err  error // Run's error once ended
}

func newCore(cfg config, w world, log *slog.Logger) *core {
	return &core{cfg: cfg, w: w, log: log, exitCode: -1, rejected: make(map[envHash]bool)}
}

// begin starts the first child with env. An error means nothing started.
func (m *core) begin(env []string) error {
	pid, tick, err := m.w.start(env)
	if err != nil {
		return err
	}
	m.phase = starting
	m.adopt(pid, tick, env, serving)
	m.emit(Event{Kind: Started, Pid: pid})
	m.settle()
	return nil
}

// done reports whether Run may return: no child lives and no leftover is
// waiting for its grace period.
func (m *core) done() bool { return m.phase == ended && len(m.left) == 0 }

// to moves the run to phase p; an edge that transitions does not list is
// a bug.
func (m *core) to(p phase) {
	if !legal(m.phase, p) {
		m.bug("illegal transition %v -> %v", m.phase, p)
	}
	m.phase = p
}

// bug reports a state the table says cannot happen: the simulation fails
// on it, production logs it.
func (m *core) bug(format string, args ...any) {
	msg := "exec: bug: " + fmt.Sprintf(format, args...)
	if m.onBug != nil {
		m.onBug(msg)
		return
	}
	m.log.Error(msg)
}

func (m *core) emit(e Event) { m.w.emit(e) }

// byRole returns the living child of role r, nil if none.
func (m *core) byRole(r role) *child {
	for _, c := range m.kids {
		if c.role == r {
			return c
		}
	}
	return nil
}

func (m *core) byGen(gen int) *child {
	for _, c := range m.kids {
		if c.gen == gen {
			return c
		}
	}
	return nil
}

func (m *core) byPid(pid int) *child {
	for _, c := range m.kids {
		if c.pid == pid {
			return c
		}
	}
	return nil
}

// cur is the child the logs and events of a change or stop name: the
// candidate while there is one, else the serving child, else the one
// retiring alone.
func (m *core) cur() *child {
	for _, r := range []role{candidate, serving, retiring} {
		if c := m.byRole(r); c != nil {
			return c
		}
	}
	return nil
}

// curPid is cur's pid, 0 if no child lives.
func (m *core) curPid() int {
	if c := m.cur(); c != nil {
		return c.pid
	}
	return 0
}

// other is the living child that is not c, nil if none.
func (m *core) other(c *child) *child {
	for _, o := range m.kids {
		if o != c {
			return o
		}
	}
	return nil
}

func (m *core) remove(c *child) {
	m.kids = slices.DeleteFunc(m.kids, func(k *child) bool { return k == c })
}

// cancelled ends the run for ctx's cause.
func (m *core) cancelled(cause string) {
	m.stopAll(cause)
	m.after()
}

// end moves to ended with the exit code of the child whose exit ends
// Run, unless another was decided.
func (m *core) end(code int) {
	m.to(ended)
	m.dropHeld("no child is left")
	m.code = code
	if m.exitCode >= 0 {
		m.code = m.exitCode
	}
}

// fail ends Run because a child could not start on a restart or a
// rollback: what the children left still gets its grace period.
func (m *core) fail(err error) {
	m.log.Error("cannot start the child", "error", err)
	m.to(ended)
	m.dropHeld("no child could start")
	m.code, m.err = ExitCode(err), fmt.Errorf("restart: %w", err)
}

// after follows every input: held signals reach a child that became
// ready, and in ended, leftovers that have exited are forgotten.
func (m *core) after() {
	m.flushHeld()
	if m.phase == ended {
		m.pruneLeftovers()
	}
}
