package exec

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// statusCode is the exit code a shell reports for a waited-for process: its
// exit status, or 128+N when signal N killed it.
func statusCode(ws syscall.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	default:
		// Stopped or continued is not an exit; Reap never reports it.
		return 1
	}
}

// Linux real-time signals as the C library numbers them (it keeps 32 and 33).
const (
	sigRTMin = 34
	sigRTMax = 64
)

// ParseSignal parses a signal given by name, with or without the SIG prefix
// and in any case ("TERM", "SIGTERM", "sigterm"), as RTMIN+N / RTMAX-N, or by
// number ("15").
func ParseSignal(name string) (syscall.Signal, error) {
	s := strings.ToUpper(strings.TrimSpace(name))
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > sigRTMax {
			return 0, fmt.Errorf("signal %q: number out of range 1-%d", name, sigRTMax)
		}
		return syscall.Signal(n), nil
	}
	s = strings.TrimPrefix(s, "SIG")
	switch s {
	case "IOT":
		s = "ABRT"
	case "POLL":
		s = "IO"
	case "CLD":
		s = "CHLD"
	}
	if sig, ok := parseRealtime(s); ok {
		return sig, nil
	}
	if sig := unix.SignalNum("SIG" + s); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", name)
}

func parseRealtime(s string) (syscall.Signal, bool) {
	base, sign, rest := 0, 0, ""
	switch {
	case strings.HasPrefix(s, "RTMIN"):
		base, sign, rest = sigRTMin, 1, s[len("RTMIN"):]
	case strings.HasPrefix(s, "RTMAX"):
		base, sign, rest = sigRTMax, -1, s[len("RTMAX"):]
	default:
		return 0, false
	}
	off := 0
	if rest != "" {
		op := "+"
		if sign < 0 {
			op = "-"
		}
		n, err := strconv.Atoi(strings.TrimPrefix(rest, op))
		if !strings.HasPrefix(rest, op) || err != nil || n < 0 {
			return 0, false
		}
		off = n
	}
	sig := base + sign*off
	if sig < sigRTMin || sig > sigRTMax {
		return 0, false
	}
	return syscall.Signal(sig), true
}

// signalName names sig for logs and flags: "SIGTERM", "SIGRTMIN+2", "signal 99".
func signalName(sig syscall.Signal) string {
	if name := unix.SignalName(sig); name != "" {
		return name
	}
	if sig >= sigRTMin && sig <= sigRTMax {
		return "SIGRTMIN+" + strconv.Itoa(int(sig)-sigRTMin)
	}
	return "signal " + strconv.Itoa(int(sig))
}

// ActionKind is what the supervisor does when the environment changes.
type ActionKind int

const (
	// Restart stops the child and starts a new one with the new environment.
	// It is the zero value, and paramexec's default.
	Restart ActionKind = iota
	// Exit stops the child and returns its exit code, for an outer restart
	// policy (Docker's --restart always, Kubernetes, systemd Restart=always)
	// to start paramexec afresh.
	Exit
	// Signal sends Action.Signal to the child, which reloads by itself; the
	// new environment cannot reach a running process, so this suits children
	// that re-read their configuration from elsewhere.
	Signal
)

func (k ActionKind) String() string {
	switch k {
	case Restart:
		return "restart"
	case Exit:
		return "exit"
	case Signal:
		return "signal"
	}
	return "ActionKind(" + strconv.Itoa(int(k)) + ")"
}

// Action is a parsed --on-change value.
type Action struct {
	Kind   ActionKind
	Signal syscall.Signal // for Kind Signal
}

func (a Action) String() string {
	if a.Kind == Signal {
		return "signal:" + signalName(a.Signal)
	}
	return a.Kind.String()
}

// ParseAction parses "restart", "exit" or "signal:NAME" (NAME as for
// ParseSignal).
func ParseAction(s string) (Action, error) {
	kind, arg, hasArg := strings.Cut(strings.TrimSpace(s), ":")
	switch strings.ToLower(kind) {
	case "restart":
		if !hasArg {
			return Action{Kind: Restart}, nil
		}
	case "exit":
		if !hasArg {
			return Action{Kind: Exit}, nil
		}
	case "signal":
		if !hasArg || arg == "" {
			return Action{}, fmt.Errorf("on-change %q: want signal:NAME, such as signal:HUP", s)
		}
		sig, err := ParseSignal(arg)
		if err != nil {
			return Action{}, fmt.Errorf("on-change %q: %w", s, err)
		}
		return Action{Kind: Signal, Signal: sig}, nil
	}
	return Action{}, fmt.Errorf("on-change %q: want restart, exit or signal:NAME", s)
}
