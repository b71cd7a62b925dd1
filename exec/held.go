package exec

import (
	"os"
	"slices"
	"syscall"
)

// The one signal policy, for both restart modes:
//
//   - A terminating signal (SIGTERM, SIGINT) stops every child and starts
//     nothing more (see terminate).
//   - Job control (SIGTSTP, and a child stopped by the terminal) stops the
//     children's groups and then this process; SIGCONT continues them.
//   - Any other signal goes at once to the child that serves, if it is
//     ready (front), and is held, each signal once, while a child that is
//     to serve is not ready yet or not started yet (awaiting): a process
//     that has just been forked has no handlers, and a SIGHUP would kill
//     it. Held signals reach that child once it is ready (flushHeld).
//     Without Supervisor.Ready, a child is ready when it has started.
//     A retiring child gets none: the signal is meant for the program,
//     not for the process on its way out.
//   - Held signals that no child is left to take are dropped, and the log
//     says why (dropHeld): the serving child of an overlap had them
//     already when the candidate is rejected; nothing is to start when
//     stopping.

// signal handles one signal this process received (SIGCHLD aside, which
// the loop takes as a reason to reap).
func (m *core) signal(sig syscall.Signal) {
	defer m.after()
	switch {
	case terminates(sig):
		m.terminate(sig)
	case jobStop(sig):
		m.log.Info("job control: stopping the child, then this process", "signal", signalName(sig))
		for _, c := range m.kids {
			m.w.signalGroup(c.pid, sig)
		}
		m.w.stopSelf()
	case sig == syscall.SIGCONT:
		if c := m.cur(); c != nil {
			m.w.foreground(c.pid)
		}
		for _, c := range m.kids {
			m.w.signalGroup(c.pid, syscall.SIGCONT)
		}
	default:
		m.forward(sig)
	}
}

// childStopped takes a child stopped by a signal: stopped by job control
// (^Z in a terminal reaches the child's group, the foreground one), this
// process stops too, so that the shell that started it gets its prompt
// back; fg continues it (SIGCONT), and it continues the child.
func (m *core) childStopped(pid int, sig syscall.Signal) {
	if m.byPid(pid) == nil || !jobStop(sig) {
		return
	}
	m.log.Info("job control: the child was stopped; stopping too", "pid", pid, "signal", signalName(sig))
	m.w.stopSelf()
}

// jobStop reports whether sig is a job-control stop.
func jobStop(sig syscall.Signal) bool {
	return sig == syscall.SIGTSTP || sig == syscall.SIGTTIN || sig == syscall.SIGTTOU
}

// terminates reports whether sig, once forwarded, shuts the supervisor down:
// SIGTERM (docker stop, systemd, Kubernetes) and SIGINT.
func terminates(sig os.Signal) bool {
	return sig == syscall.SIGTERM || sig == syscall.SIGINT
}

// forward delivers sig to the child that serves, if it is ready, and
// holds it for the child that is to serve next.
func (m *core) forward(sig syscall.Signal) {
	name := signalName(sig)
	if m.phase == stopping || m.phase == ended {
		if len(m.kids) == 0 {
			m.log.Info("signal dropped: no child is left", "signal", name)
		}
		for _, c := range m.kids {
			m.log.Debug("forwarding signal", "pid", c.pid, "signal", name)
			m.signalChild(c, sig)
		}
		return
	}
	if f := m.front(); f != nil {
		m.log.Debug("forwarding signal", "pid", f.pid, "signal", name)
		m.signalChild(f, sig)
	}
	if !m.awaiting() {
		return
	}
	if slices.Contains(m.held, sig) {
		m.log.Debug("signal held already for the next child", "signal", name)
		return
	}
	m.held = append(m.held, sig)
	m.log.Debug("holding signal until the next child is ready", "signal", name)
}

// front is the child that takes signals now: the serving child once it
// is ready, or in verifying the candidate once it is ready. nil if none.
func (m *core) front() *child {
	if s := m.byRole(serving); s != nil {
		if s.ready {
			return s
		}
		return nil
	}
	if c := m.byRole(candidate); c != nil && c.ready && m.phase == verifying {
		return c
	}
	return nil
}

