package exec

import (
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// foregroundTTY returns the descriptor of stdin if it is a terminal whose
// foreground process group is this process's: only then may the child take
// the terminal over (an interactive shell needs it to read and to get ^C).
// A supervisor started in the background must not steal the terminal from
// the shell that put it there.
func foregroundTTY(stdin int) (int, bool) {
	pgrp, err := unix.IoctlGetInt(stdin, unix.TIOCGPGRP)
	if err != nil || pgrp != unix.Getpgrp() {
		return -1, false
	}
	return stdin, true
}

// takeForeground gives the terminal back to this process's group when the
// child that owned it is gone, so the shell or whoever waits for us finds it
// as it left it.
func takeForeground(tty int) error {
	// This process is in a background group now: changing the foreground
	// group would raise SIGTTOU and stop it, unless SIGTTOU is blocked. Block
	// it on this thread only rather than ignoring it process-wide, which
	// children would inherit.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var set, old unix.Sigset_t
	sigaddset(&set, syscall.SIGTTOU)
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, &old); err != nil {
		return err
	}
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	return unix.IoctlSetPointerInt(tty, unix.TIOCSPGRP, unix.Getpgrp())
}

func sigaddset(set *unix.Sigset_t, sig syscall.Signal) {
	n := uint(sig - 1)
	set.Val[n/64] |= 1 << (n % 64)
}
