package exec

import (
	"fmt"
	"syscall"
	"time"
)

// Overlap restarts (Supervisor.Restart). At most two children live at a
// time, and at most one of them is not ready:
//
//	running ──change──▶ overlapping ──new ready──▶ draining ──old exited──▶ running
//	                      │  (old serves,            (new serves; old gets
//	                      │   new is judged)          its stop signal after
//	                      │                           Handover, then Grace)
//	                      └──new failed──▶ draining (old serves again, the
//	                                        rejected one has Grace)
//
// A change arriving in overlapping or draining is held, the newest winning,
// and applied once only one child lives. Signals: a terminating one stops
// both children (StopSignal to each, Grace, SIGKILL) and starts nothing;
// any other goes, in overlapping, to the serving child at once and to the
// new one when it takes over (dropped if it fails); in draining, to the
// serving child only.

// overlap starts the child of a change next to the current one, which
// keeps serving until the new one is ready (see switchOver).
func (r *run) overlap() {
	old := r.cur
	if err := r.launch(r.next, overlapping); err != nil {
		// Nothing was touched: the old child serves on, as after a
		// rejected environment.
		r.phase = running
		r.log.Error("cannot start the new child; the old one keeps serving", "pid", old.pid, "reason", r.reason, "error", err)
		r.emit(Event{Kind: Rejected, Pid: old.pid, Reason: r.reason + ": " + err.Error()})
		return
	}
	r.old = &old
	r.overlapAt = r.cur.started
	r.log.Info("overlap begun", "pid", r.cur.pid, "old_pid", old.pid, "reason", r.reason)
	r.emit(Event{Kind: OverlapBegun, Pid: r.cur.pid, Reason: r.reason})
}

// switchOver makes the new child, now verified, the current one: its
// environment is the last known good, and the old child is asked to stop.
func (r *run) switchOver() {
	c := &r.cur
	readyAfter := c.readyAt.Sub(c.started)
	took := c.readyAt.Sub(r.begun)
	r.log.Info("new child ready", "pid", c.pid, "ready_after", readyAfter)
	r.good = c.env
	r.phase = draining
	// Restarted before the old child's stop signal: a proxy switches its
	// target on it, while the old one still accepts.
	r.log.Info("switched", "pid", c.pid, "old_pid", r.old.pid, "reason", r.reason, "took", took, "overlap", time.Since(r.overlapAt).Round(time.Millisecond))
	r.emit(Event{Kind: Restarted, Pid: c.pid, Took: took, ReadyAfter: readyAfter, Reason: r.reason})
	for _, sig := range r.queued {
		r.send(sig)
	}
	r.queued = nil
	if !r.holdStop(r.old, r.stopSig) {
		r.stopOld(r.stopSig, "replaced")
	}
}

// holdStop starts c's handover (see Supervisor.Handover), after which it
// gets sig, and reports whether there is one.
func (r *run) holdStop(c *child, sig syscall.Signal) bool {
	if r.s.Handover == nil {
		return false
	}
	if c.handedOver = r.s.Handover(c.pid); c.handedOver == nil {
		return false
	}
	c.heldSig = sig
	c.handoverT = time.NewTimer(max(r.grace, 0))
	c.handoverC = c.handoverT.C
	r.log.Debug("child finishing what was sent to it before its stop signal", "pid", c.pid, "within", max(r.grace, 0))
	return true
}

// handedOver sends c, the old child of an overlap or the current one of a
// stop-first restart, its stop signal once its handover has ended, or its
// bound has passed.
func (r *run) handedOver(c *child) {
	if !c.handoverTimedOut() {
		r.log.Debug("child answered what was sent to it", "pid", c.pid)
	} else {
		r.log.Warn("child still has connections waiting for its answer; stopping it all the same", "pid", c.pid, "waited", max(r.grace, 0))
	}
	sig := c.heldSig
	c.endHandover()
	if c == r.old {
		r.stopOld(sig, "replaced")
		return
	}
	r.askToStop(sig)
}

// oldHandedOver and oldHandoverTimeout are the old child's handover
// channels, nil without one.
func (r *run) oldHandedOver() <-chan struct{} {
	if r.old == nil {
		return nil
	}
	return r.old.handedOver
}

func (r *run) oldHandoverTimeout() <-chan time.Time {
	if r.old == nil {
		return nil
	}
	return r.old.handoverC
}

// handoverTimedOut reports whether c's handover ended by its bound: its
// channel is still open.
func (c *child) handoverTimedOut() bool {
	select {
	case <-c.handedOver:
		return false
	default:
		return true
	}
}

