package proxy

import (
	"encoding/binary"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// acceptState is what the kernel says of the server's end of a loopback
// connection the proxy dialled.
type acceptState int

const (
	// notYet: the server's end is in its listener's accept queue, or not
	// found (the handshake is still being processed, or it is gone).
	notYet acceptState = iota
	// accepted: the server's process holds it (accept(2) gave it a file).
	accepted
	// cannotTell: the kernel would not say (no sock_diag, a deferred
	// accept that keeps a request socket): the proxy acts as if accepted.
	cannotTell
)

// diagTimeout bounds one sock_diag round trip.
const diagTimeout = time.Second

// acceptStateOf asks the kernel (sock_diag, as ss(8) does) about the
// server's end of conn: found established with an inode means accepted,
// since a socket gets its inode only when accept(2) hands it to a process;
// found with none, it waits in the accept queue. Only the connections the
// proxy dials to a child's loopback port are asked about, so both ends are
// this host's.
func acceptStateOf(conn net.Conn) acceptState {
	local, ok1 := conn.LocalAddr().(*net.TCPAddr)
	remote, ok2 := conn.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return cannotTell
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return cannotTell
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(diagTimeout.Nanoseconds())
	if unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv) != nil {
		return cannotTell
	}
	// The server's end: its source is the target, its destination us.
	if err := unix.Sendto(fd, diagRequest(remote, local), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return cannotTell
	}
	buf := make([]byte, 8192)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return cannotTell
	}
	return parseDiag(buf[:n])
}

// diagRequest is a SOCK_DIAG_BY_FAMILY request for the one TCP socket
// whose source is src and destination dst: nlmsghdr, inet_diag_req_v2.
func diagRequest(src, dst *net.TCPAddr) []byte {
	family, size := byte(unix.AF_INET6), 16
	if src.IP.To4() != nil && dst.IP.To4() != nil {
		family, size = unix.AF_INET, 4
	}
	addr := func(ip net.IP) []byte {
		if size == 4 {
			return ip.To4()
		}
		return ip.To16()
	}
	msg := make([]byte, 16+56)
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(msg[6:], unix.NLM_F_REQUEST)
	req := msg[16:]
	req[0], req[1] = family, unix.IPPROTO_TCP
	ne.PutUint32(req[4:], 0xffffffff) // every state
	binary.BigEndian.PutUint16(req[8:], uint16(src.Port))
	binary.BigEndian.PutUint16(req[10:], uint16(dst.Port))
	copy(req[12:28], addr(src.IP))
	copy(req[28:44], addr(dst.IP))
	ne.PutUint32(req[48:], 0xffffffff) // INET_DIAG_NOCOOKIE
	ne.PutUint32(req[52:], 0xffffffff)
	return msg
}

// TCP states as inet_diag reports them.
const (
	tcpEstablished = 1
	tcpSynRecv     = 3
	tcpListen      = 10
	tcpNewSynRecv  = 12
)

// parseDiag reads the answer to diagRequest: an inet_diag_msg, or an error
// (ENOENT: no such socket).
func parseDiag(b []byte) acceptState {
	ne := binary.NativeEndian
	if len(b) < 16 {
		return cannotTell
	}
	switch ne.Uint16(b[4:]) {
	case unix.NLMSG_ERROR:
		if len(b) >= 20 && unix.Errno(-int32(ne.Uint32(b[16:]))) == unix.ENOENT {
			return notYet
		}
		return cannotTell
	case unix.SOCK_DIAG_BY_FAMILY:
	default:
		return cannotTell
	}
	msg := b[16:]
	if len(msg) < 72 {
		return cannotTell
	}
	switch state, inode := msg[1], ne.Uint32(msg[68:]); {
	case state == tcpListen:
		// The lookup fell back to the listener: our end is not (or no
		// longer) among its connections.
		return notYet
	case state == tcpSynRecv || state == tcpNewSynRecv:
		return cannotTell // a deferred accept: the server waits for data
	case inode != 0:
		return accepted
	case state == tcpEstablished:
		return notYet
	}
	// Closing without an inode: accepted and closed by its process, or
	// reset out of the queue; the reset, if any, reaches the proxy's read.
	return notYet
}

// gate holds the client's bytes back from a backend until its server has
// accepted the connection, which makes a replay provably safe: a
// connection reset before the gate opened had not a byte of the client
// written to it, so no server can have read, let alone acted on, any of
// it. Once open, a reset is final.
type gate struct {
	mu    sync.Mutex
	state int           // gateWaiting, gateOpen or gateShut
	moved chan struct{} // closed when state leaves gateWaiting
}

const (
	gateWaiting = iota
	gateOpen
	gateShut
)

func newGate() *gate { return &gate{moved: make(chan struct{})} }

// set moves a waiting gate to state and reports whether it was waiting.
func (g *gate) set(state int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state != gateWaiting {
		return false
	}
	g.state = state
	close(g.moved)
	return true
}

func (g *gate) open() bool { return g.set(gateOpen) || g.isOpen() }
func (g *gate) shut() bool { return g.set(gateShut) }

func (g *gate) isOpen() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state == gateOpen
}

// Polling bounds while a server has not accepted: the first look comes
// soon after the handshake (a server that accepts at once is seen at
// once); a connection left in a long accept queue costs a query each
// acceptPollMax.
const (
	acceptPollMin = 50 * time.Microsecond
	acceptPollMax = 20 * time.Millisecond
)

// await opens g once backend's server has accepted it (or the kernel
// cannot tell), and reports whether g is open; it returns false at once
// when g is shut meanwhile.
func (g *gate) await(backend net.Conn) bool {
	wait := acceptPollMin
	for {
		if acceptStateOf(backend) != notYet {
			return g.open()
		}
		t := time.NewTimer(wait)
		select {
		case <-g.moved:
			t.Stop()
			return g.isOpen()
		case <-t.C:
		}
		wait = min(2*wait, acceptPollMax)
	}
}
