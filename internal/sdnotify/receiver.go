package sdnotify

// The receiving side, for --ready notify: paramexec plays systemd for its
// child. The child's messages come to a socket paramexec creates, because
// systemd (NotifyAccess=main) would drop them from any pid but paramexec's.
//
// Who may speak: each Message carries the sender's pid as the kernel
// vouches for it (SO_PASSCRED; only a process with CAP_SYS_ADMIN can claim
// another pid). The owner acts only on messages whose Pid is the current
// child's, as systemd's default NotifyAccess=main does: a process the child
// forked (a worker, a leftover of the previous child's group) cannot
// declare readiness. A wrapper script must therefore exec the app, which
// keeps the pid; MAINPID= is reported, not obeyed. Messages without
// credentials (Pid 0) are never the child's.
//
// Status texts are the child's own words: the owner passes them to systemd
// and never logs them, since paramexec cannot know what they contain.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// maxDatagram is systemd's NOTIFY_BUFFER_MAX: longer messages are dropped.
const maxDatagram = 4096

// Message is one datagram of the notify protocol.
type Message struct {
	Pid       int    // sender, from its credentials; 0 if it sent none
	Ready     bool   // READY=1
	Reloading bool   // RELOADING=1
	Stopping  bool   // STOPPING=1
	Status    string // STATUS=…, the first one; see HasStatus
	HasStatus bool   // a STATUS= line was present (it may be empty)
	MainPid   int    // MAINPID=…, 0 if absent or not a pid
	// Fields holds every assignment, known or not (WATCHDOG=1, ERRNO=…),
	// the first one of a key winning.
	Fields map[string]string
}

// ParseMessage reads one datagram as systemd does: newline-separated
// KEY=VALUE lines, where a state holds if any line is exactly READY=1 (or
// RELOADING=1, STOPPING=1), and the first STATUS= and MAINPID= count.
// Lines without "=" are ignored.
func ParseMessage(data []byte) Message {
	m := Message{Fields: make(map[string]string)}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			continue
		}
		switch line {
		case "READY=1":
			m.Ready = true
		case "RELOADING=1":
			m.Reloading = true
		case "STOPPING=1":
			m.Stopping = true
		}
		if _, seen := m.Fields[k]; seen {
			continue
		}
		m.Fields[k] = v
		switch k {
		case "STATUS":
			m.Status, m.HasStatus = v, true
		case "MAINPID":
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				m.MainPid = n
			}
		}
	}
	return m
}

// Receiver is a notify socket for one supervisor's children: a unixgram
// socket, mode 0600, alone in a private 0700 directory.
type Receiver struct {
	conn *net.UnixConn
	dir  string
	path string
	c    chan Message
	done chan struct{} // closed by Close: the reader stops delivering
	exit chan struct{} // closed by the reader when it returns
	once sync.Once
}

// Listen creates the socket in a new directory under dir ("" for
// os.TempDir()) and starts delivering messages. The path must fit sun_path
// (107 bytes): a long TMPDIR is an error that says so.
func Listen(dir string) (*Receiver, error) {
	d, err := os.MkdirTemp(dir, "paramexec-notify-") // 0700
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	path := filepath.Join(d, "notify")
	if len(path) > 107 {
		os.Remove(d)
		return nil, fmt.Errorf("notify socket: path %s is longer than a unix socket allows (107 bytes); set TMPDIR shorter", path)
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		os.RemoveAll(d)
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	fail := func(err error) (*Receiver, error) {
		conn.Close()
		os.RemoveAll(d)
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	// The directory already keeps others out; the mode says so again.
	if err := os.Chmod(path, 0o600); err != nil {
		return fail(err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		return fail(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1)
	}); err != nil {
		return fail(err)
	}
	if serr != nil {
		return fail(fmt.Errorf("SO_PASSCRED: %w", serr))
	}
	r := &Receiver{
		conn: conn, dir: d, path: path,
		c:    make(chan Message, 16),
		done: make(chan struct{}),
		exit: make(chan struct{}),
	}
	go r.read()
	return r, nil
}

// Path is the socket's path: the child's NOTIFY_SOCKET.
func (r *Receiver) Path() string { return r.path }

// Messages delivers each datagram in order of arrival; it is closed after
// Close. The owner must keep reading: a full channel holds the reader back,
// and then the kernel's queue, and then the child's sd_notify.
func (r *Receiver) Messages() <-chan Message { return r.c }

// Close stops the reader, waits for it, and removes the socket and its
// directory. It is safe to call more than once.
func (r *Receiver) Close() error {
	var err error
	r.once.Do(func() {
		close(r.done)
		err = r.conn.Close()
		<-r.exit
		if rerr := os.RemoveAll(r.dir); err == nil {
			err = rerr
		}
	})
	return err
}

func (r *Receiver) read() {
	defer close(r.exit)
	defer close(r.c)
	buf := make([]byte, maxDatagram+1)
	oob := make([]byte, syscall.CmsgSpace(syscall.SizeofUcred)+syscall.CmsgSpace(4*16))
	errs := 0
	for {
		n, oobn, flags, _, err := r.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			// A datagram socket has no transient read errors worth a
			// loop: past a few in a row, the owner sees the channel close.
			if errs++; errors.Is(err, net.ErrClosed) || errs >= 10 {
				return
			}
			continue
		}
		errs = 0
		pid := credentials(oob[:oobn])
		if n > maxDatagram || flags&syscall.MSG_TRUNC != 0 {
			continue
		}
		select {
		case r.c <- withPid(ParseMessage(buf[:n]), pid):
		case <-r.done:
			return
		}
	}
}

func withPid(m Message, pid int) Message { m.Pid = pid; return m }

// credentials returns the sender's pid and closes any descriptor the
// sender passed (FDSTORE=1 is not supported: the fds must not leak into
// paramexec, let alone into the next child). Go reads with
// MSG_CMSG_CLOEXEC, so they are close-on-exec until then.
func credentials(oob []byte) int {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	pid := 0
	for _, m := range msgs {
		if m.Header.Level != syscall.SOL_SOCKET {
			continue
		}
		switch m.Header.Type {
		case syscall.SCM_CREDENTIALS:
			if cred, err := syscall.ParseUnixCredentials(&m); err == nil {
				pid = int(cred.Pid)
			}
		case syscall.SCM_RIGHTS:
			if fds, err := syscall.ParseUnixRights(&m); err == nil {
				for _, fd := range fds {
					syscall.Close(fd)
				}
			}
		}
	}
	return pid
}
