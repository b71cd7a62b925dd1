package exec

import (
	"slices"
	"strings"
	"time"
)

// change takes a new environment: see Action for what each kind does.
func (m *core) change(c Change) {
	defer m.after()
	if c.Reload != 0 {
		m.reload(c)
		return
	}
	restart := m.cfg.onChange.Kind == Restart
	switch {
	case m.phase == stopping || m.phase == ended:
		m.log.Debug("change ignored: the child is stopping", "reason", c.Reason)
		return
	case restart && m.rejected[hashEnv(c.Env)]:
		// Only a different set of values is worth a try: the same one
		// failed already, and would fail the same way on every poll.
		m.log.Info("change ignored: environment was rejected", "reason", c.Reason)
		return
	case m.phase == restarting:
		if m.reject(c) {
			return
		}
		m.next = slices.Clone(c.Env)
		m.addReason(c.Reason)
		m.log.Info("change joins the restart under way", "reason", c.Reason)
		return
	case restart && m.phase != running:
		m.hold(c)
		return
	case restart && hashEnv(c.Env) == m.byRole(serving).hash:
		// A change back to the values running now, after a rollback.
		m.log.Info("no change: the child runs with this environment already", "reason", c.Reason)
		return
	}
	if m.cfg.onChange.Kind != Signal && m.reject(c) {
		return
	}
	switch m.cfg.onChange.Kind {
	case Restart:
		m.next = slices.Clone(c.Env)
		m.reason, m.begun = "", m.w.now()
		if !m.pendingAt.IsZero() {
			m.begun, m.pendingAt = m.pendingAt, time.Time{}
		}
		m.addReason(c.Reason)
		if m.cfg.restart == Overlap {
			m.overlap()
			return
		}
		m.restartStopFirst()
	case Exit:
		m.stopAll(c.Reason)
	case Signal:
		m.log.Info("signalling child to reload", "pid", m.curPid(), "signal", signalName(m.cfg.onChange.Signal), "reason", c.Reason)
		m.forward(m.cfg.onChange.Signal)
	}
}

// reload passes c's signal on as a forwarded signal: at once to a ready
// child, held for one that is to serve and is not ready yet (which may
// have read the files before they changed). Nothing is restarted or
// judged: the environment has not changed.
func (m *core) reload(c Change) {
	if m.phase == stopping || m.phase == ended {
		m.log.Debug("reload ignored: the child is stopping", "reason", c.Reason)
		return
	}
	m.log.Info("signalling child to reload", "pid", m.curPid(), "signal", signalName(c.Reload), "reason", c.Reason)
	m.forward(c.Reload)
}

// hold keeps c until one child is ready: what the child not yet ready
// (or a rollback under way) is to be judged on must not move. The newest
// change waits.
func (m *core) hold(c Change) {
	if m.pending != nil {
		c.Reason = joinReasons(m.pending.Reason, c.Reason)
	} else {
		m.pendingAt = m.w.now()
	}
	m.pending = &Change{Env: slices.Clone(c.Env), Reason: c.Reason}
	m.log.Info("change held until the child is ready", "pid", m.curPid(), "state", m.phase.String(), "reason", c.Reason)
}

// reject reports whether the environment of c cannot start the command,
// and logs why (names and sizes, never values). It is checked before the
// child is touched: stopping a working child for an environment that
// cannot exec (over execve's limits, or a PATH that no longer leads to the
// command) would take the service down. The child keeps running and the
// environment is dropped; a later change is checked afresh.
func (m *core) reject(c Change) bool {
	err := m.w.checkStart(c.Env)
	if err == nil {
		return false
	}
	pid := m.curPid()
	m.log.Error("new environment rejected; the child keeps running with its current one", "pid", pid, "reason", c.Reason, "error", err)
	m.emit(Event{Kind: Rejected, Pid: pid, Reason: c.Reason + ": " + err.Error()})
	return true
}

func (m *core) addReason(reason string) { m.reason = joinReasons(m.reason, reason) }

func joinReasons(a, b string) string {
	switch {
	case b == "" || strings.Contains(a, b):
		return a
	case a == "":
		return b
	}
	return a + "; " + b
}

// restartStopFirst asks the serving child to stop for a change (after its
// handover, if any); the candidate starts once it has exited.
func (m *core) restartStopFirst() {
	c := m.byRole(serving)
	m.setRole(c, retiring)
	m.to(restarting)
	sig := m.cfg.stopSig
	m.log.Info("restart begun", "pid", c.pid, "reason", m.reason, "signal", signalName(sig))
	// Reported before the stop signal: a proxy holds new connections
	// from now on, rather than send them to a child that stops accepting.
	m.emit(Event{Kind: RestartBegun, Pid: c.pid, Reason: m.reason, Signal: sig})
	if !m.holdStop(c, sig) {
		m.askToStop(c, sig)
	}
}

