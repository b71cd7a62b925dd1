package exec

import (
	"slices"
)

// sweep follows the reaping of child gone: what it left outside its
// process group (setsid daemons, double-forked helpers) is found among
// this process's descendants, where a subreaper or PID 1 has them. With no
// other child living (stop-first: the old child gone, no new one started
// yet), every descendant belongs to the generation that just ended. They
// get the stop signal (and SIGCONT, if stopped) now and
// SIGKILL after the grace period, while the new child runs: a restart
// replaces the whole generation, long-lived daemons included.
//
// With another child living (an overlap), a process that started after
// the living child did may be the living one's (its own descendants, or a
// daemon it left its group for) as well as the ended one's: nothing tells
// them apart, so it is left alone, and swept with the living generation
// when that one ends, or at exit. What started before the living child is
// the ended generation's (or an earlier one's) for sure.
func (m *core) sweep(gone, living *child) {
	procs := m.w.descendantsOutside(gone.pid)
	if living != nil {
		procs = slices.DeleteFunc(procs, func(p proc) bool { return living.tick == 0 || p.start >= living.tick })
		m.log.Debug("sweep with a child living: what started after it is left to its generation", "pid", gone.pid, "living", living.pid)
	}
	if len(procs) == 0 {
		return
	}
	now := m.w.now()
	grace := m.cfg.grace
	deadline := now.Add(grace)
	if (m.phase == stopping || m.phase == ended) && !m.stopBy.IsZero() && m.stopBy.Before(deadline) {
		// Stopping for good, the grace is the stop's, for the whole
		// generation: an orchestrator's own timeout (docker stop's 10 s)
		// is counted from the same signal.
		deadline = m.stopBy
		grace = max(deadline.Sub(now), 0)
	}
	l := leftovers{procs: procs, deadline: deadline}
	m.log.Info("stopping what the child left outside its process group", "pids", l.pids(), "signal", signalName(m.cfg.stopSig), "grace", grace)
	for _, p := range procs {
		m.w.signalProc(p, m.cfg.stopSig)
		m.w.continueStopped(p.pid, false)
	}
	m.left = append(m.left, l)
	slices.SortStableFunc(m.left, func(a, b leftovers) int { return a.deadline.Compare(b.deadline) })
	if m.terminated && m.phase == ended {
		l.kill(m.w)
	}
}

// killLeftovers SIGKILLs the leftovers whose grace period is over.
func (m *core) killLeftovers() {
	now := m.w.now()
	for len(m.left) > 0 && !m.left[0].deadline.After(now) {
		l := m.left[0]
		m.left = m.left[1:]
		if l.prune(m.w) {
			m.log.Warn("leftovers still running after the grace period; killing them", "pids", l.pids())
			l.kill(m.w)
		}
	}
}

// pruneLeftovers forgets the leftovers that have exited (once no child
// lives, Run returns when none is left).
func (m *core) pruneLeftovers() {
	for i := range m.left {
		m.left[i].prune(m.w)
	}
	m.left = slices.DeleteFunc(m.left, func(l leftovers) bool { return len(l.procs) == 0 })
}
