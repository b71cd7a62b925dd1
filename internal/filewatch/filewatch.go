// Package filewatch reports when files change, through editors' atomic
// saves, symlink swaps and plain writes, by watching their directories.
package filewatch

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// Watcher reports when any of a set of files changes, seeing editors'
// atomic saves (write temp + rename over), Kubernetes-style symlink swaps
// (..data symlink retargeted), plain writes, and delete+recreate.
//
// It watches directories, not files: an atomic save or a symlink swap puts a
// new inode at the path, and a watch on the old inode would go quiet. Any event
// in a watched directory only prompts a re-check; a file counts as changed when
// its fingerprint (content hash for files up to 1 MiB, else resolved path,
// inode, size and mtime) differs from the last one seen, so writes to unrelated
// files in the same directory and touch(1) are ignored.
//
// Create the watcher before reading the files the first time: a change between
// the read and New would otherwise go unnoticed.
type Watcher struct {
	paths    []string // as given, deduplicated
	abs      []string // absolute form of paths, same order
	debounce time.Duration
	log      *slog.Logger
	fsw      *fsnotify.Watcher

	closed    chan struct{} // closed by Close, so a Run blocked on out returns too
	closeOnce sync.Once
	closeErr  error

	last []fingerprint // last fingerprint of abs[i]; owned by New, then Run
}

// hashLimit bounds the files whose content is hashed; dotenv files are far
// below it, and a larger file is compared by metadata instead.
const hashLimit = 1 << 20

// New starts watching the directories of paths (and, for symlinks,
// of every link in the chain) and records the files' current state. A missing
// file is allowed as long as its directory exists; its appearance is a change.
// A nil log discards diagnostics. debounce must not be negative.
func New(paths []string, debounce time.Duration, log *slog.Logger) (*Watcher, error) {
	if len(paths) == 0 {
		return nil, errors.New("watch files: no paths")
	}
	if debounce < 0 {
		return nil, fmt.Errorf("watch files: negative debounce %v", debounce)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{
		debounce: debounce,
		log:      log,
		closed:   make(chan struct{}),
	}
	seen := make(map[string]bool)
	for _, p := range paths {
		if seen[p] {
			continue
		}
		seen[p] = true
		a, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("watch %s: %w", p, err)
		}
		w.paths = append(w.paths, p)
		w.abs = append(w.abs, a)
	}

	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch files: %w", err)
	}
	w.fsw = fsw
	// The file's own directory must be watchable from the start; without it no
	// change could ever be seen. Directories further down a symlink chain may
	// come and go, so they are best effort (see syncDirs).
	for i, a := range w.abs {
		dir := canonical(filepath.Dir(a))
		if err := fsw.Add(dir); err != nil {
			fsw.Close()
			return nil, fmt.Errorf("watch %s: directory %s: %w", w.paths[i], dir, err)
		}
	}
	w.syncDirs()
	w.last = make([]fingerprint, len(w.abs))
	for i, a := range w.abs {
		w.last[i] = fingerprintOf(a)
	}
	return w, nil
}

// Run watches until ctx is done, sending the set of changed paths (as given to
// New) on out once per burst: events are debounced so a burst of
// writes within `debounce` gives one send. A directory that never goes quiet
// is still re-checked every 10 debounce periods. Closes nothing it does not
// own; returns ctx.Err() or a watcher error. Run must not be called twice.
func (w *Watcher) Run(ctx context.Context, out chan<- []string) error {
	maxWait := 10 * w.debounce
	timer := time.NewTimer(0)
	timer.Stop()
	defer timer.Stop()
	var firstEvent time.Time // zero when no check is pending
	schedule := func() {
		now := time.Now()
		if firstEvent.IsZero() {
			firstEvent = now
		}
		timer.Reset(min(w.debounce, max(firstEvent.Add(maxWait).Sub(now), 0)))
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.closed:
			return fmt.Errorf("watch files: %w", fsnotify.ErrClosed)
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return fmt.Errorf("watch files: %w", fsnotify.ErrClosed)
			}
			// Every event in a watched directory prompts a re-check (a swap
			// can name only a link of a chain), but only one naming a
			// watched file is logged: paramexec's own log may be a file in
			// that directory, and a line for its write would be the event
			// of the next line.
			if slices.Contains(w.abs, ev.Name) {
				w.log.Debug("file event", "name", ev.Name, "op", ev.Op.String())
			}
			schedule()
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return fmt.Errorf("watch files: %w", fsnotify.ErrClosed)
			}
			if !errors.Is(err, fsnotify.ErrEventOverflow) {
				return fmt.Errorf("watch files: %w", err)
			}
			// Lost events: re-checking every file recovers whatever they were.
			w.log.Warn("file watch queue overflowed; re-checking files")
			schedule()
		case <-timer.C:
			firstEvent = time.Time{}
			changed := w.check()
			if len(changed) == 0 {
				continue
			}
			select {
			case out <- changed:
			case <-ctx.Done():
				return ctx.Err()
			case <-w.closed:
				return fmt.Errorf("watch files: %w", fsnotify.ErrClosed)
			}
		}
	}
}

