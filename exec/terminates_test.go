package exec

import (
	"os"
	"syscall"
	"testing"
)

func TestTerminates(t *testing.T) {
	for sig, want := range map[os.Signal]bool{
		syscall.SIGTERM: true, syscall.SIGINT: true, os.Interrupt: true,
		syscall.SIGHUP: false, syscall.SIGQUIT: false, syscall.SIGCHLD: false, syscall.SIGUSR1: false,
	} {
		if got := terminates(sig); got != want {
			t.Errorf("terminates(%v) = %v; want %v", sig, got, want)
		}
	}
}
