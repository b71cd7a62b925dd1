package exec

import (
	"fmt"
	"os/signal"
	"syscall"
	"unsafe"
)

// Replace executes argv in place of this process (execve), with env exactly
// as the new program's environment and argv[0] looked up with LookPath in
// env's PATH. It returns only on failure, with an error for ExitCode.
//
// Caught signals need nothing: execve resets every handler to its default.
// Ignored signals survive exec, so those ignored with signal.Ignore get their
// default back. SIGHUP and SIGINT are the exception: ignored, they may have
// been inherited so (nohup, a background job of a script), and pass on as
// they came. On failure the process is left so; the caller is expected to
// exit.
//
// os/signal's Reset is not called: execve does its work for free, while
// Reset makes a round trip to the runtime's signal-mask thread for every
// signal ever registered, which measured as most of paramexec's start-up
// overhead over a bare SDK program.
func Replace(argv, env []string) error {
	if len(argv) == 0 {
		return fmt.Errorf("exec: empty command: %w", errNotFound)
	}
	path, err := LookPath(argv[0], env)
	if err != nil {
		return err
	}
	for sig := syscall.Signal(1); sig <= sigRTMax; sig++ {
		if sig != syscall.SIGHUP && sig != syscall.SIGINT && signal.Ignored(sig) {
			setDefault(sig)
		}
	}
	return startError(path, argv, env, syscall.Exec(path, argv, env))
}

// setDefault sets sig's disposition to SIG_DFL behind the Go runtime's back,
// which os/signal cannot do for an ignored signal (Reset leaves it ignored).
// Only right before exec, where the runtime's view no longer matters.
func setDefault(sig syscall.Signal) {
	// An all-zero struct sigaction is SIG_DFL with no flags and an empty
	// mask, whatever the architecture's field order.
	var act [4]uint64
	syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&act)), 0, 8, 0, 0)
}
