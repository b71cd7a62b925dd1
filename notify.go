package main

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/paramexec/paramexec/exec"
	"github.com/paramexec/paramexec/internal/sdnotify"
)

// notifier writes systemd notifications on a goroutine of its own, so that
// neither the supervisor's loop nor the relay ever waits on NOTIFY_SOCKET:
// a write may take sdnotify's deadline when systemd does not read, and a
// restart makes about five. It holds one pending message, which a newer
// one replaces, keeping the newest state (READY=1, RELOADING=1,
// STOPPING=1; a STATUS= alone keeps the pending state) and the newest
// STATUS=: what systemd is told last is what paramexec knows last. Messages
// are written in the order they came while systemd keeps up.
type notifier struct {
	sd   *sdnotify.Notifier
	log  *slog.Logger
	wake chan struct{} // buffered 1: a message is pending
	stop chan struct{} // closed by close
	done sync.WaitGroup

	mu      sync.Mutex
	pending note
	has     bool
}

// note is one message: a state, or none, and a status line.
type note struct {
	state  noteState
	status string
	event  string // what it reports, for the log of a failed write
}

type noteState int

const (
	statusOnly noteState = iota
	readyState
	reloadingState
	stoppingState
)

func status(s string) note        { return note{status: s} }
func readyNote(s string) note     { return note{state: readyState, status: s} }
func reloadingNote(s string) note { return note{state: reloadingState, status: s} }
func stoppingNote(s string) note  { return note{state: stoppingState, status: s} }

// newNotifier starts the writer of sd; close ends it.
func newNotifier(sd *sdnotify.Notifier, log *slog.Logger) *notifier {
	n := &notifier{sd: sd, log: log, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	n.done.Go(n.run)
	return n
}

// post queues m, replacing what is pending (see notifier); it never blocks.
func (n *notifier) post(m note) {
	if !n.sd.Enabled() {
		return
	}
	n.mu.Lock()
	if n.has && m.state == statusOnly {
		m.state = n.pending.state
	}
	n.pending, n.has = m, true
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default: // the writer is woken already
	}
}

func (n *notifier) run() {
	for {
		select {
		case <-n.wake:
			n.write()
		case <-n.stop:
			n.write() // the last word, STOPPING=1 or an exit, within the write deadline
			return
		}
	}
}

// write sends the pending message, if any.
func (n *notifier) write() {
	n.mu.Lock()
	m, ok := n.pending, n.has
	n.has = false
	n.mu.Unlock()
	if !ok {
		return
	}
	var err error
	switch m.state {
	case readyState:
		err = n.sd.Ready(m.status)
	case reloadingState:
		err = n.sd.Reloading(m.status)
	case stoppingState:
		err = n.sd.Stopping(m.status)
	default:
		err = n.sd.Status(m.status)
	}
	if err != nil {
		n.log.Debug("systemd notification failed", "event", m.event, "error", err)
	}
}

// close writes what is pending and ends the writer.
func (n *notifier) close() {
	close(n.stop)
	n.done.Wait()
}

// notifyRelay reads the child's notify socket. Only the current child's
// messages count (its pid as the kernel gives it): its READY=1 passes the
// notify check, its STATUS= lines go on to systemd unchanged (never to the
// log: paramexec cannot know what they say). paramexec reports READY=1 and
// RELOADING=1 itself, from the supervisor's events, so the child's are not
// relayed.
type notifyRelay struct {
	rcv  *sdnotify.Receiver
	sd   *notifier
	log  *slog.Logger
	done sync.WaitGroup

	mu    sync.Mutex
	pid   int           // the child being watched
	ready chan struct{} // closed on its READY=1
	early map[int]bool  // READY=1 from pids not (yet) watched
}

// earlyLimit bounds early: a READY=1 can beat watch by a moment only, so
// a handful of pids is plenty, and a chatty process cannot grow it.
const earlyLimit = 16

func newNotifyRelay(rcv *sdnotify.Receiver, sd *notifier, log *slog.Logger) *notifyRelay {
	n := &notifyRelay{rcv: rcv, sd: sd, log: log, early: make(map[int]bool)}
	n.done.Go(n.relay)
	return n
}

