package filewatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// The box running tests is shared and noisy: timings below are deadlines for
// events that should arrive, and quiet periods (several debounces long) after
// which no further event may arrive. Nothing asserts speed.
const (
	testDebounce = 300 * time.Millisecond
	testDeadline = 10 * time.Second
	testQuiet    = 5 * testDebounce
)

type harness struct {
	w    *Watcher
	out  chan []string
	errc chan error
}

// start runs a watcher on paths until the test ends. out is unbuffered, as a
// consumer would see it.
func start(t *testing.T, paths ...string) *harness {
	t.Helper()
	return startLogging(t, nil, paths...)
}

// startLogging is start with the watcher's log going to log.
func startLogging(t *testing.T, log *slog.Logger, paths ...string) *harness {
	t.Helper()
	w, err := New(paths, testDebounce, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{w: w, out: make(chan []string), errc: make(chan error, 1)}
	go func() { h.errc <- w.Run(ctx, h.out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.errc:
		case <-time.After(testDeadline):
			t.Errorf("Run did not return after cancel")
		}
		w.Close()
	})
	return h
}

// expect waits for one notification and checks its paths.
func (h *harness) expect(t *testing.T, want ...string) {
	t.Helper()
	select {
	case got := <-h.out:
		slices.Sort(got)
		slices.Sort(want)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("notified %q, want %q", got, want)
		}
	case err := <-h.errc:
		t.Fatalf("Run returned %v while waiting for %q", err, want)
	case <-time.After(testDeadline):
		t.Fatalf("no notification for %q within %v", want, testDeadline)
	}
}

// expectNone checks that nothing is notified during a quiet period.
func (h *harness) expectNone(t *testing.T) {
	t.Helper()
	select {
	case got := <-h.out:
		t.Fatalf("unexpected notification %q", got)
	case err := <-h.errc:
		t.Fatalf("Run returned %v", err)
	case <-time.After(testQuiet):
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeInPlace rewrites path without replacing its inode, the way `echo >`
// or a plain editor save does.
func writeInPlace(t *testing.T, path, content string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func rename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

func TestFileWatchPlainWrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "app.env")
	write(t, p, "A=1\n")
	h := start(t, p)

	writeInPlace(t, p, "A=2\n")
	h.expect(t, p)
	h.expectNone(t)

	// The watcher must have taken the new state as its baseline.
	writeInPlace(t, p, "A=3\n")
	h.expect(t, p)
	h.expectNone(t)
}

func TestFileWatchAtomicSave(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "app.env")
	write(t, p, "A=1\n")
	h := start(t, p)

	for i := range 2 {
		tmp := filepath.Join(dir, ".app.env.tmp")
		write(t, tmp, fmt.Sprintf("A=new%d\n", i))
		rename(t, tmp, p)
		h.expect(t, p)
		h.expectNone(t)
	}
}

// TestFileWatchKubernetesSwap mimics the kubelet's AtomicWriter: files live in
// a timestamped directory, ..data points at it, and the visible names point
// through ..data. An update writes a new directory and renames a new ..data_tmp
// link over ..data.
func TestFileWatchKubernetesSwap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	gen := 0
	swap := func(files map[string]string) {
		gen++
		ts := fmt.Sprintf("..2026_01_01_00_00_%02d.%d", gen, gen)
		if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, content := range files {
			write(t, filepath.Join(dir, ts, name), content)
		}
		old, _ := os.Readlink(filepath.Join(dir, "..data"))
		symlink(t, ts, filepath.Join(dir, "..data_tmp"))
		rename(t, filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data"))
		for name := range files {
			link := filepath.Join(dir, name)
			if _, err := os.Lstat(link); errors.Is(err, os.ErrNotExist) {
				symlink(t, filepath.Join("..data", name), link)
			}
		}
		if old != "" {
			if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
				t.Fatal(err)
			}
		}
	}
	swap(map[string]string{"app.env": "A=1\n", "other.env": "B=1\n"})
	p := filepath.Join(dir, "app.env")
	h := start(t, p)

	swap(map[string]string{"app.env": "A=2\n", "other.env": "B=1\n"})
	h.expect(t, p)
	h.expectNone(t)

	swap(map[string]string{"app.env": "A=3\n", "other.env": "B=1\n"})
	h.expect(t, p)
	h.expectNone(t)

	// Only another key of the ConfigMap changed: app.env's content did not.
	swap(map[string]string{"app.env": "A=3\n", "other.env": "B=2\n"})
	h.expectNone(t)
}

