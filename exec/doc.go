// Package exec runs the command paramexec fronts, in place (Replace) or as a child
// it restarts (stop-first or overlapping), judges ready and rolls back (Supervisor).
package exec