// watch makes pid the current child and returns what closes on its
// READY=1, already closed if it came before watch.
func (n *notifyRelay) watch(pid int) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.pid, n.ready = pid, make(chan struct{})
	if n.early[pid] {
		close(n.ready)
	}
	clear(n.early)
	return n.ready
}

// follow makes pid, a child that is ready already, the current one, if it
// is not: its messages count from now on.
func (n *notifyRelay) follow(pid int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.pid == pid {
		return
	}
	n.pid, n.ready = pid, make(chan struct{})
	close(n.ready)
}

func (n *notifyRelay) relay() {
	for m := range n.rcv.Messages() {
		n.mu.Lock()
		current := m.Pid != 0 && m.Pid == n.pid
		if m.Ready && current && n.ready != nil {
			select {
			case <-n.ready:
			default:
				close(n.ready)
			}
		} else if m.Ready && m.Pid != 0 && !current && len(n.early) < earlyLimit {
			n.early[m.Pid] = true
		}
		n.mu.Unlock()
		if !current {
			n.log.Debug("notify message ignored: not from the current child", "sender", m.Pid)
			continue
		}
		if m.HasStatus {
			n.sd.post(note{status: m.Status, event: "child status"})
		}
	}
}

// close stops the relay and removes the socket.
func (n *notifyRelay) close() {
	n.rcv.Close()
	n.done.Wait()
}

// notifyEvents reports the child's lifecycle to systemd through n (a no-op
// without NOTIFY_SOCKET), never waiting on it. The texts, shown by
// systemctl status, carry the command, pids, exit codes and the names that
// changed: never a value.
func notifyEvents(n *notifier, command string) func(exec.Event) {
	name := filepath.Base(command)
	var rolledBack string // the last rollback, until a restart succeeds
	return func(e exec.Event) {
		var m note
		switch e.Kind {
		case exec.Started:
			m = status(fmt.Sprintf("%s starting (pid %d)", name, e.Pid))
		case exec.Ready:
			// READY=1 once the child is ready (at its start without
			// --ready); after a rollback, the status keeps saying why.
			status := fmt.Sprintf("%s running (pid %d)", name, e.Pid)
			if rolledBack != "" {
				status += ", " + rolledBack
			}
			m = readyNote(status)
		case exec.RestartBegun:
			m = reloadingNote(fmt.Sprintf("restarting %s: %s", name, e.Reason))
		case exec.OverlapBegun:
			m = reloadingNote(fmt.Sprintf("overlapping %s: new child (pid %d) starting while the old one serves: %s", name, e.Pid, e.Reason))
		case exec.Draining:
			m = status(fmt.Sprintf("%s: old child (pid %d) draining (%s)", name, e.Pid, e.Reason))
		case exec.Restarted:
			rolledBack = ""
			m = readyNote(fmt.Sprintf("%s running (pid %d), restarted in %s at %s: %s",
				name, e.Pid, e.Took.Round(time.Millisecond), time.Now().Format(time.TimeOnly), e.Reason))
		case exec.RolledBack:
			how := "not ready"
			if e.Code >= 0 {
				how = fmt.Sprintf("exit %d", e.Code)
			}
			rolledBack = fmt.Sprintf("rolled back at %s: %s rejected (%s)", time.Now().Format(time.TimeOnly), strings.Join(e.Changed, ", "), how)
			m = status(fmt.Sprintf("%s: %s", name, rolledBack))
		case exec.Stopping:
			m = stoppingNote(fmt.Sprintf("stopping %s (pid %d): %s", name, e.Pid, e.Reason))
		case exec.Killed:
			m = status(fmt.Sprintf("%s (pid %d) outlived --grace; its process group was killed", name, e.Pid))
		case exec.Rejected:
			m = status(fmt.Sprintf("%s (pid %d) keeps running: new environment rejected: %s", name, e.Pid, e.Reason))
		case exec.Exited:
			m = status(fmt.Sprintf("%s (pid %d) exited with status %d", name, e.Pid, e.Code))
		}
		if m.status != "" {
			m.event = e.Kind.String()
			n.post(m)
		}
	}
}
