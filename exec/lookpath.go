package exec

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/paramexec/paramexec/internal/environ"
)

var (
	// errNotFound means no file of that name exists (on PATH, or at the path).
	// A shell exits 127 for it.
	errNotFound = errors.New("executable file not found")
	// ErrNotExecutable means the file exists but cannot be run (a directory, no x
	// bit, permission denied, bad interpreter). A shell exits 126 for it.
	ErrNotExecutable = errors.New("not executable")

	errIsDir = fmt.Errorf("%w: is a directory", ErrNotExecutable)
)

// defaultPath is searched when env has no PATH at all; it is the PATH Docker
// gives a container and the one dash falls back to.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// LookPath resolves name as a shell does, searching the PATH found in env
// ("K=V" list, the last PATH wins; not this process's environment, which the
// child will not have). A name with a slash is not searched. An empty PATH
// element means the current directory, as POSIX says; with no PATH at all,
// defaultPath is searched. Directories on PATH are skipped; if the only
// matches are not executable, the error wraps ErrNotExecutable, otherwise
// errNotFound.
func LookPath(name string, env []string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("look up %q: %w", name, errNotFound)
	}
	if strings.Contains(name, "/") {
		if err := checkExecutable(name); err != nil {
			return "", fmt.Errorf("look up %q: %w", name, err)
		}
		return name, nil
	}
	path, ok := environ.Lookup(env, "PATH")
	if !ok {
		path = defaultPath
	}
	var denied error
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if !filepath.IsAbs(p) {
			// Keep it a path: without a slash, a later exec would search again.
			p = "./" + p
		}
		err := checkExecutable(p)
		if err == nil {
			return p, nil
		}
		if errors.Is(err, ErrNotExecutable) && !errors.Is(err, errIsDir) && denied == nil {
			denied = err
		}
	}
	if denied != nil {
		return "", fmt.Errorf("look up %q in PATH: %w", name, denied)
	}
	return "", fmt.Errorf("look up %q in PATH: %w", name, errNotFound)
}

// checkExecutable reports why the file at path cannot be executed, wrapping
// errNotFound or ErrNotExecutable, or nil if it can.
func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return errNotFound
	case err != nil:
		// EACCES on a directory on the way, ELOOP, ...: the shell's 126.
		return fmt.Errorf("%w: %w", ErrNotExecutable, unwrapPathError(err))
	case fi.IsDir():
		return errIsDir
	}
	// AT_EACCESS: check with the effective ids, those execve will use.
	if err := unix.Faccessat(unix.AT_FDCWD, path, unix.X_OK, unix.AT_EACCESS); err != nil {
		return fmt.Errorf("%w: %w", ErrNotExecutable, err)
	}
	return nil
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// ExitCode maps an error from starting a command to the shell's convention:
// 0 for nil, 127 when it wraps errNotFound, 126 for anything else: not
// executable, too large an environment (errTooLarge, which bash reports
// with 126 as well; the message, not the code, tells the two apart), or any
// other failure to start.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errNotFound):
		return 127
	default:
		return 126
	}
}

// startError classifies an execve failure of path, which LookPath had found,
// with argv and env.
func startError(path string, argv, env []string, err error) error {
	if errors.Is(err, syscall.E2BIG) {
		if serr := checkSize(path, argv, env); serr != nil {
			return fmt.Errorf("exec %q: %w", path, serr)
		}
		// Over a limit this process does not model: say what it saw.
		return fmt.Errorf("exec %q: %w: %d bytes of arguments and environment, %d variables: %w",
			path, errTooLarge, stringsSize(path, argv, env), len(env), err)
	}
	if errors.Is(err, syscall.ENOENT) {
		if _, serr := os.Stat(path); serr == nil {
			// The file is there, so what is missing is its interpreter
			// (#!/bin/bash in an image without bash): bash says 126.
			return fmt.Errorf("exec %q: bad interpreter: %w: %w", path, ErrNotExecutable, err)
		}
		return fmt.Errorf("exec %q: %w: %w", path, errNotFound, err)
	}
	return fmt.Errorf("exec %q: %w: %w", path, ErrNotExecutable, err)
}
