package kit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/paramexec/paramexec/internal/testchild/childrec"
)

// Record is one line testchild wrote, stamped with the moment it was read.
// testchild writes no clock of its own, so Seen is what latencies are
// measured with; the watcher reads on inotify's word, well under a
// millisecond after the write on an idle box.
type Record struct {
	Seen time.Time `json:"-"`
	childrec.Record
}

// Records follows a testchild record file as children append to it.
type Records struct {
	f    *os.File
	w    *fsnotify.Watcher
	done chan struct{} // closed when the reading goroutine has returned
	stop chan struct{}

	mu      sync.Mutex
	recs    []Record
	changed chan struct{} // closed and replaced whenever recs grows
	err     error         // a read or parse failure ends the watch
}

// WatchRecords creates path (0600: child environments hold secrets) and
// follows it. Close it when done.
func WatchRecords(path string) (*Records, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("watch records: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("watch records: %w", err)
	}
	if err := w.Add(path); err != nil {
		w.Close()
		f.Close()
		return nil, fmt.Errorf("watch records %s: %w", path, err)
	}
	r := &Records{f: f, w: w, done: make(chan struct{}), stop: make(chan struct{}), changed: make(chan struct{})}
	go r.loop()
	return r, nil
}

func (r *Records) loop() {
	defer close(r.done)
	// inotify can overflow under a fleet's burst of writes; the ticker makes
	// sure a missed event delays a read by at most a tick.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var partial []byte
	buf := make([]byte, 256<<10)
	for {
		select {
		case <-r.stop:
			return
		case <-r.w.Events:
		case <-r.w.Errors:
		case <-tick.C:
		}
		for {
			n, err := r.f.Read(buf)
			if n > 0 {
				now := time.Now()
				partial = append(partial, buf[:n]...)
				var got []Record
				for {
					i := bytes.IndexByte(partial, '\n')
					if i < 0 {
						break
					}
					var rec Record
					if jerr := json.Unmarshal(partial[:i], &rec); jerr != nil {
						r.fail(fmt.Errorf("record file: bad line: %w", jerr))
						return
					}
					rec.Seen = now
					got = append(got, rec)
					partial = partial[i+1:]
				}
				r.add(got)
			}
			if err == io.EOF || n == 0 {
				break
			}
			if err != nil {
				r.fail(fmt.Errorf("record file: %w", err))
				return
			}
		}
	}
}

func (r *Records) add(recs []Record) {
	if len(recs) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, recs...)
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Records) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
	close(r.changed)
	r.changed = make(chan struct{})
}

// All returns the records read so far, oldest first.
func (r *Records) All() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Record(nil), r.recs...)
}

// Wait returns the records once done says they are complete, or fails when
// ctx ends first.
func (r *Records) Wait(ctx context.Context, done func([]Record) bool) ([]Record, error) {
	for {
		r.mu.Lock()
		recs, err, changed := append([]Record(nil), r.recs...), r.err, r.changed
		r.mu.Unlock()
		if err != nil {
			return recs, err
		}
		if done(recs) {
			return recs, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return recs, fmt.Errorf("wait for child records: %w", ctx.Err())
		}
	}
}

// Close stops following the file.
func (r *Records) Close() error {
	close(r.stop)
	<-r.done
	return errors.Join(r.w.Close(), r.f.Close())
}

// Starts returns the start records, oldest first.
func Starts(recs []Record) []Record {
	var out []Record
	for _, rec := range recs {
		if rec.Event == "start" {
			out = append(out, rec)
		}
	}
	return out
}
