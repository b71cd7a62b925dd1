package listen

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrCannotTell marks a Taken that could not read a process's descriptors
// (a child that changed to another user hides its /proc/PID/fd, and a
// /proc without them is possible): the caller goes by its other checks.
var ErrCannotTell = errors.New("cannot tell which processes hold the --listen sockets")

// Taken checks that the child pid, or a process below it, holds each of the
// Set's sockets: an app that binds a port of its own and closes the
// descriptor it was given (a server not told to use activated sockets)
// would otherwise be declared ready while every connection to the --listen
// address waits in the backlog for ever, since paramexec keeps its own copy.
// A socket is held if some process of the tree has an fd on it, whatever
// the fd's number (a server may dup it elsewhere and close fd 3). It
// returns nil if all are held, an error naming those that are not and
// what to do, or an error wrapping ErrCannotTell. Call it once the child
// says it is ready: before, it may not have taken them yet, and the
// trampoline (the child's PID before it execs the command) holds them all.
func (s *Set) Taken(pid int) error {
	want := make(map[uint64]bool, len(s.socks))
	inodes := make([]uint64, len(s.socks))
	for i, sock := range s.socks {
		var st unix.Stat_t
		if err := unix.Fstat(int(sock.file.Fd()), &st); err != nil {
			return fmt.Errorf("%w: stat --listen %s: %w", ErrCannotTell, sock.spec, err)
		}
		inodes[i], want[st.Ino] = st.Ino, true
	}
	tree, err := descendants(pid)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCannotTell, err)
	}
	for _, p := range tree {
		if err := dropHeld(p, want); err != nil {
			return fmt.Errorf("%w: %w", ErrCannotTell, err)
		}
		if len(want) == 0 {
			return nil
		}
	}
	var lost []string
	for i, sock := range s.socks {
		if want[inodes[i]] {
			lost = append(lost, sock.spec.String())
		}
	}
	return fmt.Errorf("not ready: the command (pid %d) and the processes below it closed the --listen socket for %s it was given, so nothing will ever accept on it; make it use the inherited socket (systemd socket activation: LISTEN_FDS, fd 3 on) or use --proxy, which suits a server that binds a port of its own",
		pid, strings.Join(lost, ", "))
}

// dropHeld deletes from want the socket inodes process pid has fds on. A
// process that exited meanwhile holds nothing.
func dropHeld(pid int, want map[uint64]bool) error {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		link, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue // closed since the listing
		}
		num, ok := strings.CutPrefix(link, "socket:[")
		if !ok {
			continue
		}
		if ino, err := strconv.ParseUint(strings.TrimSuffix(num, "]"), 10, 64); err == nil {
			delete(want, ino)
		}
	}
	return nil
}

// descendants is pid and every process below it, from one scan of /proc
// (each process's parent is in its stat line).
func descendants(pid int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	children := make(map[int][]int)
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited since the listing
		}
		// "PID (COMM) STATE PPID ...": COMM may hold spaces and parens.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat[i+1:]))
		if len(fields) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(fields[1]); err == nil {
			children[ppid] = append(children[ppid], p)
		}
	}
	tree := []int{pid}
	for i := 0; i < len(tree); i++ {
		tree = append(tree, children[tree[i]]...)
	}
	return tree, nil
}
