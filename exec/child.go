package exec

import (
	"slices"
	"syscall"
	"time"
)

// child is one child process and everything that times its life: its
// readiness check, its rollback window, its handover, its grace period.
// Each answer about a child names its generation, so that an answer about
// another one is recognised and dropped. Deadlines are zero when not
// armed; core.fire acts on those that have passed.
type child struct {
	gen  int
	pid  int    // also its process group
	tick uint64 // its start time in clock ticks since boot (/proc), 0 if unknown
	env  []string
	hash envHash
	role role

	started time.Time
	ready   bool // Ready said so (or there is no Ready)
	readyAt time.Time
	lived   bool      // past RollbackWindow
	readyBy time.Time // the readiness check's backstop, while it runs
	cancel  func()    // ends its readiness check; nil if none
	liveBy  time.Time // the end of its RollbackWindow, while it runs

	// A child replaced for a change, before its stop signal: handoverBy
	// bounds the wait for Handover's answer; heldSig is then sent.
	handoverBy time.Time
	heldSig    syscall.Signal

	stopAt  time.Time // when it was asked to stop, if it was
	graceBy time.Time // SIGKILL to its group then, while the grace period runs

	// sent lists the signals paramexec delivered to it: a death by one of
	// them is no verdict on its environment.
	sent []syscall.Signal

	exited bool // it has been reaped
	status syscall.WaitStatus
	exitAt time.Time
}

// handingOver reports whether c waits for its handover before its stop
// signal.
func (c *child) handingOver() bool { return !c.handoverBy.IsZero() }

// asked reports whether c was asked to stop (or is handing over first).
func (c *child) asked() bool { return !c.stopAt.IsZero() || c.handingOver() }

// checking reports whether c's readiness check is under way.
func (c *child) checking() bool { return !c.readyBy.IsZero() }

// endCheck ends c's readiness check, if any.
func (c *child) endCheck() {
	if c.cancel != nil {
		c.cancel()
		c.cancel = nil
	}
	c.readyBy = time.Time{}
}

// killedBySent reports whether c died of a signal paramexec delivered.
func (c *child) killedBySent() bool {
	return c.status.Signaled() && slices.Contains(c.sent, c.status.Signal())
}

// code is c's exit code as a shell reports it.
func (c *child) code() int { return statusCode(c.status) }

// signalChild delivers sig to c and remembers it.
func (m *core) signalChild(c *child, sig syscall.Signal) {
	if sig == 0 || c.exited {
		return
	}
	if !slices.Contains(c.sent, sig) {
		c.sent = append(c.sent, sig)
	}
	m.w.signal(c.pid, sig)
}

// askToStop sends c sig (unless 0), then SIGCONT if it is stopped, and
// starts its grace period, unless it was asked already. SIGCONT because a
// stopped process (a debugger, kill -STOP, a job stopped in a container)
// cannot run its handler: the stop signal stays pending until it runs
// again, as systemd knows (its stop sequence is the same; a running child
// is not sent one, which it would see for nothing).
func (m *core) askToStop(c *child, sig syscall.Signal) {
	if c.exited || !c.stopAt.IsZero() {
		return
	}
	c.handoverBy, c.heldSig = time.Time{}, 0
	m.signalChild(c, sig)
	if sig != 0 && sig != syscall.SIGCONT && sig != syscall.SIGKILL {
		m.w.continueStopped(c.pid, true)
	}
	c.stopAt = m.w.now()
	c.graceBy = c.stopAt.Add(m.cfg.grace)
	m.stopBy = c.graceBy
}

// kill ends c's grace period that ran out.
func (m *core) kill(c *child) {
	c.graceBy = time.Time{}
	m.log.Warn("child still running after the grace period; killing its process group", "pid", c.pid, "grace", m.cfg.grace)
	m.w.killGroup(c.pid)
	// The child may have left its group (setsid); it is killed all the same.
	m.signalChild(c, syscall.SIGKILL)
	m.emit(Event{Kind: Killed, Pid: c.pid})
}

// setRole moves c to role r; anything but a forward move is a bug.
func (m *core) setRole(c *child, r role) {
	if !slices.Contains(roleEdges[c.role], r) {
		m.bug("illegal role change %v -> %v of pid %d in %v", c.role, r, c.pid, m.phase)
	}
	c.role = r
}
