package fetch

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paramexec/paramexec/internal/dotenv"
)

// maxEnvFileSize caps an --env-file. The dotenv file of a real app is a few
// kilobytes; the cap keeps /dev/zero or a runaway generator from being read
// until memory runs out.
const maxEnvFileSize = 1 << 20

// envFileWait bounds the wait for a pipe or FIFO to be written and closed
// (--env-file <(generate-env)), unless the context's deadline comes first.
const envFileWait = 30 * time.Second

// EnvFileSource is a dotenv file, for development without AWS.
//
// A regular file is read again on every poll. Anything else that can be
// opened for reading, a pipe from process substitution (--env-file <(...)),
// a FIFO or a character device, is read once, at start-up: a pipe is empty
// once read, and re-reading it as "changed" would restart the child with
// every variable gone. A path that was a regular file at start-up must stay
// one; something else put in its place is a failed poll, never waited on.
type EnvFileSource struct {
	Path string
	Rank int

	mu   sync.Mutex
	kind envFileKind
	once Layer // what a read-once file held
	// checked is what the last version check read: a refresh hands on
	// these bytes, the ones whose hash the poll saw, not a later read.
	checked []byte
	// shownKey keys the content hash that Provenance shows (see parse).
	shownKey []byte
}

type envFileKind uint8

const (
	envFileUnread  envFileKind = iota
	envFileRegular             // re-read on every poll
	envFileOnce                // read at start-up, never again
)

func (s *EnvFileSource) String() string { return "--env-file " + s.Path }

// ReadOnce reports whether the file was found not to be a regular file, so
// that it is neither re-read nor watched.
func (s *EnvFileSource) ReadOnce() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kind == envFileOnce
}

// Load reads and parses the file. A key given twice keeps its last value,
// as every dotenv reader does. The version is a hash of the content, so a
// touch without an edit is no change.
func (s *EnvFileSource) Load(ctx context.Context) (Layer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kind == envFileOnce {
		return s.once, nil
	}
	data, regular, err := readEnvFile(ctx, s.Path, s.kind == envFileRegular)
	if err != nil {
		return Layer{}, err
	}
	layer, err := s.parse(data)
	if err != nil {
		return Layer{}, err
	}
	if regular {
		s.kind = envFileRegular
	} else {
		s.kind, s.once = envFileOnce, layer
	}
	return layer, nil
}

// parse turns the file's bytes into its layer.
func (s *EnvFileSource) parse(data []byte) (Layer, error) {
	entries, err := dotenv.Parse(s.Path, data)
	if err != nil {
		return Layer{}, err
	}
	index := make(map[string]int, len(entries))
	// The version shown is a hash keyed with a random key of this
	// source's own: it tells one content from another in the explain view
	// and the change log, and, unlike the plain hash, cannot confirm a
	// guess at a value the file holds.
	if s.shownKey == nil {
		s.shownKey = make([]byte, 32)
		rand.Read(s.shownKey)
	}
	mac := hmac.New(sha256.New, s.shownKey)
	mac.Write(data)
	shown := hex.EncodeToString(mac.Sum(nil)[:8])
	var vars []Var
	for _, e := range entries {
		origin := s.Path + ":" + strconv.Itoa(e.Line)
		v := Var{Name: e.Key, Value: e.Value, Origin: origin, Rank: s.Rank,
			From: Provenance{Source: s.String(), Item: origin, Version: shown}}
		if i, ok := index[e.Key]; ok {
			vars[i] = v
			continue
		}
		index[e.Key] = len(vars)
		vars = append(vars, v)
	}
	return Layer{Vars: vars, Versions: map[string]string{s.Path: contentVersion(data)}}, nil
}

// Versions rereads the file: it is local and small, so reading it on every
// poll costs nothing and catches edits the file watcher might miss (some
// network and overlay file systems send no events). Its version is a hash of
// the content. A read-once file never changes.
func (s *EnvFileSource) Versions(ctx context.Context, last Layer, _ bool) (map[string]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kind == envFileOnce {
		return last.Versions, nil
	}
	data, _, err := readEnvFile(ctx, s.Path, true)
	if err != nil {
		return nil, err
	}
	s.checked = data
	return map[string]string{s.Path: contentVersion(data)}, nil
}

