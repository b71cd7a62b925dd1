package exec

import (
	"fmt"
	"slices"
)

// phase names the state of a run. Every transition goes through
// core.to, which checks it against transitions; readiness answers, timers
// and exits come to the core on its one goroutine.
type phase int

const (
	// starting: one child, serving, not yet ready; its failure ends Run:
	// the first child, or the one with the last good environment after a
	// rollback (that environment no longer working is not the change's
	// fault; the orchestrator is better placed to act).
	starting phase = iota + 1
	// running: one child, serving and ready; a change restarts it.
	running
	// restarting (stop-first): one child, retiring: asked to stop for a
	// change (after its handover, if any); the candidate starts once it
	// has exited.
	restarting
	// verifying: one child, the candidate of a change, not yet ready or
	// not yet past RollbackWindow; its failure is a rollback.
	verifying
	// rollingBack: one child, the rejected candidate, retiring; the last
	// good environment starts once it has exited.
	rollingBack
	// overlapping (Overlap): the serving child serves, the candidate is
	// judged; its failure is a rollback without a gap.
	overlapping
	// draining (Overlap): the serving child serves (the candidate that
	// took over, or the old one again after a rejection); the other one is
	// retiring. Changes are held until it has exited.
	draining
	// stopping: every child was asked to stop; nothing starts any more.
	stopping
	// ended: no child lives; Run returns once the leftovers are gone.
	ended
)

var phaseNames = map[phase]string{
	starting: "starting", running: "running", restarting: "restarting",
	verifying: "verifying", rollingBack: "rolling back", overlapping: "overlapping",
	draining: "draining", stopping: "stopping", ended: "ended",
}

func (p phase) String() string {
	if n, ok := phaseNames[p]; ok {
		return n
	}
	return fmt.Sprintf("phase(%d)", int(p))
}

// transitions lists the legal edges; docs/architecture.md shows the same
// table (a test checks that they agree). Anything else is a bug.
var transitions = map[phase][]phase{
	starting:    {running, stopping, ended},
	running:     {restarting, overlapping, stopping, ended},
	restarting:  {verifying, stopping, ended},
	verifying:   {running, rollingBack, starting, stopping, ended},
	rollingBack: {starting, stopping, ended},
	overlapping: {draining, running, verifying, stopping},
	draining:    {running, stopping},
	stopping:    {ended},
	ended:       nil,
}

// legal reports whether from → to is an edge of transitions.
func legal(from, to phase) bool {
	return slices.Contains(transitions[from], to)
}

// role says what a child is for. A child's role only moves forward
// (candidate → serving, candidate → retiring, serving → retiring); the
// names never swap meaning.
type role int

const (
	// serving: the child that serves, or is to serve with nothing to fall
	// back on (the first child, a restored one): its failure ends Run.
	serving role = iota + 1
	// candidate: started for a change and being judged; its failure is a
	// rollback.
	candidate
	// retiring: replaced or rejected; handing over, or asked to stop.
	retiring
)

func (r role) String() string {
	switch r {
	case serving:
		return "serving"
	case candidate:
		return "candidate"
	case retiring:
		return "retiring"
	}
	return fmt.Sprintf("role(%d)", int(r))
}

// roleEdges are the legal moves of a child's role.
var roleEdges = map[role][]role{
	serving:   {retiring},
	candidate: {serving, retiring},
	retiring:  nil,
}
