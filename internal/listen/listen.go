// Package listen binds the --listen sockets once, for paramexec's whole life,
// and passes them to each child by systemd's socket-activation protocol.
//
// Errors come in two classes a caller maps to exit codes: ErrUsage (the text
// of a flag is wrong: exit 2) and ErrBind (the flag is well-formed but the
// machine refused it at start-up, as a source that cannot be read: exit 3).
package listen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var (
	// ErrUsage marks a --listen (or --proxy) value that cannot be right on
	// any machine: unknown scheme, no port, relative or too long a path, a
	// bad name, an address given twice. A caller exits 2 (usage).
	ErrUsage = errors.New("usage")
	// ErrBind marks a well-formed address this machine refused at start-up:
	// port in use, permission denied, no such local address, a host name
	// that does not resolve, a socket path another process listens on or
	// that is not a socket. A caller exits 3, the code of a start-up that
	// the world refused (a restart of the task may succeed).
	ErrBind = errors.New("cannot bind")
)

// SocketMode is the permission of a unix socket file: its owner and group may
// connect, nobody else. It is never wider, not even for an instant: the mode
// is set on the socket before bind creates the file, then made exact (the
// umask can only have narrowed it).
const SocketMode = 0o660

// maxNameLen is systemd's bound on a LISTEN_FDNAMES entry (FDNAME_MAX).
const maxNameLen = 255

// Spec is one parsed --listen value.
type Spec struct {
	// Name is its entry in LISTEN_FDNAMES: given as NAME=ADDR, or "listenN"
	// for the Nth (from 0) --listen value, which keeps default names valid
	// and unique whatever the address.
	Name string
	// Network is "tcp" or "unix".
	Network string
	// Address is "HOST:PORT" (HOST may be empty: every local address) or an
	// absolute path.
	Address string
}

// String is the address as the flag writes it, for logs and errors.
func (s Spec) String() string {
	if s.Network == "unix" {
		return "unix://" + s.Address
	}
	return "tcp://" + s.Address
}

// Parse parses one [NAME=]ADDR value, the index-th --listen flag (for the
// default name). ADDR is tcp://HOST:PORT, tcp://:PORT, tcp://[IPV6]:PORT or
// unix:///ABSOLUTE/PATH; a bare HOST:PORT is taken as tcp. PORT is numeric.
// The abstract unix namespace is not supported. Errors wrap ErrUsage.
func Parse(value string, index int) (Spec, error) {
	var s Spec
	addr := value
	// NAME=ADDR: a '=' before any "://" starts the address, so a unix path
	// may contain '=' and still needs no name.
	if eq := strings.IndexByte(value, '='); eq >= 0 && !strings.Contains(value[:eq], "://") {
		s.Name, addr = value[:eq], value[eq+1:]
		if err := checkName(s.Name); err != nil {
			return Spec{}, fmt.Errorf("--listen %q: %w", value, err)
		}
	} else {
		s.Name = "listen" + strconv.Itoa(index)
	}
	scheme, rest, ok := strings.Cut(addr, "://")
	if !ok {
		scheme, rest = "tcp", addr
	}
	switch scheme {
	case "tcp":
		host, port, err := net.SplitHostPort(rest)
		if err != nil {
			return Spec{}, fmt.Errorf("--listen %q: want tcp://HOST:PORT or tcp://:PORT: %w", value, ErrUsage)
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return Spec{}, fmt.Errorf("--listen %q: port %q is not a number from 0 to 65535: %w", value, port, ErrUsage)
		}
		s.Network, s.Address = "tcp", net.JoinHostPort(host, strconv.FormatUint(n, 10))
	case "unix":
		if !strings.HasPrefix(rest, "/") {
			return Spec{}, fmt.Errorf("--listen %q: want unix:///ABSOLUTE/PATH: %w", value, ErrUsage)
		}
		rest = filepath.Clean(rest)
		if strings.HasSuffix(rest, "/") {
			return Spec{}, fmt.Errorf("--listen %q: the path names a directory: %w", value, ErrUsage)
		}
		// sun_path is 108 bytes with the terminating NUL.
		if len(rest) > 107 {
			return Spec{}, fmt.Errorf("--listen %q: a unix socket path has at most 107 bytes, this has %d: %w", value, len(rest), ErrUsage)
		}
		s.Network, s.Address = "unix", rest
	default:
		return Spec{}, fmt.Errorf("--listen %q: unknown scheme %q, want tcp:// or unix://: %w", value, scheme, ErrUsage)
	}
	return s, nil
}

