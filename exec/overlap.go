package exec

import (
	"syscall"
	"time"
)

// Overlap restarts (Supervisor.Restart). At most two children live at a
// time, and at most one of them is not ready:
//
//	running ──change──▶ overlapping ──candidate ready──▶ draining ──retiring exited──▶ running
//	                      │  (serving child serves,       (the candidate serves; the old
//	                      │   the candidate is judged)     child gets its stop signal
//	                      │                                after Handover, then Grace)
//	                      └──candidate failed──▶ draining (the old child serves on, the
//	                                                rejected one has Grace)
//
// A change arriving in overlapping or draining is held, the newest winning,
// and applied once only one child lives. Signals: see held.go.

// overlap starts the candidate of a change next to the serving child,
// which keeps serving until the candidate is ready (see switchOver).
func (m *core) overlap() {
	old := m.byRole(serving)
	c, err := m.launch(m.next, candidate, overlapping)
	if err != nil {
		// Nothing was touched: the old child serves on, as after a
		// rejected environment.
		m.log.Error("cannot start the new child; the old one keeps serving", "pid", old.pid, "reason", m.reason, "error", err)
		m.emit(Event{Kind: Rejected, Pid: old.pid, Reason: m.reason + ": " + err.Error()})
		return
	}
	m.overlapAt = c.started
	m.log.Info("overlap begun", "pid", c.pid, "old_pid", old.pid, "reason", m.reason)
	m.emit(Event{Kind: OverlapBegun, Pid: c.pid, Reason: m.reason})
	m.settle()
}

// settle moves a child that has passed its checks on: the first or
// restored child to running, the candidate of a change to serving. Its
// environment becomes the last known good, and a change held meanwhile
// is applied.
func (m *core) settle() {
	switch m.phase {
	case starting:
		c := m.byRole(serving)
		if !c.ready || !c.lived {
			return
		}
		m.readyFirst(c)
	case verifying:
		c := m.byRole(candidate)
		if !c.ready || !c.lived {
			return
		}
		readyAfter := c.readyAt.Sub(c.started)
		// Never negative: when the serving child of an overlap exited
		// after the candidate started, nothing ran for no time at all.
		took, gap := c.readyAt.Sub(m.begun), max(c.started.Sub(m.lastExit), 0)
		attrs := []any{"pid", c.pid, "reason", m.reason, "took", took, "gap", gap}
		if m.cfg.checked {
			attrs = append(attrs, "ready_after", readyAfter)
		}
		if m.cfg.window > 0 {
			attrs = append(attrs, "lived", m.cfg.window)
		}
		m.log.Info("restart finished", attrs...)
		m.setRole(c, serving)
		m.emit(Event{Kind: Restarted, Pid: c.pid, Took: took, Gap: gap, ReadyAfter: readyAfter, Reason: m.reason})
	case overlapping:
		if c := m.byRole(candidate); c.ready && c.lived {
			m.switchOver(c)
		}
		return
	default:
		return
	}
	m.to(running)
	m.good = m.byRole(serving).env
	m.applyPending()
}

// readyFirst reports the first child, or a restored one, ready.
func (m *core) readyFirst(c *child) {
	readyAfter := c.readyAt.Sub(c.started)
	e := Event{Kind: Ready, Pid: c.pid, ReadyAfter: readyAfter}
	switch {
	case !m.rolledAt.IsZero():
		e.Reason, e.Took = "rolled back", c.readyAt.Sub(m.rolledAt)
		m.log.Info("rollback finished", "pid", c.pid, "took", e.Took, "ready_after", readyAfter)
		m.rolledAt = time.Time{}
	case m.cfg.checked:
		m.log.Info("child ready", "pid", c.pid, "ready_after", readyAfter)
	}
	m.emit(e)
}

