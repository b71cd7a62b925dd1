package exec

import (
	"fmt"
	"syscall"
	"time"
)

// A Change asks the supervisor to apply a new environment.
type Change struct {
	Env []string // the complete environment for the child
	// Reason names what changed for the logs, never values:
	// "DB_PASSWORD changed".
	Reason string
	// Reload, when not 0, says the change reached the child by other means
	// than Env (files it re-reads): the child gets this signal, as it would
	// any forwarded signal, and keeps running; Env is not acted on.
	Reload syscall.Signal
}

// EventKind says what happened to the supervised child.
type EventKind int

const (
	// Started: the first child has started.
	Started EventKind = iota + 1
	// RestartBegun: a change asked for a restart; the stop signal follows
	// (at once, or after Handover).
	RestartBegun
	// Restarted: the new child of a restart has started and passed its
	// verification: Supervisor.Ready said it is ready, and it has lived
	// RollbackWindow. Without either, that is when it started.
	Restarted
	// Stopping: the child was asked to stop for good (terminating signal,
	// OnChange Exit, ctx done), or a restart under way became a stop.
	Stopping
	// Killed: the grace period ran out; the child's process group got SIGKILL.
	Killed
	// Exited: a child has exited, the old one of a restart as well as the
	// last one, after which Run returns.
	Exited
	// Rejected: a change's environment cannot start the command (too large
	// for execve, or the command not found with its PATH); the child keeps
	// running. Reason says why, with names and sizes only.
	Rejected
	// Ready: a child whose failure ends Run (the first one, or the one
	// started with the last good environment after a rollback) is ready.
	// Without Supervisor.Ready it follows Started at once.
	Ready
	// RolledBack: the child started for a change failed; Changed names
	// what that change had changed, Reason says how it failed. A child with
	// the last good environment starts next (Ready when it is ready); in
	// Overlap, the old child serves on (Ready, Reason "rolled back").
	RolledBack
	// OverlapBegun (Overlap): the new child of a change has started while
	// the old one serves; Pid is the new one.
	OverlapBegun
	// Draining (Overlap): the old child was sent the stop signal, after
	// the new one became current (Restarted) or was rejected (RolledBack);
	// Pid is the old one, which has Grace to finish.
	Draining
)

func (k EventKind) String() string {
	switch k {
	case Started:
		return "started"
	case RestartBegun:
		return "restart begun"
	case Restarted:
		return "restarted"
	case Stopping:
		return "stopping"
	case Killed:
		return "killed"
	case Exited:
		return "exited"
	case Rejected:
		return "rejected"
	case Ready:
		return "ready"
	case RolledBack:
		return "rolled back"
	case OverlapBegun:
		return "overlap begun"
	case Draining:
		return "draining"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// RestartMode says how a change replaces the child.
type RestartMode int

const (
	// StopFirst stops the old child, then starts the new one.
	StopFirst RestartMode = iota
	// Overlap starts the new child while the old one serves, and stops the
	// old one once the new one is ready (Supervisor.Ready, required).
	Overlap
)

// Event reports a step of the child's lifecycle to Supervisor.OnEvent.
type Event struct {
	Kind EventKind
	Pid  int // the child concerned; for Restarted, the new one
	// Took, for Restarted: from the change that asked for it to the new
	// child being ready; for Ready after a rollback, from the decision to
	// roll back to the restored child being ready.
	Took time.Duration
	// Gap, for Restarted: from the old child's exit to the new child's
	// start, the time nothing ran; 0 in Overlap.
	Gap time.Duration
	// ReadyAfter, for Ready and Restarted: from the child's start to its
	// being ready; 0 without Supervisor.Ready.
	ReadyAfter time.Duration
	Reason     string         // RestartBegun, Restarted, Stopping, RolledBack: why
	Signal     syscall.Signal // RestartBegun, Stopping: the signal sent, 0 if none was
	Code       int            // Exited: the child's code as a shell reports it (128+n for signal n); RolledBack: the failed child's, -1 if it did not exit by itself
	Changed    []string       // RolledBack: the variables the rejected change had changed, names only
}