// ParseAll parses every --listen value in order. The same address twice is
// a usage error (the second bind would fail with a less telling "in use"),
// except with port 0, which the kernel makes a new port each time.
// Names may repeat, as systemd allows.
func ParseAll(values []string) ([]Spec, error) {
	specs := make([]Spec, 0, len(values))
	seen := make(map[string]bool)
	for i, v := range values {
		s, err := Parse(v, i)
		if err != nil {
			return nil, err
		}
		// Port 0 is a new port each time: never the same address twice.
		if seen[s.String()] && !strings.HasSuffix(s.Address, ":0") {
			return nil, fmt.Errorf("--listen %s given twice: %w", s, ErrUsage)
		}
		seen[s.String()] = true
		specs = append(specs, s)
	}
	return specs, nil
}

// checkName applies systemd's fdname_is_valid: 1 to 255 printable ASCII
// characters (space included), no ':' (the LISTEN_FDNAMES separator).
func checkName(name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("name must have 1 to %d characters: %w", maxNameLen, ErrUsage)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < ' ' || c > '~' || c == ':' {
			return fmt.Errorf("name %q: only printable ASCII without ':' is allowed: %w", name, ErrUsage)
		}
	}
	return nil
}

// Set is the sockets paramexec binds before its first child and keeps until
// it exits. The descriptors it holds are close-on-exec and in blocking mode,
// as systemd passes them; paramexec never accepts on them itself.
type Set struct {
	socks []socket
}

type socket struct {
	spec Spec
	file *os.File
	// dev and ino identify the socket file bound at spec.Address, so that
	// Close removes it only if it is still ours.
	dev, ino uint64
}

// Bind binds every spec, in order; all or nothing (on error the ones already
// bound are closed). ctx bounds host name resolution. Errors wrap ErrBind,
// naming the address and, where the fix is known, the likely cause.
//
// A unix socket path that exists is handled as a leftover of a previous run
// if it is a socket nobody accepts on (connect refused): it is removed and
// bound anew. A socket that accepts, or a file of any other type, is not
// touched: ErrBind. (Two paramexecs starting at once on the same stale
// path may both take it for stale; the later bind wins the path.)
func Bind(ctx context.Context, specs []Spec) (*Set, error) {
	// The trampoline is this binary, reached through /proc (see Command):
	// find out now, not at the first child, that it cannot be.
	if _, err := os.Stat(selfExe); err != nil {
		return nil, fmt.Errorf("passing sockets needs %s (is /proc mounted?): %w: %w", selfExe, ErrBind, err)
	}
	s := &Set{}
	for _, spec := range specs {
		sock, err := bind(ctx, spec)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.socks = append(s.socks, sock)
	}
	return s, nil
}

func bind(ctx context.Context, spec Spec) (socket, error) {
	sock := socket{spec: spec}
	if spec.Network == "unix" {
		if err := removeStale(spec.Address); err != nil {
			return sock, fmt.Errorf("--listen %s: %w: %w", spec, ErrBind, err)
		}
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		if spec.Network != "unix" {
			return nil
		}
		// Linux creates the socket file with the socket inode's mode minus
		// the umask: set it before bind, so that the file is never wider.
		var err error
		if cerr := c.Control(func(fd uintptr) { err = unix.Fchmod(int(fd), SocketMode) }); cerr != nil {
			return cerr
		}
		return err
	}}
	ln, err := lc.Listen(ctx, spec.Network, spec.Address)
	if err != nil {
		return sock, bindError(spec, err)
	}
	if ul, ok := ln.(*net.UnixListener); ok {
		// The Set removes the path itself, and only if it is still ours.
		ul.SetUnlinkOnClose(false)
	}
	f, err := detach(ln)
	if err != nil {
		return sock, fmt.Errorf("--listen %s: %w: %w", spec, ErrBind, err)
	}
	sock.file = f
	if spec.Network == "unix" {
		var st unix.Stat_t
		err := unix.Chmod(spec.Address, SocketMode)
		if err == nil {
			err = unix.Stat(spec.Address, &st)
		}
		if err != nil {
			f.Close()
			os.Remove(spec.Address)
			return sock, fmt.Errorf("--listen %s: %w: %w", spec, ErrBind, err)
		}
		sock.dev, sock.ino = st.Dev, st.Ino
	}
	return sock, nil
}