// TestFileWatchSymlinkElsewhere watches a link into another directory, where
// writes happen in place and the link is later retargeted to a third one.
func TestFileWatchSymlinkElsewhere(t *testing.T) {
	t.Parallel()
	linkDir, dirB, dirC := t.TempDir(), t.TempDir(), t.TempDir()
	target := filepath.Join(dirB, "target.env")
	write(t, target, "A=1\n")
	p := filepath.Join(linkDir, "app.env")
	symlink(t, target, p)
	h := start(t, p)

	writeInPlace(t, target, "A=2\n")
	h.expect(t, p)
	h.expectNone(t)

	moved := filepath.Join(dirC, "new.env")
	write(t, moved, "A=3\n")
	symlink(t, moved, filepath.Join(linkDir, ".tmp-link"))
	rename(t, filepath.Join(linkDir, ".tmp-link"), p)
	h.expect(t, p)
	h.expectNone(t)

	// The new target's directory must now be watched, the old one not matter.
	writeInPlace(t, moved, "A=4\n")
	h.expect(t, p)
	writeInPlace(t, target, "A=5\n")
	h.expectNone(t)
}

func TestFileWatchBurst(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "app.env")
	write(t, p, "A=0\n")
	h := start(t, p)

	// Gaps between writes are far below the debounce, so this is one burst.
	for i := 1; i <= 20; i++ {
		writeInPlace(t, p, fmt.Sprintf("A=%d\n", i))
		time.Sleep(time.Millisecond)
	}
	h.expect(t, p)
	h.expectNone(t)
}

func TestFileWatchIgnoresNoise(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "app.env")
	write(t, p, "A=1\n")
	h := start(t, p)

	for i := range 5 {
		write(t, filepath.Join(dir, "unrelated.txt"), fmt.Sprint(i))
	}
	// Same content, new mtime; and an identical atomic save.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(p, later, later); err != nil {
		t.Fatal(err)
	}
	writeInPlace(t, p, "A=1\n")
	tmp := filepath.Join(dir, "app.env.new")
	write(t, tmp, "A=1\n")
	rename(t, tmp, p)
	h.expectNone(t)
}

func TestFileWatchDeleteRecreate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "app.env")
	write(t, p, "A=1\n")
	h := start(t, p)

	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	h.expectNone(t) // a missing file is nothing to read yet
	write(t, p, "A=1\n")
	h.expect(t, p) // back, even with the same content
	h.expectNone(t)
}

// A deploy tool that replaces the whole config directory: removed, and
// made again later (after the check its removal prompted). The watch on
// the directory went with it; the next one must see the new file, not only
// the next poll. expectNone watches 5 debounces, by which time the check
// the removal prompted has run and found no directory.
func TestFileWatchDirectoryDeletedAndRecreated(t *testing.T) {
	t.Parallel()
	parent := t.TempDir()
	dir := filepath.Join(parent, "conf")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "app.env")
	write(t, p, "A=1\n")
	h := start(t, p)

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	h.expectNone(t)
	for i, content := range []string{"A=2\n", "A=3\n"} {
		if i == 0 {
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		write(t, p, content) // the second: an edit in the new directory
		h.expect(t, p)
	}
	h.expectNone(t)
}

func TestFileWatchMissingAtStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "later.env")
	h := start(t, p)
	write(t, p, "A=1\n")
	h.expect(t, p)
}