// awaiting reports whether a child that is to serve is not ready yet, or
// not started yet: signals are held for it.
func (m *core) awaiting() bool {
	switch m.phase {
	case restarting, rollingBack, overlapping:
		return true
	case stopping, ended:
		return false
	}
	return slices.ContainsFunc(m.kids, func(c *child) bool { return c.role != retiring && !c.ready })
}

// flushHeld delivers the held signals to the front child, once nothing
// is awaited any more.
func (m *core) flushHeld() {
	if len(m.held) == 0 || m.phase == stopping || m.phase == ended || m.awaiting() {
		return
	}
	f := m.front()
	if f == nil {
		return
	}
	for _, sig := range m.held {
		m.log.Debug("delivering held signal to the ready child", "pid", f.pid, "signal", signalName(sig))
		m.signalChild(f, sig)
	}
	m.held = nil
}

// dropHeld forgets the held signals, saying why.
func (m *core) dropHeld(reason string) {
	if len(m.held) == 0 {
		return
	}
	names := make([]string, len(m.held))
	for i, sig := range m.held {
		names[i] = signalName(sig)
	}
	m.log.Info("dropping held signals", "signals", names, "reason", reason)
	m.held = nil
}

// terminate handles a signal that ends the supervision. The first one asks
// the child to stop as the child wants to be asked, with StopSignal: docker
// stop, ECS and systemd send SIGTERM whatever the program's graceful stop
// is (nginx's is SIGQUIT), and ECS ignores an image's STOPSIGNAL. A child
// already sent StopSignal (a restart or a stop under way) gets nothing more
// for it. Every later one is forwarded as it is: a second ^C or SIGTERM
// during a stop says more than the first, as it would to the program run
// without paramexec. Once no child is left, it cuts the leftovers' grace
// period short.
func (m *core) terminate(sig syscall.Signal) {
	name := signalName(sig)
	if m.phase == ended {
		m.log.Info("terminating signal received; killing the leftovers now", "signal", name)
		for _, l := range m.left {
			l.kill(m.w)
		}
		m.terminated = true
		return
	}
	if m.terminated {
		m.log.Info("forwarding terminating signal", "pid", m.curPid(), "signal", name)
		for _, c := range m.kids {
			m.signalChild(c, sig)
		}
		return
	}
	m.terminated = true
	r := m.byRole(retiring)
	if m.phase == stopping || ((m.phase == restarting || m.phase == rollingBack) && !r.handingOver()) {
		m.log.Info("terminating signal received; the child is already stopping", "pid", m.curPid(), "signal", name)
	} else {
		m.log.Info("terminating signal received; asking the child to stop", "pid", m.curPid(), "signal", name, "stop_signal", signalName(m.cfg.stopSig))
	}
	m.stopAll("received " + name)
}

// stopAll stops for good: every child is asked to stop (the retiring one
// of a restart already was), and nothing starts any more. A stop under
// way is not restarted: its grace period keeps running.
func (m *core) stopAll(reason string) {
	if m.phase == stopping || m.phase == ended {
		return
	}
	prev := m.phase
	m.to(stopping)
	m.reason = reason
	m.dropHeld("the children are stopping")
	if prev == restarting || prev == rollingBack {
		c := m.kids[0]
		m.named = c
		m.log.Info(prev.String()+" abandoned; stopping", "pid", c.pid, "reason", reason)
		m.emit(Event{Kind: Stopping, Pid: c.pid, Reason: reason})
		if c.handingOver() {
			m.askToStop(c, c.heldSig)
		}
		return
	}
	named := m.cur()
	m.named = named
	for _, o := range slices.Clone(m.kids) {
		if o != named {
			m.drain(o, m.cfg.stopSig, reason)
		}
	}
	sig := m.cfg.stopSig
	m.log.Info("stopping child", "pid", named.pid, "reason", reason, "signal", signalName(sig))
	m.emit(Event{Kind: Stopping, Pid: named.pid, Reason: reason, Signal: sig})
	m.askToStop(named, sig)
}
