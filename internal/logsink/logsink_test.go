package logsink

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func notice(n int) []byte { return []byte(fmt.Sprintf("DROPPED %d\n", n)) }

// countLines reads what the sink wrote: numbered lines and DROPPED counts.
func countLines(t *testing.T, r io.Reader) (lines, dropped int) {
	t.Helper()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if n, ok := strings.CutPrefix(sc.Text(), "DROPPED "); ok {
			k, err := strconv.Atoi(n)
			if err != nil {
				t.Fatalf("bad notice %q", sc.Text())
			}
			dropped += k
			continue
		}
		lines++
	}
	return lines, dropped
}

// A pipe nobody reads stalls the writer, never Write; once read, every line
// is either delivered or counted.
func TestStalledOutputNeverBlocksAndCountsEveryLine(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s := New(w, 4096, notice)
	const total = 5000
	line := strings.Repeat("y", 60)
	// Far more than the pipe (64 KiB) and the queue (4 KiB) hold: if Write
	// blocked on the stalled pipe this loop would never end.
	for i := range total {
		fmt.Fprintf(s, "%d %s\n", i, line)
	}
	var lines, dropped int
	var read sync.WaitGroup
	read.Go(func() { lines, dropped = countLines(t, r) })
	if !s.Close(10 * time.Second) {
		t.Fatal("Close timed out with a reader draining the pipe")
	}
	w.Close()
	read.Wait()
	if dropped == 0 {
		t.Errorf("no line reported dropped of %d written into a stalled pipe", total)
	}
	if lines+dropped != total {
		t.Errorf("%d delivered + %d reported dropped, want %d", lines, dropped, total)
	}
}

// failing refuses the first n writes, as a broken pipe does, then recovers.
type failing struct {
	mu   sync.Mutex
	n    int
	sink strings.Builder
}

func (f *failing) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n > 0 {
		f.n--
		return 0, errors.New("broken pipe")
	}
	return f.sink.Write(p)
}

func TestRefusedLinesAreReportedOnRecovery(t *testing.T) {
	out := &failing{n: 3}
	s := New(out, 1<<20, notice)
	for i := range 10 {
		fmt.Fprintf(s, "line %d\n", i)
		// One at a time, so that each meets the output in its state.
		if !s.Flush(10 * time.Second) {
			t.Fatal("Flush timed out")
		}
	}
	s.Close(10 * time.Second)
	lines, dropped := countLines(t, strings.NewReader(out.sink.String()))
	if lines+dropped != 10 || dropped == 0 {
		t.Errorf("%d delivered + %d reported dropped, want 10 with some dropped:\n%s", lines, dropped, out.sink.String())
	}
	if !strings.HasPrefix(out.sink.String(), "DROPPED ") {
		t.Errorf("the count does not come first, as the output recovers:\n%s", out.sink.String())
	}
}

func TestCloseGivesUpOnAStalledReader(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	s := New(w, 1<<20, notice)
	chunk := strings.Repeat("z", 1<<16) + "\n"
	for range 4 {
		io.WriteString(s, chunk) // more than the pipe holds
	}
	if s.Close(100 * time.Millisecond) {
		t.Error("Close reported the queue written into a pipe nobody reads")
	}
	// Read to free the writer goroutine before the test ends.
	go io.Copy(io.Discard, r)
}

// A line written after Close is dropped, not queued for a writer that has
// gone.
func TestWriteAfterClose(t *testing.T) {
	var b strings.Builder
	s := New(&b, 1<<20, notice)
	io.WriteString(s, "a\n")
	s.Close(10 * time.Second)
	if n, err := io.WriteString(s, "b\n"); n != 2 || err != nil {
		t.Errorf("Write after Close = %d, %v", n, err)
	}
	if b.String() != "a\n" {
		t.Errorf("output %q", b.String())
	}
}
