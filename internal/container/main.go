// Command container runs a program as the barest container runtime would run
// the entrypoint of a scratch image: no /proc, no /dev, only the given root.
//
// Usage (as root, started with CLONE_NEWPID|CLONE_NEWNS so that it is PID 1
// of a new PID namespace, in a mount namespace of its own):
//
//	container -root DIR [-bind HOST:PATH]... [-user UID:GID] -- PROG [ARGS...]
//
// It makes DIR a read-only mount with writable binds of host directories
// (-bind), chroots into DIR, drops to the numeric UID and GID (no
// supplementary groups, no capabilities left) and execs PROG in its own
// place, so PROG is PID 1 with the environment this command was given.
// Every mount point must already exist in DIR: the root is read-only.
//
// Real runtimes are tested in e2e/container with runc; runc cannot run a
// container without /proc, which is what this one is for. Exit codes follow docker run: 125 when the set-up fails, 126
// when PROG cannot be executed, 127 when it does not exist.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

func init() {
	// The parent-death signal belongs to one thread, and execve keeps only
	// the calling thread: set it and exec on the same one.
	runtime.LockOSThread()
}

func main() {
	// run returns only when it could not become the program.
	code, err := run(os.Args[1:])
	fmt.Fprintln(os.Stderr, "container:", err)
	os.Exit(code)
}

type bind struct{ host, path string }

type options struct {
	root     string
	binds    []bind
	uid, gid int
	argv     []string
}

func parse(args []string) (options, error) {
	o := options{uid: -1, gid: -1}
	fs := flag.NewFlagSet("container", flag.ContinueOnError)
	fs.StringVar(&o.root, "root", "", "the image's root `DIR` (required)")
	fs.Func("bind", "bind the host directory `HOST:PATH` writable at PATH", func(s string) error {
		host, path, ok := strings.Cut(s, ":")
		if !ok || !filepath.IsAbs(host) || !filepath.IsAbs(path) {
			return fmt.Errorf("want HOST:PATH, both absolute, got %q", s)
		}
		o.binds = append(o.binds, bind{host, path})
		return nil
	})
	fs.Func("user", "run as the numeric `UID:GID`", func(s string) error {
		u, g, ok := strings.Cut(s, ":")
		var err1, err2 error
		o.uid, err1 = strconv.Atoi(u)
		o.gid, err2 = strconv.Atoi(g)
		if !ok || err1 != nil || err2 != nil || o.uid < 0 || o.gid < 0 {
			return fmt.Errorf("want numeric UID:GID, got %q", s)
		}
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.root == "" || fs.NArg() == 0 {
		return o, errors.New("-root and a program are required")
	}
	o.argv = fs.Args()
	return o, nil
}

func run(args []string) (int, error) {
	o, err := parse(args)
	if err != nil {
		return 125, err
	}
	if err := setUp(o); err != nil {
		return 125, err
	}
	if o.uid >= 0 {
		if err := dropTo(o.uid, o.gid); err != nil {
			return 125, err
		}
	}
	// Changing credentials cleared the parent-death signal the test set:
	// set it again, so a test binary that dies takes the namespace along.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGKILL), 0, 0, 0); err != nil {
		return 125, fmt.Errorf("set parent-death signal: %w", err)
	}
	err = syscall.Exec(o.argv[0], o.argv, os.Environ())
	if errors.Is(err, syscall.ENOENT) {
		return 127, fmt.Errorf("exec %s: %w", o.argv[0], err)
	}
	return 126, fmt.Errorf("exec %s: %w", o.argv[0], err)
}

// setUp builds the container's file system and enters it. The mounts are
// made before the chroot, while the host's paths are still visible.
func setUp(o options) error {
	if os.Getpid() != 1 {
		return fmt.Errorf("pid %d: start this with CLONE_NEWPID|CLONE_NEWNS", os.Getpid())
	}
	// Nothing mounted here may propagate back to the host's namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	root, err := filepath.Abs(o.root)
	if err != nil {
		return err
	}
	// A bind of the directory onto itself makes it a mount of its own,
	// which can then be made read-only without touching the host's file.
	if err := unix.Mount(root, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind root: %w", err)
	}
	for _, b := range o.binds {
		if err := unix.Mount(b.host, filepath.Join(root, b.path), "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s at %s: %w", b.host, b.path, err)
		}
	}
	// Only the root mount becomes read-only; the mounts on it stay as made.
	if err := unix.Mount("", root, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("make root read-only: %w", err)
	}
	if err := unix.Chdir(root); err != nil {
		return fmt.Errorf("chdir root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return unix.Chdir("/")
}

// dropTo becomes uid:gid with no supplementary groups. Leaving uid 0 for
// another uid clears every capability, as for an image's numeric USER.
func dropTo(uid, gid int) error {
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("setgid %d: %w", gid, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("setuid %d: %w", uid, err)
	}
	return nil
}
