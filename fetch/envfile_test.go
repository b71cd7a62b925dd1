package fetch

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// within runs f and fails the test if it has not returned after limit: the
// reads under test used to block forever, and a hung test says less than a
// failed one. limit is generous; it measures no speed.
func within[T any](t *testing.T, limit time.Duration, what string, f func() T) T {
	t.Helper()
	c := make(chan T, 1)
	go func() { c <- f() }()
	select {
	case v := <-c:
		return v
	case <-time.After(limit):
		t.Fatalf("%s still blocked after %s", what, limit)
		panic("unreachable")
	}
}

type loaded struct {
	layer Layer
	err   error
}

func load(t *testing.T, s *EnvFileSource) loaded {
	t.Helper()
	return within(t, 20*time.Second, "Load", func() loaded {
		l, err := s.Load(context.Background())
		return loaded{l, err}
	})
}

type checked struct {
	changed bool
	err     error
}

func changed(t *testing.T, s *EnvFileSource, last Layer) checked {
	t.Helper()
	return within(t, 20*time.Second, "Changed", func() checked {
		now, err := s.Versions(context.Background(), last, false)
		return checked{err == nil && !maps.Equal(now, last.Versions), err}
	})
}

func envVars(l Layer) string {
	var b strings.Builder
	for _, v := range l.Vars {
		fmt.Fprintf(&b, "%s=%s;", v.Name, v.Value)
	}
	return b.String()
}

// A FIFO is read once, to its end, even when its writer comes after the
// read began; then it is never opened again.
func TestEnvFileFIFOIsReadOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.env")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		// Opening for writing blocks until Load has opened for reading.
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		time.Sleep(100 * time.Millisecond) // a writer slower than the reader
		f.WriteString("A=1\nB=two\n")
		f.Close()
	}()
	s := &EnvFileSource{Path: path}
	got := load(t, s)
	if got.err != nil {
		t.Fatal(got.err)
	}
	if v := envVars(got.layer); v != "A=1;B=two;" {
		t.Fatalf("read %q", v)
	}
	if !s.ReadOnce() {
		t.Error("a FIFO is not marked read-once")
	}
	// No writer now: a plain open would block forever, a re-read would be
	// empty. Neither may happen.
	if c := changed(t, s, got.layer); c.changed || c.err != nil {
		t.Errorf("Changed = %v, %v on a FIFO read at start-up", c.changed, c.err)
	}
	if again := load(t, s); again.err != nil || envVars(again.layer) != "A=1;B=two;" {
		t.Errorf("Load again = %q, %v", envVars(again.layer), again.err)
	}
}

// --env-file <(...) hands paramexec a /dev/fd path to a pipe.
func TestEnvFileProcessSubstitutionPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go func() {
		w.WriteString("export TOKEN_NAME=x\n")
		w.Close()
	}()
	s := &EnvFileSource{Path: fmt.Sprintf("/dev/fd/%d", r.Fd())}
	got := load(t, s)
	if got.err != nil {
		t.Fatal(got.err)
	}
	if v := envVars(got.layer); v != "TOKEN_NAME=x;" {
		t.Fatalf("read %q", v)
	}
	// The pipe is at its end now; a re-read would find it empty and drop
	// every variable.
	if c := changed(t, s, got.layer); c.changed || c.err != nil {
		t.Errorf("Changed = %v, %v on a pipe read at start-up", c.changed, c.err)
	}
}

func TestEnvFileEndlessDeviceIsCapped(t *testing.T) {
	got := load(t, &EnvFileSource{Path: "/dev/zero"})
	if got.err == nil || !strings.Contains(got.err.Error(), fmt.Sprint(maxEnvFileSize)) {
		t.Errorf("Load(/dev/zero) error = %v, want the %d-byte cap", got.err, maxEnvFileSize)
	}
}