// switchOver makes candidate c, now verified, the serving child: its
// environment is the last known good, and the old child is asked to stop.
func (m *core) switchOver(c *child) {
	old := m.byRole(serving)
	readyAfter := c.readyAt.Sub(c.started)
	took := c.readyAt.Sub(m.begun)
	m.log.Info("new child ready", "pid", c.pid, "ready_after", readyAfter)
	m.good = c.env
	m.setRole(old, retiring)
	m.setRole(c, serving)
	m.to(draining)
	// Restarted before the old child's stop signal: a proxy switches its
	// target on it, while the old one still accepts.
	m.log.Info("switched", "pid", c.pid, "old_pid", old.pid, "reason", m.reason, "took", took, "overlap", m.w.now().Sub(m.overlapAt).Round(time.Millisecond))
	m.emit(Event{Kind: Restarted, Pid: c.pid, Took: took, ReadyAfter: readyAfter, Reason: m.reason})
	m.flushHeld()
	if !m.holdStop(old, m.cfg.stopSig) {
		m.drain(old, m.cfg.stopSig, "replaced")
	}
}

// dropCandidate rejects candidate c of an overlap (RolledBack was
// reported): the old child serves on, c gets the stop signal and Grace.
func (m *core) dropCandidate(c *child) {
	c.endCheck()
	c.liveBy = time.Time{}
	m.setRole(c, retiring)
	m.to(draining)
	// The serving child had them already; they were held for c alone.
	m.dropHeld("they were held for the rejected child; the serving child had them")
	m.drain(c, m.cfg.stopSig, "rejected")
	m.rolledBackOver()
}

// rolledBackOver reports that the old child, which never stopped, is the
// one serving after a rejected overlap.
func (m *core) rolledBackOver() {
	s := m.byRole(serving)
	took := m.w.now().Sub(m.rolledAt)
	m.log.Info("rollback finished; the old child kept serving", "pid", s.pid, "took", took.Round(time.Millisecond))
	m.emit(Event{Kind: Ready, Pid: s.pid, Reason: "rolled back", Took: took})
	m.rolledAt = time.Time{}
}

// holdStop starts c's handover (see Supervisor.Handover), after which it
// gets sig, and reports whether there is one.
func (m *core) holdStop(c *child, sig syscall.Signal) bool {
	if !m.w.handover(c.gen, c.pid) {
		return false
	}
	c.heldSig = sig
	c.handoverBy = m.w.now().Add(m.cfg.grace)
	m.log.Debug("child finishing what was sent to it before its stop signal", "pid", c.pid, "within", m.cfg.grace)
	return true
}

// handedOver takes the end of the handover of the child of gen.
func (m *core) handedOver(gen int) {
	if c := m.byGen(gen); c != nil && c.handingOver() {
		m.handoverEnded(c, false)
	}
	m.after()
}

// handoverEnded sends c, the old child of an overlap or the one of a
// stop-first restart, its stop signal once its handover has ended, or its
// bound has passed.
func (m *core) handoverEnded(c *child, timedOut bool) {
	if !timedOut {
		m.log.Debug("child answered what was sent to it", "pid", c.pid)
	} else {
		m.log.Warn("child still has connections waiting for its answer; stopping it all the same", "pid", c.pid, "waited", m.cfg.grace)
	}
	sig := c.heldSig
	c.handoverBy, c.heldSig = time.Time{}, 0
	if m.cfg.restart == Overlap {
		m.drain(c, sig, "replaced")
		return
	}
	m.askToStop(c, sig)
}

// drain asks o, retiring next to a serving child (or stopping with it),
// to stop with sig, unless it was asked already.
func (m *core) drain(o *child, sig syscall.Signal, why string) {
	if o == nil || !o.stopAt.IsZero() {
		return
	}
	m.askToStop(o, sig)
	msg := "old child draining"
	if why == "rejected" {
		msg = "stopping the rejected child"
	}
	attrs := []any{"pid", o.pid, "grace", m.cfg.grace, "why", why}
	if sig != 0 {
		attrs = append(attrs, "signal", signalName(sig))
	}
	m.log.Info(msg, attrs...)
	m.emit(Event{Kind: Draining, Pid: o.pid, Reason: why, Signal: sig})
}
