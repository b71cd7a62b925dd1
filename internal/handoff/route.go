package handoff

import "github.com/paramexec/paramexec/exec"

// route is the contract between the order of exec's events and the
// proxies: it reads the events as exec documents them (see exec.EventKind)
// and says, for each, where the proxies send new connections. It is the
// one place that knows that order; route_test.go replays the sequences
// exec emits for each path.
//
// The proxies send new connections to the serving child only once it is
// ready: exec emits Ready (the first child, or one a rollback restored) and
// Restarted (the child of a change) only after Supervisor.Ready, which
// with --proxy always includes a connect to the child's ports. They hold
// new connections from the moment a child is to stop until the next one
// is ready.
type route struct {
	overlap bool // exec.Overlap: Restarted switches from the old child
	serving int  // the child the proxies send to or hold for; 0 before the first
}

// move is what the proxies do on one event.
type move struct {
	to    int    // send new connections to this child (ready); 0: hold them
	left  int    // the child the proxies stop sending to; its connections drain
	which string // left, as the log names it
	// handover: the connections sent to left must be answered before it
	// gets its stop signal (exec then calls Supervisor.Handover).
	handover bool
}

// next is the move for e, or false when the proxies stay as they are.
func (r *route) next(e exec.Event) (move, bool) {
	switch e.Kind {
	case exec.Ready:
		// Stop-first: the first child, or one a rollback restored after the
		// failed child was stopped. Overlap: the same, or the old child
		// serving on after a rejected change, which is followed already.
		if r.overlap && e.Pid == r.serving {
			return move{}, false
		}
		return r.sendTo(e.Pid, false), true
	case exec.Restarted:
		// The child of a change, ready. Stop-first: the old one has
		// exited, the proxies hold (RestartBegun). Overlap: the old one
		// serves until now and gets its stop signal after Handover.
		if e.Pid == r.serving {
			return move{}, false
		}
		return r.sendTo(e.Pid, r.overlap), true
	case exec.RestartBegun:
		// Stop-first only: the serving child gets its stop signal after
		// Handover; hold from now on.
		return r.hold(e.Pid, "old child", true), true
	case exec.Stopping:
		// Whichever child the stop names, the proxies follow the serving
		// one (in an overlap, the old child): hold from now on.
		pid := e.Pid
		if r.overlap {
			pid = r.serving
		}
		return r.hold(pid, "child", false), true
	case exec.Exited:
		// The serving child exited on its own during an overlap, before
		// the new child is ready: hold for the next child rather than
		// send to a dead port. (Stop-first: held already.)
		if r.overlap && e.Pid == r.serving {
			return r.hold(e.Pid, "exited child", false), true
		}
	}
	return move{}, false
}

func (r *route) sendTo(pid int, handover bool) move {
	m := move{to: pid, left: r.serving, which: "old child", handover: handover}
	r.serving = pid
	return m
}

func (*route) hold(pid int, which string, handover bool) move {
	return move{left: pid, which: which, handover: handover}
}