// endHandover forgets c's handover, if any.
func (c *child) endHandover() {
	if c.handoverT != nil {
		c.handoverT.Stop()
	}
	c.handedOver, c.handoverT, c.handoverC, c.heldSig = nil, nil, nil, 0
}

// dropNew rejects the new child of an overlap (RolledBack was reported):
// the old one serves on as the current child, the new one gets the stop
// signal and Grace.
func (r *run) dropNew() {
	if r.windowT != nil {
		r.windowT.Stop()
		r.windowT, r.windowC = nil, nil
	}
	if r.cur.cancel != nil {
		r.cur.cancel()
	}
	failed := r.cur
	failed.dropped = true
	r.cur, r.old = *r.old, &failed
	r.phase = draining
	if len(r.queued) > 0 {
		r.log.Debug("dropping signals held for the rejected child", "count", len(r.queued))
		r.queued = nil
	}
	r.stopOld(r.stopSig, "rejected")
	r.rolledBackOver()
}

// rolledBackOver reports that the old child, which never stopped, is the
// current one again after a rejected overlap.
func (r *run) rolledBackOver() {
	r.log.Info("rollback finished; the old child kept serving", "pid", r.cur.pid, "took", time.Since(r.rolledAt).Round(time.Millisecond))
	r.emit(Event{Kind: Ready, Pid: r.cur.pid, Reason: "rolled back", Took: time.Since(r.rolledAt)})
	r.rolledAt = time.Time{}
}

// stopOld sends sig (unless 0) to the old child and starts its grace
// period, unless it was asked to stop already.
func (r *run) stopOld(sig syscall.Signal, why string) {
	o := r.old
	if o == nil || !o.stopAt.IsZero() {
		return
	}
	o.endHandover()
	if sig != 0 {
		signalPid(r.log, o.pid, sig)
	}
	o.stopAt = time.Now()
	o.timer = time.NewTimer(max(r.grace, 0))
	o.graceC = o.timer.C
	msg := "old child draining"
	if why == "rejected" {
		msg = "stopping the rejected child"
	}
	attrs := []any{"pid", o.pid, "grace", max(r.grace, 0), "why", why}
	if sig != 0 {
		attrs = append(attrs, "signal", signalName(sig))
	}
	r.log.Info(msg, attrs...)
	r.emit(Event{Kind: Draining, Pid: o.pid, Reason: why, Signal: sig})
}

// oldGrace is the old child's grace timer, nil without one.
func (r *run) oldGrace() <-chan time.Time {
	if r.old == nil {
		return nil
	}
	return r.old.graceC
}

// oldExited follows the reaping of the old child: one child lives now.
func (r *run) oldExited() {
	o := r.old
	r.cleanUp(o, statusCode(o.status))
	var living *child
	if !r.cur.exited {
		living = &r.cur
	}
	r.sweep(o, living)
	r.old = nil
	switch r.phase {
	case draining:
		r.phase = running
		r.applyPending()
	case overlapping:
		// The serving child went on its own: what is left is a stop-first
		// restart whose new child is being judged.
		r.log.Warn("the serving child exited during the overlap; the new child is judged alone", "pid", o.pid, "new_pid", r.cur.pid)
		r.phase = verifying
	}
}

// curExitedFirst follows the reaping of the current child while the old
// one still lives.
func (r *run) curExitedFirst(code int) {
	if r.phase == overlapping {
		if r.s.Rollback {
			// The new child crashed: the rollback without a gap.
			r.rollBack(code, fmt.Sprintf("exit code %d", code))
			r.queued = nil
			r.cleanUp(&r.cur, code)
			r.sweep(&r.cur, r.old)
			r.cur, r.old = *r.old, nil
			r.phase = running
			r.rolledBackOver()
			r.applyPending()
			return
		}
		// Without Rollback a failed change ends Run, as in stop-first.
		r.cleanUp(&r.cur, code)
		r.sweep(&r.cur, r.old)
		r.cur, r.old = *r.old, nil
		r.phase = running
		r.exitCode = code
		r.stop(stopping, r.stopSig, fmt.Sprintf("the new child exited with %d", code))
		return
	}
	// The serving child exited by itself (or was stopped) while the other
	// one is on its way out: Run ends with its code once that one has
	// exited, as it would with one child. An old child still handing over
	// was not asked to stop yet.
	r.stopOld(r.stopSig, fmt.Sprintf("the serving child exited with %d", code))
	r.cleanUp(&r.cur, code)
	r.sweep(&r.cur, r.old)
	if r.exitCode < 0 {
		r.exitCode = code
	}
	r.cur, r.old = *r.old, nil
	r.phase = stopping
}
