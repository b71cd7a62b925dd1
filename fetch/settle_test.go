package fetch

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The settler takes its times from the caller, so these tests drive it with
// made-up instants: no clock, no sleeps.

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func testSettler(settle, maxWait, splay time.Duration) (*settler, *bytes.Buffer) {
	var buf bytes.Buffer
	s := newSettler(settle, maxWait, splay, slog.New(slog.NewTextHandler(&buf, nil)))
	s.randN = func(n time.Duration) time.Duration { return n / 2 }
	return s, &buf
}

func TestSettlerOffHandsOnAtOnce(t *testing.T) {
	s, _ := testSettler(0, 0, 0)
	if !s.seen(at(0), []string{"A"}) || s.state != idle {
		t.Fatalf("with no settle or splay a change was held (state %v)", s.state)
	}
	if _, ok := s.deadline(); ok {
		t.Error("an idle settler has a deadline")
	}
	if s.pollEvery(time.Minute) != time.Minute {
		t.Error("an idle settler changed the poll period")
	}
}

func TestSettlerWaitsForQuiet(t *testing.T) {
	s, log := testSettler(3*time.Second, 12*time.Second, 0)
	if s.seen(at(0), []string{"A"}) {
		t.Fatal("handed on without settling")
	}
	if s.state != settling || s.pollEvery(time.Minute) != 1500*time.Millisecond {
		t.Fatalf("state %v, poll every %v; want settling every 1.5s", s.state, s.pollEvery(time.Minute))
	}
	if s.quiet(at(1.5)) {
		t.Fatal("handed on after 1.5s of quiet, settle is 3s")
	}
	// A second change 2s after the first extends the wait from there.
	if s.seen(at(2), []string{"B"}) {
		t.Fatal("handed on at a change")
	}
	if s.quiet(at(3.5)) || s.quiet(at(4.9)) {
		t.Fatal("handed on less than 3s after the latest change")
	}
	if !s.quiet(at(5)) || s.state != idle {
		t.Fatalf("not handed on after 3s of quiet (state %v)", s.state)
	}
	if got := log.String(); strings.Count(got, "change seen; settling") != 2 ||
		!strings.Contains(got, `msg=settled changed="[A B]" by=quiet`) {
		t.Errorf("log:\n%s", got)
	}
}

func TestSettlerMaxBoundsTheWait(t *testing.T) {
	s, log := testSettler(3*time.Second, 6*time.Second, 0)
	s.seen(at(0), []string{"A"})
	for i := 1.0; i < 6; i++ {
		if s.seen(at(i), []string{"A"}) || s.quiet(at(i+0.5)) {
			t.Fatalf("handed on at %vs while changes kept coming", i)
		}
	}
	if d, ok := s.deadline(); !ok || !d.Equal(at(6)) {
		t.Fatalf("deadline %v %v, want settle-max after the first change", d, ok)
	}
	if s.expired(at(5.9)) {
		t.Fatal("handed on before settle-max")
	}
	if !s.expired(at(6)) || s.state != idle {
		t.Fatalf("not handed on at settle-max (state %v)", s.state)
	}
	if !strings.Contains(log.String(), "by=settle-max") {
		t.Errorf("log does not say settle-max ended it:\n%s", log.String())
	}
}

func TestSettlerSplay(t *testing.T) {
	s, log := testSettler(0, 0, 4*time.Second) // randN picks 2s
	if s.seen(at(10), []string{"A"}) || s.state != splaying {
		t.Fatalf("state %v, want splaying", s.state)
	}
	if d, _ := s.deadline(); !d.Equal(at(12)) {
		t.Fatalf("release at %v, want 2s after the change", d)
	}
	// A change during the splay joins it, without moving the release.
	if s.seen(at(11), []string{"B"}) || s.quiet(at(11.5)) || s.expired(at(11.9)) {
		t.Fatal("handed on before the release")
	}
	if d, _ := s.deadline(); !d.Equal(at(12)) {
		t.Fatalf("a change moved the release to %v", d)
	}
	if !s.expired(at(12)) || s.state != idle {
		t.Fatal("not handed on at the release")
	}
	if !strings.Contains(log.String(), `msg=splaying changed=[A] delay=2s`) ||
		!strings.Contains(log.String(), `joins the change held for splay" changed=[B] release_in=1s`) {
		t.Errorf("log:\n%s", log.String())
	}
}