// Refresh parses the bytes the version check read, whose hash is in now:
// a second read could catch a save between its truncate and its write,
// and hand on a file with variables missing under the hash of a whole
// one. Without them (a check made by another Versions since), the file is
// read again, and a read that differs from now is errStale.
func (s *EnvFileSource) Refresh(ctx context.Context, _ Layer, now map[string]string) (Layer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kind == envFileOnce {
		return s.once, nil
	}
	data := s.checked
	if data == nil || contentVersion(data) != now[s.Path] {
		var err error
		if data, _, err = readEnvFile(ctx, s.Path, true); err != nil {
			return Layer{}, err
		}
		if contentVersion(data) != now[s.Path] {
			return Layer{}, fmt.Errorf("%s: %w", s.Path, errStale)
		}
	}
	return s.parse(data)
}

// readEnvFile reads path, at most maxEnvFileSize bytes of it, and reports
// whether it is a regular file. The open never blocks (O_NONBLOCK: a FIFO
// without a writer would block a plain open forever); what was opened is
// then judged by fstat, so a swap between a check and the open cannot
// fool it. With regularOnly, anything but a regular file is an error
// before a byte is read.
func readEnvFile(ctx context.Context, path string, regularOnly bool) (data []byte, regular bool, err error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, false, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	switch mode := fi.Mode(); {
	case mode.IsRegular():
		data, err = io.ReadAll(io.LimitReader(f, maxEnvFileSize+1))
		if err == nil && len(data) > maxEnvFileSize {
			err = fmt.Errorf("%s is larger than %d bytes, more than any dotenv file", path, maxEnvFileSize)
		}
		return data, true, err
	case regularOnly:
		return nil, false, fmt.Errorf("%s is no longer a regular file (%s); keeping what it held", path, fileKind(mode))
	case mode&(os.ModeNamedPipe|os.ModeCharDevice|os.ModeDevice) == 0:
		return nil, false, fmt.Errorf("%s is a %s, not a file to read", path, fileKind(mode))
	}
	data, err = readStream(ctx, fd, path)
	return data, false, err
}

// readStream reads a pipe, FIFO or device to its end. poll(2) goes before
// each read: a FIFO opened non-blocking reads as at its end until a writer
// comes, while poll waits for that writer (Linux reports no hang-up for
// writers that were never there). Bounded by maxEnvFileSize, by
// envFileWait and by ctx.
func readStream(ctx context.Context, fd int, path string) ([]byte, error) {
	deadline := time.Now().Add(envFileWait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var data []byte
	buf := make([]byte, 32<<10)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("%s: no end of input after %s (a pipe or FIFO is read once, at start-up, to its end)", path, envFileWait)
		}
		// Short slices, so that a cancelled ctx is seen soon.
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(min(left, 100*time.Millisecond)/time.Millisecond)+1)
		if errors.Is(err, unix.EINTR) || (err == nil && n == 0) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: poll: %w", path, err)
		}
		n, err = unix.Read(fd, buf)
		switch {
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.EAGAIN):
			continue
		case err != nil:
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		case n == 0:
			return data, nil
		}
		if len(data)+n > maxEnvFileSize {
			return nil, fmt.Errorf("%s: more than %d bytes, more than any dotenv file", path, maxEnvFileSize)
		}
		data = append(data, buf[:n]...)
	}
}

func fileKind(mode os.FileMode) string {
	switch {
	case mode.IsDir():
		return "directory"
	case mode&os.ModeNamedPipe != 0:
		return "pipe"
	case mode&os.ModeSocket != 0:
		return "socket"
	case mode&os.ModeCharDevice != 0:
		return "character device"
	case mode&os.ModeDevice != 0:
		return "device"
	case mode&os.ModeSymlink != 0:
		return "symlink"
	}
	return "special file"
}

func contentVersion(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}
