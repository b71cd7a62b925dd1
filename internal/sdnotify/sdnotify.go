// How main wires this package (it knows nothing of the supervisor):
//
// systemd sets NOTIFY_SOCKET for a Type=notify unit and, with
// NotifyAccess=main, accepts messages from the main PID only: paramexec,
// which must therefore stay the parent (--interval or --init). Replacing
// itself with the command (exec.Replace) sends nothing and leaves
// NOTIFY_SOCKET to the command, which has become the main PID and may speak
// the protocol itself. When supervising, main:
//
//   - creates the Notifier from NOTIFY_SOCKET and removes NOTIFY_SOCKET from
//     the child's environment, so the child cannot report a readiness that
//     paramexec owns (its messages would be dropped with a warning anyway);
//     with --ready notify the child gets a Receiver's socket instead;
//   - sets Supervisor.OnEvent to map events onto the protocol:
//     Started → Status, Ready (the child is ready; at its start without
//     --ready) → Ready, RestartBegun → Reloading, Restarted → Ready,
//     Stopping → Stopping, RolledBack, Killed and Exited → Status;
//   - may report Status during start-up retries and after poll failures.
//
// Status texts name things (variables, parameters, the command, AWS error
// codes), never values: systemctl status shows them to anyone on the host.
// A failed notification is logged at debug level and otherwise ignored:
// systemd's start timeout is the safety net, not paramexec's exit.

// Package sdnotify tells systemd what paramexec is doing, through the
// notify protocol of sd_notify(3), when the unit is Type=notify.
package sdnotify

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// maxMessage is the largest notification systemd reads: it receives into a
// buffer of NOTIFY_BUFFER_MAX (PIPE_BUF, 4096) bytes and drops a longer
// datagram whole, silently, with the READY=1 or RELOADING=1 it carried.
const maxMessage = 4096

// sendTimeout bounds one notification. systemd reads its socket promptly;
// a full receive queue must not stall the supervisor's loop, which calls
// in from Supervisor.OnEvent.
const sendTimeout = time.Second

// Notifier sends state to systemd when NOTIFY_SOCKET is set; with no socket
// every call is a no-op. Its methods are safe for concurrent use, and a nil
// *Notifier is a valid no-op notifier.
//
// Every status is a single line: newlines are replaced, since the protocol
// is newline-separated and a stray one would inject an assignment. Callers
// pass names only, never a parameter or secret value.
type Notifier struct {
	conn *net.UnixConn // nil: no socket, every call a no-op
}

// New connects to socket, the value of NOTIFY_SOCKET: a filesystem path, or
// "@name" for Linux's abstract namespace. An empty socket gives a no-op
// notifier. New fails when the socket is not there to be connected to, so
// that a misconfiguration shows at start rather than at the first message.
func New(socket string) (*Notifier, error) {
	switch {
	case socket == "":
		return &Notifier{}, nil
	case strings.HasPrefix(socket, "/"), strings.HasPrefix(socket, "@"):
	default:
		// systemd ≥ 253 may also hand a VM "vsock:CID:PORT"; paramexec
		// runs in containers and on hosts, where it never does.
		return nil, fmt.Errorf("NOTIFY_SOCKET %q: want an absolute path or @name", socket)
	}
	// The Go net package maps a leading "@" to the abstract namespace.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("NOTIFY_SOCKET %s: %w", socket, err)
	}
	return &Notifier{conn: conn}, nil
}

// Enabled reports whether notifications go anywhere.
func (n *Notifier) Enabled() bool { return n != nil && n.conn != nil }

// Ready tells systemd the service is up: after the first start, and after
// each restart. status may be empty.
func (n *Notifier) Ready(status string) error {
	return n.send("READY=1", status)
}

// Reloading tells systemd a restart of the child has begun; Ready ends it.
// MONOTONIC_USEC lets systemd ≥ 253 match the message to the reload cycle;
// older versions ignore it.
func (n *Notifier) Reloading(status string) error {
	if !n.Enabled() {
		return nil
	}
	usec, err := monotonicUsec()
	if err != nil {
		return err
	}
	return n.send("RELOADING=1\nMONOTONIC_USEC="+strconv.FormatUint(usec, 10), status)
}

// Stopping tells systemd the service is shutting down.
func (n *Notifier) Stopping(status string) error {
	return n.send("STOPPING=1", status)
}

// Status sets the line systemctl status shows, without changing the state.
func (n *Notifier) Status(status string) error {
	if !n.Enabled() {
		return nil
	}
	_, err := n.write("STATUS=" + bound(oneLine(status), maxMessage-len("STATUS=")))
	return err
}

// Close releases the socket. Later calls fail; a no-op notifier stays one.
func (n *Notifier) Close() error {
	if !n.Enabled() {
		return nil
	}
	return n.conn.Close()
}

// send writes state, with a STATUS line unless status is empty, as one
// datagram: systemd applies the assignments of one message together.
func (n *Notifier) send(state, status string) error {
	if !n.Enabled() {
		return nil
	}
	msg := state
	if status != "" {
		msg += "\nSTATUS="
		msg += bound(oneLine(status), maxMessage-len(msg))
	}
	_, err := n.write(msg)
	return err
}

func (n *Notifier) write(msg string) (int, error) {
	if err := n.conn.SetWriteDeadline(time.Now().Add(sendTimeout)); err != nil {
		return 0, fmt.Errorf("sd_notify: %w", err)
	}
	// An error names the message's first key, not its text.
	w, err := n.conn.Write([]byte(msg))
	if err != nil {
		return w, fmt.Errorf("sd_notify %s: %w", firstKey(msg), err)
	}
	return w, nil
}

// oneLine keeps a status to one line of the newline-separated protocol.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == 0 {
			return ' '
		}
		return r
	}, s)
}

// bound keeps a status within max bytes, so that the message it rides in
// is never dropped. Statuses grow with lists of names joined by ", " (the
// variables a change touched), so a long one is cut after the last whole
// name that fits and ends saying how many were left out.
func bound(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const sep = ", "
	// Room for the longest tail either way: a count has at most 8 digits
	// in a 4 KiB message, and neither tail is longer than 30 bytes.
	keep := max - 30
	if cut := strings.LastIndex(s[:keep], sep); cut >= 0 {
		return s[:cut] + fmt.Sprintf(" ... and %d more", strings.Count(s[cut:], sep))
	}
	// No list to cut: the text itself, cut on a rune boundary.
	for keep > 0 && !utf8.RuneStart(s[keep]) {
		keep--
	}
	return s[:keep] + fmt.Sprintf(" ... (%d bytes more)", len(s)-keep)
}

func firstKey(msg string) string {
	k, _, _ := strings.Cut(msg, "=")
	return k
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, the clock systemd
// compares MONOTONIC_USEC with. Go's time package hides its monotonic
// reading, so it is read from the kernel directly.
func monotonicUsec() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("sd_notify: clock_gettime(CLOCK_MONOTONIC): %w", err)
	}
	return uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3, nil
}
