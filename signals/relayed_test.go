package signals

import (
	"os"
	"slices"
	"syscall"
	"testing"
)

func TestRelayed(t *testing.T) {
	for _, sig := range []os.Signal{syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP,
		syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGTSTP,
		syscall.SIGCONT, syscall.SIGALRM, syscall.SIGPWR, syscall.Signal(34), syscall.Signal(64)} {
		if !slices.Contains(relayed, sig) {
			t.Errorf("%v not relayed", sig)
		}
	}
	for _, sig := range []os.Signal{syscall.SIGKILL, syscall.SIGSTOP, syscall.SIGURG, syscall.SIGPROF,
		syscall.SIGPIPE, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGSEGV, syscall.SIGBUS,
		syscall.SIGFPE, syscall.SIGILL, syscall.SIGABRT, syscall.SIGTRAP, syscall.SIGSYS,
		syscall.Signal(32), syscall.Signal(33)} {
		if slices.Contains(relayed, sig) {
			t.Errorf("%v relayed", sig)
		}
	}
}
