package exec_test

import (
	"syscall"
	"testing"

	"github.com/paramexec/paramexec/exec"
)

func TestStatusCode(t *testing.T) {
	// Linux wait status: exit code in bits 8-15, terminating signal in 0-6.
	for _, tc := range []struct {
		ws   syscall.WaitStatus
		want int
	}{
		{0, 0},
		{42 << 8, 42},
		{255 << 8, 255},
		{syscall.WaitStatus(syscall.SIGKILL), 137},
		{syscall.WaitStatus(syscall.SIGTERM), 143},
		{syscall.WaitStatus(syscall.SIGSEGV) | 0x80, 139}, // with core dump
	} {
		if got := exec.StatusCode(tc.ws); got != tc.want {
			t.Errorf("StatusCode(%#x) = %d; want %d", uint32(tc.ws), got, tc.want)
		}
	}
}

func TestParseSignal(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want syscall.Signal
	}{
		{"TERM", syscall.SIGTERM},
		{"SIGTERM", syscall.SIGTERM},
		{"sigterm", syscall.SIGTERM},
		{"term", syscall.SIGTERM},
		{" HUP ", syscall.SIGHUP},
		{"15", syscall.SIGTERM},
		{"1", syscall.SIGHUP},
		{"QUIT", syscall.SIGQUIT},
		{"SIGUSR1", syscall.SIGUSR1},
		{"winch", syscall.SIGWINCH},
		{"KILL", syscall.SIGKILL},
		{"IOT", syscall.SIGABRT},
		{"CLD", syscall.SIGCHLD},
		{"POLL", syscall.SIGIO},
		{"RTMIN", 34},
		{"SIGRTMIN+3", 37},
		{"RTMAX", 64},
		{"rtmax-2", 62},
		{"64", 64},
	} {
		got, err := exec.ParseSignal(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSignal(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "0", "65", "-1", "SIG", "NOPE", "SIGTERMX", "RTMIN+31", "RTMAX-31", "RTMIN-1", "RTMAX+1", "RTMIN+x"} {
		if got, err := exec.ParseSignal(in); err == nil {
			t.Errorf("ParseSignal(%q) = %v; want an error", in, got)
		}
	}
}

func TestParseAction(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want exec.Action
		str  string
	}{
		{"restart", exec.Action{Kind: exec.Restart}, "restart"},
		{"exit", exec.Action{Kind: exec.Exit}, "exit"},
		{"EXIT", exec.Action{Kind: exec.Exit}, "exit"},
		{"signal:HUP", exec.Action{Kind: exec.Signal, Signal: syscall.SIGHUP}, "signal:SIGHUP"},
		{"signal:SIGUSR2", exec.Action{Kind: exec.Signal, Signal: syscall.SIGUSR2}, "signal:SIGUSR2"},
		{"signal:10", exec.Action{Kind: exec.Signal, Signal: syscall.SIGUSR1}, "signal:SIGUSR1"},
		{"signal:rtmin+1", exec.Action{Kind: exec.Signal, Signal: 35}, "signal:SIGRTMIN+1"},
	} {
		got, err := exec.ParseAction(tc.in)
		if err != nil || got != tc.want || got.String() != tc.str {
			t.Errorf("ParseAction(%q) = %v (%q), %v; want %v (%q)", tc.in, got, got.String(), err, tc.want, tc.str)
		}
	}
	for _, in := range []string{"", "reload", "signal", "signal:", "signal:NOPE", "restart:now", "exit:1", "signal:0"} {
		if got, err := exec.ParseAction(in); err == nil {
			t.Errorf("ParseAction(%q) = %v; want an error", in, got)
		}
	}
	if (exec.Action{}) != (exec.Action{Kind: exec.Restart}) {
		t.Error("the zero Action is not restart")
	}
}
