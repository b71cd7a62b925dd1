package kit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"
)

// LogLine is one line of paramexec's --log-format json output.
type LogLine struct {
	Seen  time.Time      // when the reader got it; zero when read from a file
	Time  time.Time      // the logger's own clock, to the millisecond
	Level string         // DEBUG, INFO, WARN, ERROR
	Msg   string         // the message; for a non-JSON line the whole line
	Attrs map[string]any // every field, "time", "level" and "msg" included
	Extra any            // whatever a FollowLog hook attached
}

// Duration reads an attribute slog wrote for a time.Duration: the JSON
// handler writes nanoseconds as a number.
func (l LogLine) Duration(key string) (time.Duration, bool) {
	switch v := l.Attrs[key].(type) {
	case float64:
		return time.Duration(v), true
	case string:
		d, err := time.ParseDuration(v)
		return d, err == nil
	}
	return 0, false
}

// String reads a string attribute.
func (l LogLine) String(key string) string {
	s, _ := l.Attrs[key].(string)
	return s
}

// Bool reads a boolean attribute.
func (l LogLine) Bool(key string) bool {
	b, _ := l.Attrs[key].(bool)
	return b
}

// ParseLogLine decodes one line. Anything that is not a JSON object (a
// panic, a message from before the logger existed) becomes a line whose Msg
// is the raw text, so that nothing paramexec printed escapes inspection.
func ParseLogLine(text string) LogLine {
	var attrs map[string]any
	if err := json.Unmarshal([]byte(text), &attrs); err != nil {
		return LogLine{Msg: text}
	}
	l := LogLine{Attrs: attrs}
	l.Msg, _ = attrs["msg"].(string)
	l.Level, _ = attrs["level"].(string)
	if ts, ok := attrs["time"].(string); ok {
		l.Time, _ = time.Parse(time.RFC3339Nano, ts)
	}
	return l
}

// ReadLogs calls fn for each line of r, stamped with the time it was read,
// until r ends.
func ReadLogs(r io.Reader, fn func(LogLine)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		l := ParseLogLine(sc.Text())
		l.Seen = time.Now()
		fn(l)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read logs: %w", err)
	}
	return nil
}

// ReadLogFile parses a whole log file.
func ReadLogFile(path string) ([]LogLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []LogLine
	err = ReadLogs(f, func(l LogLine) {
		l.Seen = time.Time{}
		out = append(out, l)
	})
	return out, err
}

// Count returns how many lines have the message msg.
func Count(lines []LogLine, msg string) int {
	n := 0
	for _, l := range lines {
		if l.Msg == msg {
			n++
		}
	}
	return n
}