// detach turns ln into a plain blocking, close-on-exec descriptor outside
// Go's poller, closing ln: the first child gets the mode systemd gives, and
// an accept in a child that expects blocking sockets does not fail with
// EAGAIN. O_NONBLOCK belongs to the open file description, which every
// child shares with the Set: a child that sets it (Go's net.FileListener
// does) sets it for the children after it and for its sibling during an
// overlap, as under systemd. The Set never resets it: that would turn a
// running event-loop child's socket blocking under it.
func detach(ln net.Listener) (*os.File, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("%T has no descriptor", ln)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		ln.Close()
		return nil, err
	}
	nfd := -1
	var dupErr error
	if err := rc.Control(func(fd uintptr) { nfd, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		dupErr = err
	}
	name := ln.Addr().Network() + ":" + ln.Addr().String()
	ln.Close()
	if dupErr != nil {
		return nil, fmt.Errorf("dup: %w", dupErr)
	}
	if err := unix.SetNonblock(nfd, false); err != nil {
		unix.Close(nfd)
		return nil, fmt.Errorf("set blocking: %w", err)
	}
	return os.NewFile(uintptr(nfd), name), nil
}

// staleTimeout bounds the connect that tells a live socket from a leftover.
const staleTimeout = 2 * time.Second

// removeStale removes path if it is a socket file nobody accepts on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.Mode()&os.ModeSocket == 0:
		return fmt.Errorf("%s exists and is not a socket; not removing it", path)
	}
	c, err := net.DialTimeout("unix", path, staleTimeout)
	if err == nil {
		c.Close()
		return fmt.Errorf("another process listens on %s", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s exists and cannot be checked: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// bindError wraps a listen error in ErrBind with the likely cause.
func bindError(spec Spec, err error) error {
	hint := ""
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		hint = " (another process listens there)"
	case errors.Is(err, syscall.EACCES) && spec.Network == "tcp":
		hint = " (a port below 1024 needs root or CAP_NET_BIND_SERVICE)"
	case errors.Is(err, syscall.EACCES):
		hint = " (its directory is not writable by this user)"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		hint = " (no local interface has that address)"
	}
	return fmt.Errorf("--listen %s%s: %w: %w", spec, hint, ErrBind, err)
}

// Specs returns what was bound, in fd order.
func (s *Set) Specs() []Spec {
	out := make([]Spec, len(s.socks))
	for i, sock := range s.socks {
		out[i] = sock.spec
	}
	return out
}

// Files returns a fresh duplicate of each socket, in order, for one child:
// for os/exec's ExtraFiles or after stdin, stdout, stderr in
// syscall.ProcAttr's Files, so that they land on fds 3, 4, …. The duplicates
// are close-on-exec here (ForkExec clears the flag on the child's copies);
// the caller closes them once the child started. The Set's own copies stay
// open whatever the caller does with these.
func (s *Set) Files() ([]*os.File, error) {
	out := make([]*os.File, 0, len(s.socks))
	for _, sock := range s.socks {
		nfd, err := unix.FcntlInt(sock.file.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			for _, f := range out {
				f.Close()
			}
			return nil, fmt.Errorf("dup socket %s: %w", sock.spec, err)
		}
		out = append(out, os.NewFile(uintptr(nfd), sock.file.Name()))
	}
	return out, nil
}

// Close closes the sockets and removes each unix socket file that is still
// the one Bind created (a later process's socket at the same path stays).
func (s *Set) Close() error {
	var errs []error
	for _, sock := range s.socks {
		if sock.spec.Network == "unix" && sock.ino != 0 {
			var st unix.Stat_t
			if unix.Lstat(sock.spec.Address, &st) == nil && st.Dev == sock.dev && st.Ino == sock.ino {
				if err := os.Remove(sock.spec.Address); err != nil {
					errs = append(errs, err)
				}
			}
		}
		if err := sock.file.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	s.socks = nil
	return errors.Join(errs...)
}
