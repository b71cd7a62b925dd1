// Package logsink writes log lines to an output that may stall or break (a
// full pipe, a log shipper that went away) without ever blocking whoever logs.
package logsink

import (
	"bytes"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// A Sink is an io.Writer that queues each Write, one log line, in memory and
// hands it to the output from a goroutine of its own. A supervisor logs from
// the loop that forwards signals; a write(2) to a pipe nobody drains blocks
// for as long as the reader sleeps, so it must never happen on that loop.
//
// The queue is bounded in bytes. A line that does not fit is dropped and
// counted, and so is a line the output refuses (EPIPE); the count is written,
// as the line notice(n) makes, before the next line that gets through, so
// the reader learns what it missed once the output recovers.
//
// The Sink owns its writer goroutine: it starts in New and ends in Close.
type Sink struct {
	out    io.Writer
	limit  int
	notice func(dropped int) []byte

	mu       sync.Mutex
	queue    []entry
	queued   int           // bytes in queue
	dropped  int           // lines dropped since the last one queued
	seq      int           // sequence number of the last line queued
	written  int           // sequence number of the last line the writer finished with
	closed   bool          // no more lines; the writer exits once the queue is empty
	progress chan struct{} // closed and replaced each time written moves

	wake chan struct{} // a line was queued, or Close was called
	done chan struct{} // closed when the writer goroutine has returned
	lost int           // owned by the writer: lines the output refused
}

type entry struct {
	line   []byte
	before int // lines dropped just before this one
	seq    int
}

// New starts a Sink writing to out, queuing at most limit bytes (a single
// longer line is still taken when the queue is empty). notice formats the
// line reporting n lost lines; it may return nothing.
func New(out io.Writer, limit int, notice func(n int) []byte) *Sink {
	s := &Sink{
		out:      out,
		limit:    limit,
		notice:   notice,
		progress: make(chan struct{}),
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	go s.run()
	return s
}

// Write queues a copy of p and returns at once; it never fails. slog's
// handlers make one Write per record, so p is one whole line.
func (s *Sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || (len(s.queue) > 0 && s.queued+len(p) > s.limit) {
		s.dropped++
		return len(p), nil
	}
	s.seq++
	s.queue = append(s.queue, entry{line: bytes.Clone(p), before: s.dropped, seq: s.seq})
	s.queued += len(p)
	s.dropped = 0
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// Flush waits until every line queued before the call has been handed to the
// output, or timeout has passed; it reports whether they all were.
func (s *Sink) Flush(timeout time.Duration) bool {
	s.mu.Lock()
	target := s.seq
	s.mu.Unlock()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		caughtUp, progress := s.written >= target, s.progress
		s.mu.Unlock()
		if caughtUp {
			return true
		}
		select {
		case <-progress:
		case <-s.done:
			return true
		case <-deadline.C:
			return false
		}
	}
}

// Close takes no more lines and waits, at most timeout, for the queue to be
// written, a last count of dropped lines included. It reports whether the
// writer finished. After a timeout the writer is left blocked in its write
// (a stalled reader); it ends with the process, which is about to exit: no
// write(2) on a blocking pipe can be taken back.
func (s *Sink) Close(timeout time.Duration) bool {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.done:
		return true
	case <-t.C:
		return false
	}
}

// run is the writer: the only goroutine that touches out.
func (s *Sink) run() {
	defer close(s.done)
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			closed, dropped := s.closed, s.dropped
			s.dropped = 0
			s.mu.Unlock()
			// The queue has drained, so the output takes lines again: say
			// now what was dropped after the last line queued, rather than
			// with whatever line comes next, maybe hours later.
			s.deliver(entry{before: dropped})
			if closed {
				return
			}
			<-s.wake
			continue
		}
		e := s.queue[0]
		s.queue[0] = entry{}
		s.queue = s.queue[1:]
		s.queued -= len(e.line)
		s.mu.Unlock()

		s.deliver(e)

		s.mu.Lock()
		s.written = e.seq
		close(s.progress)
		s.progress = make(chan struct{})
		s.mu.Unlock()
	}
}

// deliver writes e, preceded by the count of the lines lost before it.
func (s *Sink) deliver(e entry) {
	if n := e.before + s.lost; n > 0 {
		if !s.write(s.notice(n)) {
			// The output is still refusing; this line goes the same way.
			s.lost = n
			if e.line != nil {
				s.lost++
			}
			return
		}
		s.lost = 0
	}
	if e.line != nil && !s.write(e.line) {
		s.lost++
	}
}

func (s *Sink) write(p []byte) bool {
	if len(p) == 0 {
		return true
	}
	_, err := s.out.Write(p)
	return err == nil
}

// CatchSIGPIPE makes a write to a broken standard output or error fail with
// EPIPE instead of killing the process, until stop is called. The Go runtime
// kills a program that writes to a broken pipe on fd 1 or 2 unless SIGPIPE
// is caught with signal.Notify, and a supervisor killed that way leaves its
// child orphaned.
//
// Caught, not ignored: execve resets a caught signal to its default in the
// child, while an ignored one would be inherited, and a child that ignores
// SIGPIPE loops on EPIPE where it would have ended (yes | head). A process
// started with SIGPIPE already ignored keeps it ignored, so its child inherits
// exactly what it would have without paramexec between them. The channel is
// never read: the signal package drops what does not fit rather than block.
func CatchSIGPIPE() (stop func()) {
	if signal.Ignored(syscall.SIGPIPE) {
		return func() {}
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGPIPE)
	return func() { signal.Stop(c) }
}
