package exec

import (
	"cmp"
	"fmt"
	"slices"
	"syscall"
	"time"
)

// exit is one process reaped: a child, or an orphan this process adopted.
type exit struct {
	pid    int
	status syscall.WaitStatus
}

// reaped takes the exits of one reaping pass. Every child's exit is
// recorded before any is acted on, and the serving child's is taken
// first: what it did decides what the others' exits mean (a change held
// while draining must not start next to a serving child that has exited
// by itself, and is never applied to replace one).
func (m *core) reaped(batch []exit) {
	defer m.after()
	var ours []*child
	for _, e := range batch {
		c := m.byPid(e.pid)
		if c == nil || c.exited {
			m.log.Debug("reaped orphan", "pid", e.pid, "code", statusCode(e.status))
			continue
		}
		c.exited, c.status, c.exitAt = true, e.status, m.w.now()
		ours = append(ours, c)
	}
	slices.SortStableFunc(ours, func(a, b *child) int { return cmp.Compare(a.role, b.role) })
	for _, c := range ours {
		m.exited(c)
	}
}

// exitKey is what an exit means: the phase it comes in, and the role of
// the child that exited.
type exitKey struct {
	phase phase
	role  role
}

// exitDispatch is the one place where an exit is acted on, by (phase,
// role); docs/architecture.md shows it. An exit not listed is a bug. In
// stopping, any role's exit is taken alike (see stoppedExit).
var exitDispatch = map[exitKey]func(*core, *child){
	{starting, serving}:      (*core).servingExited,
	{running, serving}:       (*core).servingExited,
	{restarting, retiring}:   (*core).replacedExited,
	{verifying, candidate}:   (*core).candidateExited,
	{rollingBack, retiring}:  (*core).rejectedExited,
	{overlapping, candidate}: (*core).candidateExitedOverlapping,
	{overlapping, serving}:   (*core).servingExitedOverlapping,
	{draining, retiring}:     (*core).retiringExited,
	{draining, serving}:      (*core).servingExitedDraining,
}

// exited acts on the exit of child c.
func (m *core) exited(c *child) {
	if m.phase == stopping {
		m.stoppedExit(c)
		return
	}
	act, ok := exitDispatch[exitKey{m.phase, c.role}]
	if !ok {
		m.bug("exit of a %v child in %v", c.role, m.phase)
		m.bury(c)
		if len(m.kids) == 0 {
			m.phase, m.code = ended, c.code()
		}
		return
	}
	act(m, c)
}

// bury follows the reaping of c: its deadlines end, what it left in its
// process group dies with it, and what it left outside is swept.
func (m *core) bury(c *child) {
	c.endCheck()
	c.graceBy, c.handoverBy, c.liveBy = time.Time{}, time.Time{}, time.Time{}
	m.lastExit = c.exitAt
	// Restarts must not pile up generations of grandchildren, and nothing
	// should outlive Run. The group id cannot have been reused yet: a pid
	// stays allocated while its group has members.
	m.w.killGroup(c.pid)
	m.remove(c)
	living := m.other(c)
	code := c.code()
	if living != nil {
		attrs := []any{"pid", c.pid, "code", code, "overlap", c.exitAt.Sub(m.overlapAt).Round(time.Millisecond)}
		if !c.stopAt.IsZero() {
			attrs = append(attrs, "drained", c.exitAt.Sub(c.stopAt).Round(time.Millisecond))
		}
		msg := "old child exited"
		if c.gen > living.gen {
			msg = "rejected child exited"
		}
		m.log.Info(msg, attrs...)
	} else {
		m.log.Info("child exited", "pid", c.pid, "code", code)
	}
	m.emit(Event{Kind: Exited, Pid: c.pid, Code: code})
	m.sweep(c, living)
}

// servingExited: the only child exited by itself; it is never restarted.
func (m *core) servingExited(c *child) {
	m.bury(c)
	m.end(c.code())
}

// stoppedExit: a child exited while stopping; Run's code is the named
// child's (the one the Stopping event named).
func (m *core) stoppedExit(c *child) {
	m.bury(c)
	if c == m.named && m.exitCode < 0 {
		m.exitCode = c.code()
	}
	if len(m.kids) == 0 {
		m.end(c.code())
	}
}

// replacedExited (stop-first): the old child is gone, the candidate starts.
func (m *core) replacedExited(c *child) {
	m.bury(c)
	m.startCandidate()
}

// rejectedExited: the rejected candidate is gone, the last good
// environment starts.
func (m *core) rejectedExited(c *child) {
	m.bury(c)
	m.restore()
}

// candidateExited (stop-first): the candidate failed, unless a signal
// paramexec delivered killed it.
func (m *core) candidateExited(c *child) {
	m.bury(c)
	code := c.code()
	switch {
	case c.killedBySent():
		// No verdict on its environment: the program died of a signal
		// meant for it, as it would have without paramexec.
		m.log.Info("the new child died of a signal it was sent; no verdict on its environment", "pid", c.pid, "code", code)
		m.end(code)
	case !m.cfg.rollback:
		m.end(code)
	default:
		m.rollBack(c, code, fmt.Sprintf("exit code %d", code))
		m.restore()
	}
}

// candidateExitedOverlapping: the candidate crashed while the old child
// serves: the rollback without a gap.
func (m *core) candidateExitedOverlapping(c *child) {
	code := c.code()
	switch {
	case c.killedBySent():
		m.dropHeld("they were held for a child that is gone; the serving child had them")
		m.bury(c)
		m.log.Info("the new child died of a signal it was sent; no verdict on its environment", "pid", c.pid, "code", code)
		m.to(running)
		m.applyPending()
	case m.cfg.rollback:
		m.rollBack(c, code, fmt.Sprintf("exit code %d", code))
		m.dropHeld("they were held for the rejected child; the serving child had them")
		m.bury(c)
		m.to(running)
		m.rolledBackOver()
		m.applyPending()
	default:
		// Without Rollback a failed change ends Run, as in stop-first.
		m.bury(c)
		m.to(running)
		m.exitCode = code
		m.stopAll(fmt.Sprintf("the new child exited with %d", code))
	}
}

// servingExitedOverlapping: the serving child went on its own during an
// overlap: what is left is a stop-first restart whose candidate is judged.
func (m *core) servingExitedOverlapping(c *child) {
	m.bury(c)
	m.log.Warn("the serving child exited during the overlap; the new child is judged alone", "pid", c.pid, "new_pid", m.byRole(candidate).pid)
	m.to(verifying)
	m.settle()
}

// retiringExited: the old child of an overlap is gone; one child lives.
func (m *core) retiringExited(c *child) {
	m.bury(c)
	m.to(running)
	m.applyPending()
}

// servingExitedDraining: the serving child exited by itself (or was
// stopped) while the other one is on its way out: Run ends with its code
// once that one has exited, as it would with one child. An old child
// still handing over was not asked to stop yet.
func (m *core) servingExitedDraining(c *child) {
	code := c.code()
	m.drain(m.byRole(retiring), m.cfg.stopSig, fmt.Sprintf("the serving child exited with %d", code))
	m.bury(c)
	if m.exitCode < 0 {
		m.exitCode = code
	}
	m.to(stopping)
	m.dropHeld("the children are stopping")
}