func TestSettlerSettleThenSplay(t *testing.T) {
	s, _ := testSettler(2*time.Second, 8*time.Second, 4*time.Second)
	s.seen(at(0), []string{"A"})
	if s.quiet(at(2)) || s.state != splaying {
		t.Fatalf("after the quiet: state %v, want splaying", s.state)
	}
	if d, _ := s.deadline(); !d.Equal(at(4)) {
		t.Fatalf("release %v, want the splay counted from the quiet poll", d)
	}
	// While splaying the settle's faster polls are over.
	if s.pollEvery(time.Minute) != time.Minute {
		t.Error("splaying still polls at the settle's pace")
	}
	if !s.expired(at(4)) {
		t.Fatal("not handed on at the release")
	}
	// The next change starts afresh.
	if s.seen(at(20), []string{"C"}) || s.state != settling || !s.first.Equal(at(20)) {
		t.Fatalf("a later change: state %v first %v", s.state, s.first)
	}
}

func TestSettlerPollPeriodBounds(t *testing.T) {
	for _, tc := range []struct {
		settle, usual, want time.Duration
	}{
		{10 * time.Second, time.Minute, 5 * time.Second},
		{10 * time.Second, 2 * time.Second, 2 * time.Second}, // never slower than usual
		{time.Second, time.Minute, time.Second},              // never under 1s
	} {
		s, _ := testSettler(tc.settle, 4*tc.settle, 0)
		s.seen(t0, nil)
		if got := s.pollEvery(tc.usual); got != tc.want {
			t.Errorf("settle %v, interval %v: poll every %v, want %v", tc.settle, tc.usual, got, tc.want)
		}
	}
}

// lockedBuffer is a log the Watcher writes while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// settleFile runs a Watcher with Settle over one .env file holding
// content, and returns the file, the updates and the log. It polls every
// second too, so an edit made before the file watcher is up is still seen.
func settleFile(t *testing.T, content string, settle, settleMax time.Duration) (string, <-chan Update, *lockedBuffer) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "app.env")
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	sources := []Source{&EnvFileSource{Path: file}}
	layers, err := loadAll(t.Context(), sources)
	if err != nil {
		t.Fatal(err)
	}
	log := &lockedBuffer{}
	w := &Watcher{Sources: sources, Interval: time.Second, Debounce: 50 * time.Millisecond,
		Settle: settle, SettleMax: settleMax,
		Log: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	ctx, cancel := context.WithCancel(t.Context())
	updates := make(chan Update, 10)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, layers, func(_ context.Context, u Update) { updates <- u }) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return file, updates, log
}

func waitLog(t *testing.T, log *lockedBuffer, what string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(log.String(), what) < n {
		if time.Now().After(deadline) {
			t.Fatalf("no %d× %q in the log within 30s:\n%s", n, what, log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustWrite(t *testing.T, file, content string) {
	t.Helper()
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Two edits of a .env file, the second while the first settles, are one
// update with both: the file event of the second extends the wait.
func TestWatcherSettlesFileEdits(t *testing.T) {
	file, updates, log := settleFile(t, "A=1\nB=1\n", 1500*time.Millisecond, time.Minute)
	mustWrite(t, file, "A=2\nB=1\n")
	waitLog(t, log, "change seen; settling", 1)
	mustWrite(t, file, "A=2\nB=2\n")
	waitLog(t, log, "change seen; settling", 2)
	select {
	case u := <-updates:
		if strings.Join(u.Changed, ",") != "A,B" || !slicesContain(u.Env, "A=2", "B=2") {
			t.Errorf("update %v, env %v; want A and B with both new values", u.Changed, u.Env)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no update within 30s; log:\n%s", log.String())
	}
	// The one update came after the second edit was seen, so the first was
	// not handed on alone; a later one could only come from another change.
	if !strings.Contains(log.String(), "by=quiet") {
		t.Errorf("the log does not say the wait ended in quiet:\n%s", log.String())
	}
}

// An edit undone while it settles reaches no one.
func TestWatcherSettleUndone(t *testing.T) {
	file, updates, log := settleFile(t, "A=1\n", time.Second, 0)
	mustWrite(t, file, "A=2\n")
	waitLog(t, log, "change seen; settling", 1)
	mustWrite(t, file, "A=1\n")
	waitLog(t, log, "undone while held", 1)
	select {
	case u := <-updates:
		t.Errorf("an undone edit was handed on: %v", u.Changed)
	default:
	}
}

func slicesContain(env []string, want ...string) bool {
	for _, w := range want {
		found := false
		for _, kv := range env {
			found = found || kv == w
		}
		if !found {
			return false
		}
	}
	return true
}