// Close stops the watcher; a running Run returns. Safe to call more than once
// and from any goroutine.
func (w *Watcher) Close() error {
	w.closeOnce.Do(func() {
		close(w.closed)
		w.closeErr = w.fsw.Close()
	})
	return w.closeErr
}

// check re-syncs the watched directories, then fingerprints every file and
// returns the paths whose fingerprint changed to one worth reporting. Watches
// go first so that a change racing with the check is caught by the next event.
func (w *Watcher) check() []string {
	w.syncDirs()
	var changed []string
	for i, a := range w.abs {
		fp := fingerprintOf(a)
		prev := w.last[i]
		if fp == prev {
			continue
		}
		w.last[i] = fp
		switch fp.state {
		case missing:
			// Nothing to read yet; the change is reported when it comes back.
			w.log.Info("watched file disappeared", "path", w.paths[i])
		case unreadable:
			w.log.Warn("watched file cannot be read", "path", w.paths[i])
		default:
			w.log.Debug("watched file changed", "path", w.paths[i])
			changed = append(changed, w.paths[i])
		}
	}
	return changed
}

// syncDirs watches the directory of every link in each file's symlink chain and
// drops watches no chain needs any more (the previous Kubernetes ..2026_*
// directory, say). A directory that does not exist (deleted, to be made
// again by a deploy tool) is stood in for by its nearest existing ancestor,
// whose events prompt the check that watches it again once it is back.
// Failures are logged, not fatal.
func (w *Watcher) syncDirs() {
	want := make(map[string]bool)
	for _, a := range w.abs {
		want[canonical(filepath.Dir(a))] = true
		for _, d := range chainDirs(a) {
			want[d] = true
		}
	}
	// fsnotify drops a watch by itself when its directory is deleted; trust its
	// list over ours so a recreated directory is watched again.
	have := make(map[string]bool)
	for _, d := range w.fsw.WatchList() {
		have[d] = true
	}
	watched := make(map[string]bool)
	for d := range want {
		if got := w.watch(d, have); got != "" {
			watched[got] = true
		}
	}
	for d := range have {
		if !watched[d] {
			// The watch may already be gone with its directory.
			_ = w.fsw.Remove(d)
			w.log.Debug("stopped watching directory", "dir", d)
		}
	}
}

// watch watches dir, or else its nearest ancestor that exists, and returns
// the directory watched ("" if none). have is what is watched already.
func (w *Watcher) watch(dir string, have map[string]bool) string {
	for d := dir; ; d = filepath.Dir(d) {
		if have[d] {
			return d
		}
		err := w.fsw.Add(d)
		if err == nil {
			have[d] = true
			w.log.Debug("watching directory", "dir", d, "for", dir)
			return d
		}
		if !errors.Is(err, os.ErrNotExist) || d == filepath.Dir(d) {
			if !errors.Is(err, fsnotify.ErrClosed) {
				w.log.Warn("cannot watch directory", "dir", d, "err", err)
			}
			return ""
		}
	}
}

// chainDirs returns the canonical directory of every link in p's symlink
// chain after p itself. For Kubernetes' app.env -> ..data/app.env with
// ..data -> ..2026_01 that is the ..2026_01 directory.
func chainDirs(p string) []string {
	var dirs []string
	cur := p
	// 40 is the kernel's own limit on links followed in one lookup.
	for range 40 {
		fi, err := os.Lstat(cur)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			break
		}
		target, err := os.Readlink(cur)
		if err != nil {
			break
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(cur), target)
		}
		cur = target
		dirs = append(dirs, canonical(filepath.Dir(cur)))
	}
	return dirs
}

// canonical resolves symlinks in dir so each directory is watched under one
// name; fsnotify keys watches by path. An unresolvable dir is returned as is.
func canonical(dir string) string {
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		return r
	}
	return filepath.Clean(dir)
}

type fileState uint8

const (
	present fileState = iota
	missing
	unreadable
)

// fingerprint identifies a file's content cheaply. It is comparable; equal prints
// mean "no change worth reporting".
type fingerprint struct {
	state fileState
	size  int64
	hash  [sha256.Size]byte // content, for files up to hashLimit
	// Metadata identity, for larger files only: with a hash it would turn every
	// identical atomic save into a change.
	resolved string
	dev, ino uint64
	mtime    int64
}

func fingerprintOf(path string) fingerprint {
	// Open without blocking and judge what was opened: a FIFO swapped in
	// between a stat and a plain open would block the watcher for good.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fingerprint{state: missing}
		}
		return fingerprint{state: unreadable}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return fingerprint{state: unreadable}
	}
	if fi.Size() <= hashLimit {
		h := sha256.New()
		// The size is what was hashed: the file may be growing under us.
		n, err := io.Copy(h, io.LimitReader(f, hashLimit+1))
		if err != nil {
			return fingerprint{state: unreadable}
		}
		fp := fingerprint{state: present, size: n}
		h.Sum(fp.hash[:0])
		return fp
	}
	fp := fingerprint{state: present, size: fi.Size()}
	fp.resolved = canonical(path)
	fp.mtime = fi.ModTime().UnixNano()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		fp.dev, fp.ino = uint64(st.Dev), st.Ino
	}
	return fp
}
