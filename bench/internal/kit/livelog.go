package kit

import (
	"context"
	"fmt"
	"io"
	"sync"
)

// LiveLog follows a running paramexec's JSON log as it is written.
type LiveLog struct {
	done chan struct{} // closed when the reader has hit EOF

	mu      sync.Mutex
	lines   []LogLine
	changed chan struct{} // closed and replaced whenever lines grows
	err     error
}

// FollowLog reads r until EOF (the process closed its stderr). hook, if
// not nil, is called on the reading goroutine for each line before it is
// stored, at the moment it arrives: the place to take a snapshot that must
// belong to that line, such as the proxy's call counts after a poll.
func FollowLog(r io.Reader, hook func(*LogLine)) *LiveLog {
	l := &LiveLog{done: make(chan struct{}), changed: make(chan struct{})}
	go func() {
		defer close(l.done)
		err := ReadLogs(r, func(line LogLine) {
			if hook != nil {
				hook(&line)
			}
			l.mu.Lock()
			l.lines = append(l.lines, line)
			close(l.changed)
			l.changed = make(chan struct{})
			l.mu.Unlock()
		})
		l.mu.Lock()
		l.err = err
		if l.err == nil {
			l.err = io.EOF
		}
		close(l.changed)
		l.changed = make(chan struct{})
		l.mu.Unlock()
	}()
	return l
}

// Lines returns the lines read so far.
func (l *LiveLog) Lines() []LogLine {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]LogLine(nil), l.lines...)
}

// WaitFor returns the index of the first line at or after from whose
// message is msg, waiting for it to arrive.
func (l *LiveLog) WaitFor(ctx context.Context, from int, msg string) (int, LogLine, error) {
	for {
		l.mu.Lock()
		lines, err, changed := l.lines, l.err, l.changed
		l.mu.Unlock()
		for i := from; i < len(lines); i++ {
			if lines[i].Msg == msg {
				return i, lines[i], nil
			}
		}
		if err != nil {
			return 0, LogLine{}, fmt.Errorf("log ended before %q: %w", msg, err)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, LogLine{}, fmt.Errorf("wait for log %q: %w", msg, ctx.Err())
		}
	}
}

// Done is closed once the log has ended.
func (l *LiveLog) Done() <-chan struct{} { return l.done }