func TestFileWatchSeveralFiles(t *testing.T) {
	t.Parallel()
	dir, dir2 := t.TempDir(), t.TempDir()
	// Paths come back exactly as given, unclean or not.
	a := dir + "/x/../a.env"
	b := filepath.Join(dir2, "b.env")
	if err := os.Mkdir(filepath.Join(dir, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, a, "A=1\n")
	write(t, b, "B=1\n")
	h := start(t, a, b, a)

	writeInPlace(t, b, "B=2\n")
	h.expect(t, b)
	writeInPlace(t, a, "A=2\n")
	writeInPlace(t, b, "B=3\n")
	h.expect(t, a, b)
	h.expectNone(t)
}

func TestFileWatchNewErrors(t *testing.T) {
	t.Parallel()
	if _, err := New(nil, time.Second, nil); err == nil {
		t.Error("no paths: want an error")
	}
	p := filepath.Join(t.TempDir(), "app.env")
	if _, err := New([]string{p}, -time.Second, nil); err == nil {
		t.Error("negative debounce: want an error")
	}
	missing := filepath.Join(t.TempDir(), "nodir", "app.env")
	if _, err := New([]string{missing}, time.Second, nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing directory: error %v, want os.ErrNotExist", err)
	}
}

func TestFileWatchStop(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "app.env")
	write(t, p, "A=1\n")

	run := func(ctx context.Context, w *Watcher, out chan []string) chan error {
		errc := make(chan error, 1)
		go func() { errc <- w.Run(ctx, out) }()
		return errc
	}
	wait := func(errc chan error) error {
		t.Helper()
		select {
		case err := <-errc:
			return err
		case <-time.After(testDeadline):
			t.Fatal("Run did not return")
			return nil
		}
	}

	t.Run("cancel", func(t *testing.T) {
		w, err := New([]string{p}, testDebounce, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		ctx, cancel := context.WithCancel(context.Background())
		errc := run(ctx, w, make(chan []string))
		cancel()
		if err := wait(errc); !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	})
	t.Run("close", func(t *testing.T) {
		w, err := New([]string{p}, testDebounce, nil)
		if err != nil {
			t.Fatal(err)
		}
		errc := run(context.Background(), w, make(chan []string))
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := w.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if err := wait(errc); !errors.Is(err, fsnotify.ErrClosed) {
			t.Errorf("Run = %v, want fsnotify.ErrClosed", err)
		}
	})
	t.Run("close while sending", func(t *testing.T) {
		w, err := New([]string{p}, 10*time.Millisecond, nil)
		if err != nil {
			t.Fatal(err)
		}
		// Give Run a change to report with nobody reading out, then close: the
		// blocked send must not keep Run alive. Checking the watcher's own
		// state would race with Run, so just leave it time to get stuck.
		errc := run(context.Background(), w, make(chan []string))
		writeInPlace(t, p, "A=2\n")
		time.Sleep(testDebounce)
		w.Close()
		if err := wait(errc); !errors.Is(err, fsnotify.ErrClosed) {
			t.Errorf("Run = %v, want fsnotify.ErrClosed", err)
		}
	})
}

// The file watcher fingerprints a FIFO put in place of a watched file
// without opening it for reading in blocking mode.
func TestFileWatcherFingerprintOfFIFODoesNotBlock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.env")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	c := make(chan fingerprint, 1)
	go func() { c <- fingerprintOf(path) }()
	select {
	case fp := <-c:
		if fp.state != unreadable {
			t.Errorf("state %v, want unreadable", fp.state)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("fingerprint still blocked after %s", 20*time.Second)
	}
}

// A debug log written to a file in the watched directory (paramexec's
// stderr redirected next to its .env) must not feed itself: an event on
// a file that is not watched logs nothing. With a line per event, each
// line was the next line's event, tens of thousands a second; the quiet
// period (1.5 s) would hold thousands.
func TestFileWatchLogInTheWatchedDirectoryDoesNotFeedItself(t *testing.T) {
	dir := t.TempDir()
	env := filepath.Join(dir, "app.env")
	write(t, env, "A=1\n")
	logFile, err := os.OpenFile(filepath.Join(dir, "paramexec.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logFile.Close() }) // after the watcher's, which is registered later
	h := startLogging(t, slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug})), env)
	fmt.Fprintln(logFile, "a line of someone else's") // the first event in the directory
	h.expectNone(t)
	data, err := os.ReadFile(logFile.Name())
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(data, []byte("\n")); n > 10 {
		t.Errorf("the log grew to %d lines on its own events:\n%.2000s", n, data)
	}
	write(t, env, "A=2\n") // and a real change is still seen
	h.expect(t, env)
}
