// Package exec runs the command paramexec fronts: in place (Replace), or as a
// supervised child restarted (stop-first or overlapping), signalled or stopped
// on change, judged ready and rolled back when a change breaks it (Supervisor).
//
// It knows nothing of where the environment comes from: callers hand it
// complete "K=V" lists. The Supervisor never waits for its child in a
// goroutine of its own: it learns of exits from the reaper it is given, so
// that a single loop owns wait4(-1) and orphans are reaped there too.
package exec