func TestEnvFileLargeRegularFileIsCapped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.env")
	line := "A=" + strings.Repeat("x", 1000) + "\n"
	if err := os.WriteFile(path, []byte(strings.Repeat(line, maxEnvFileSize/len(line)+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	got := load(t, &EnvFileSource{Path: path})
	if got.err == nil || !strings.Contains(got.err.Error(), "larger than") {
		t.Errorf("Load of a %d-byte file: error %v", maxEnvFileSize+len(line), got.err)
	}
}

func TestEnvFileDirectoryIsAnError(t *testing.T) {
	got := load(t, &EnvFileSource{Path: t.TempDir()})
	if got.err == nil || !strings.Contains(got.err.Error(), "directory") {
		t.Errorf("Load of a directory: error %v", got.err)
	}
}

// A FIFO renamed over a regular file that is polled: the poll fails at
// once, without waiting for a writer, and the file is read again once it
// is a regular file again.
func TestEnvFileFIFOSwappedInFailsThePoll(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.env")
	if err := os.WriteFile(path, []byte("A=1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &EnvFileSource{Path: path}
	got := load(t, s)
	if got.err != nil {
		t.Fatal(got.err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(fifo, path); err != nil {
		t.Fatal(err)
	}
	if c := changed(t, s, got.layer); c.err == nil || !strings.Contains(c.err.Error(), "no longer a regular file") {
		t.Errorf("Changed with a FIFO in place = %v, %v; want an error", c.changed, c.err)
	}
	if l := load(t, s); l.err == nil {
		t.Errorf("Load with a FIFO in place read %q", envVars(l.layer))
	}
	if s.ReadOnce() {
		t.Error("a regular file became read-once")
	}
	if err := os.WriteFile(filepath.Join(dir, "new"), []byte("A=2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "new"), path); err != nil {
		t.Fatal(err)
	}
	if c := changed(t, s, got.layer); !c.changed || c.err != nil {
		t.Errorf("Changed after the file came back = %v, %v", c.changed, c.err)
	}
}

// A file watch that cannot start leaves the polls to apply edits; Run
// used to return at once, and no change of any source was applied again.
func TestWatcherPollsOnWhenTheFileWatchCannotStart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.env")
	if err := os.WriteFile(path, []byte("A=1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := &EnvFileSource{Path: path}
	layers, err := loadAll(t.Context(), []Source{src})
	if err != nil {
		t.Fatal(err)
	}
	// filewatch.New refuses a negative debounce: the watch cannot start,
	// as when inotify is unavailable. (The files watched are the sources'
	// own, so a path that cannot be watched cannot be loaded either.)
	w := &Watcher{
		Sources:  []Source{src},
		Interval: 50 * time.Millisecond,
		Debounce: -time.Millisecond,
	}
	ctx, cancel := context.WithCancel(t.Context())
	updates := make(chan Update, 10)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, layers, func(_ context.Context, u Update) { updates <- u }) }()
	if err := os.WriteFile(path, []byte("A=2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case u := <-updates:
		if strings.Join(u.Changed, ",") != "A" {
			t.Errorf("update names %v", u.Changed)
		}
	case err := <-done:
		t.Fatalf("Run returned %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no update within 30s of the edit")
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Run returned %v, want its context's error", err)
	}
}

// TestEnvFileRefreshIsTheCheckedRead: the values a poll hands on are the
// bytes whose hash the version check saw, even when the file is saved
// again between the check and the refresh (a save caught between its
// truncate and its write would otherwise become the environment).
func TestEnvFileRefreshIsTheCheckedRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.env")
	mustWrite(t, path, "A=1\nB=1\n")
	src := &EnvFileSource{Path: path}
	l := load(t, src)
	if l.err != nil {
		t.Fatal(l.err)
	}
	mustWrite(t, path, "A=2\nB=2\n")
	now, err := src.Versions(t.Context(), l.layer, false)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, path, "") // the truncate of the next save
	next, err := src.Refresh(t.Context(), l.layer, now)
	if err != nil {
		t.Fatal(err)
	}
	if got := envVars(next); got != "A=2;B=2;" || !maps.Equal(next.Versions, now) {
		t.Errorf("refresh gave %q with versions %v; want the checked read A=2;B=2; at %v", got, next.Versions, now)
	}
}
