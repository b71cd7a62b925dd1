// Package signals sets a supervising process up to receive the signals it
// must relay to its child, and reaps every child it is left with, orphans too.
package signals

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// Signals a supervisor must not relay, and why:
//
//   - SIGKILL, SIGSTOP cannot be caught.
//   - SIGURG is the Go runtime's goroutine preemption signal: the runtime sends
//     it to itself all the time, so relaying it would flood the child.
//   - SIGPROF drives the runtime's CPU profiler; it is about this process only.
//   - SIGPIPE is raised by the kernel for this process's own writes to a broken
//     pipe or socket (an AWS connection, say); relaying it would kill a child
//     that did nothing wrong. Writes return EPIPE; a supervising paramexec
//     also catches it (logsink.CatchSIGPIPE) so a broken stderr cannot end it.
//   - SIGTTIN, SIGTTOU are job control: the kernel raises them when a process
//     in a background group uses the terminal, which the supervisor is
//     whenever its child owns the foreground. Catching them would loop (the
//     system call is restarted after the handler and raises the signal again),
//     and ignoring them would leak into every child, which inherits ignored
//     dispositions across exec. They keep their default.
//     (^Z in a terminal reaches the child's group, the foreground one: the
//     supervisor sees its child stopped and stops itself; see
//     docs/signals.md.)
//   - SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGSYS, SIGXCPU,
//     SIGXFSZ report faults or resource limits of this very process; as tini
//     does, they keep their meaning (a crash with a stack trace) here.
//   - 32 and 33 are used by the C library of the child for thread cancellation
//     and set*id; glibc's real-time range starts at 34.
//
// Everything else is relayed (SIGTSTP and SIGCONT as job control: the
// supervisor stops and continues its children's groups and itself):
// SIGHUP, SIGINT, SIGQUIT (whose Go default would
// dump this process's goroutines and exit), SIGUSR1, SIGUSR2, SIGALRM,
// SIGTERM, SIGSTKFLT, SIGCONT, SIGTSTP, SIGVTALRM, SIGWINCH, SIGIO, SIGPWR,
// the real-time signals 34–64, and SIGCHLD, which is the reap trigger and is
// never relayed.
var relayed = func() []os.Signal {
	sigs := []os.Signal{
		syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR1,
		syscall.SIGUSR2, syscall.SIGALRM, syscall.SIGTERM, syscall.SIGSTKFLT,
		syscall.SIGCHLD, syscall.SIGCONT, syscall.SIGTSTP, syscall.SIGVTALRM,
		syscall.SIGWINCH, syscall.SIGIO, syscall.SIGPWR,
	}
	for n := 34; n <= 64; n++ {
		sigs = append(sigs, syscall.Signal(n))
	}
	return sigs
}()

// Notify relays to c every signal a supervisor must handle (see relayed),
// except those this process was started with ignored: a supervisor run under
// nohup, or as a background job of a non-interactive shell, leaves SIGHUP or
// SIGINT ignored so that its child inherits the same. c should be buffered
// generously (the signal package drops what does not fit); a lost SIGCHLD
// only delays reaping until the caller's next Reap.
// The returned stop restores the previous handling.
func Notify(c chan<- os.Signal) (stop func()) {
	var sigs []os.Signal
	for _, sig := range relayed {
		if !signal.Ignored(sig) {
			sigs = append(sigs, sig)
		}
	}
	signal.Notify(c, sigs...)
	return func() { signal.Stop(c) }
}

// Reap collects every exited child of this process without blocking and calls
// onExit for each: the supervised child and orphans handed to this process
// alike. It returns when no exited child is left (none running, ECHILD, or
// some still running). Stopped children are not reported.
//
// Reap takes every child, so nothing else in the process may wait for its own
// children (os/exec's Cmd.Wait would fail with ECHILD); call it from the one
// goroutine that owns child processes.
func Reap(onExit func(pid int, status syscall.WaitStatus)) {
	for {
		var ws syscall.WaitStatus
		// __WALL also takes orphans created by clone with an exit signal other
		// than SIGCHLD, which a plain wait never reports.
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG|unix.WALL, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if onExit != nil {
			onExit(pid, ws)
		}
	}
}

// SetSubreaper marks this process a child subreaper, as tini -s does: orphaned
// descendants are reparented to it instead of to PID 1, so Reap collects them.
// PID 1 needs no such mark. The mark survives execve, so call it only when
// staying the parent, not before replacing this process.
func SetSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl PR_SET_CHILD_SUBREAPER: %w", err)
	}
	return nil
}