// launch starts a child with env in role r, and moves to phase p.
func (m *core) launch(env []string, r role, p phase) (*child, error) {
	pid, tick, err := m.w.start(env)
	if err != nil {
		return nil, err
	}
	m.to(p)
	return m.adopt(pid, tick, env, r), nil
}

// adopt records a child just started, with its readiness check and, for a
// candidate, its rollback window.
func (m *core) adopt(pid int, tick uint64, env []string, r role) *child {
	m.gen++
	now := m.w.now()
	c := &child{gen: m.gen, pid: pid, tick: tick, env: env, hash: hashEnv(env), role: r, started: now}
	m.kids = append(m.kids, c)
	if !m.cfg.checked {
		c.ready, c.readyAt = true, now
	} else {
		c.readyBy = now.Add(m.cfg.readyTimeout + readySlack)
		c.cancel = m.w.checkReady(c.gen, c.pid)
	}
	if r == candidate && m.cfg.window > 0 {
		c.liveBy = now.Add(m.cfg.window)
	} else {
		c.lived = true
	}
	return c
}

// startCandidate starts the child of a change once the old one has
// exited (stop-first).
func (m *core) startCandidate() {
	if _, err := m.launch(m.next, candidate, verifying); err != nil {
		m.fail(err)
		return
	}
	m.settle()
}

// restore starts a child with the last good environment after a rollback.
func (m *core) restore() {
	if _, err := m.launch(m.good, serving, starting); err != nil {
		m.fail(err)
		return
	}
	m.settle()
}

// rollBack records that candidate c failed (code: its exit code, or -1
// when it did not exit by itself): its environment is rejected for good,
// and the last good one is to serve.
func (m *core) rollBack(c *child, code int, failure string) {
	names := changedNames(m.good, c.env)
	m.rejected[c.hash] = true
	attrs := []any{"pid", c.pid, "changed", names, "after", m.w.now().Sub(c.started).Round(time.Millisecond)}
	if code >= 0 {
		attrs = append(attrs, "exit_code", code)
	} else {
		attrs = append(attrs, "not_ready", strings.TrimPrefix(failure, "not ready: "))
	}
	m.log.Error("change rejected; rolling back", attrs...)
	m.rolledAt = m.w.now()
	m.emit(Event{Kind: RolledBack, Pid: c.pid, Code: code, Changed: names, Reason: failure})
}

// applyPending applies the change held while no child was ready, or while
// two children lived; not while an exit reaped in the same pass is still
// to be taken.
func (m *core) applyPending() {
	p := m.pending
	if p == nil || slices.ContainsFunc(m.kids, func(c *child) bool { return c.exited }) {
		return
	}
	m.pending = nil
	m.change(*p)
	// Used as the restart's begun if it restarted; a change dropped
	// (rejected, or no change) must not date the next one.
	m.pendingAt = time.Time{}
}

// notReady takes a failed readiness check of c.
func (m *core) notReady(c *child, err error) {
	if c.role == candidate && m.cfg.rollback {
		m.rollBack(c, -1, "not ready: "+err.Error())
		if m.phase == overlapping {
			m.dropCandidate(c)
			return
		}
		m.setRole(c, retiring)
		m.to(rollingBack)
		m.log.Info("stopping the rejected child", "pid", c.pid, "reason", "not ready", "signal", signalName(m.cfg.stopSig))
		m.askToStop(c, m.cfg.stopSig)
		return
	}
	m.log.Error("child not ready in time; stopping it", "pid", c.pid, "after", m.w.now().Sub(c.started).Round(time.Millisecond), "error", err)
	m.exitCode = exitNotReady
	m.stopAll("not ready within " + m.cfg.readyTimeout.String())
}

// answered takes Ready's answer about the child of gen.
func (m *core) answered(gen int, err error) {
	defer m.after()
	c := m.byGen(gen)
	if c == nil || c.exited || c.ready || !c.checking() {
		return // about an earlier child, or answered already
	}
	c.endCheck()
	if c.role == retiring || m.phase == stopping {
		return // the child is stopping: its readiness no longer matters
	}
	if err != nil {
		m.notReady(c, err)
		return
	}
	c.ready, c.readyAt = true, m.w.now()
	m.settle()
}
