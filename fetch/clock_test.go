package fetch

import (
	"context"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when a test says.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
	// deadlines cancel the contexts WithTimeout gave, for expire.
	deadlines []context.CancelFunc
}

// WithTimeout gives a context that ends when its parent does or when the
// test calls expire: its deadline is the test's to say.
func (c *fakeClock) WithTimeout(ctx context.Context, _ time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadlines = append(c.deadlines, func() { cancel(context.DeadlineExceeded) })
	return ctx, func() { cancel(context.Canceled) }
}

// expire ends every context WithTimeout gave so far, as their deadline
// would: a call that hangs lasts until its poll's deadline.
func (c *fakeClock) expire() {
	c.mu.Lock()
	deadlines := c.deadlines
	c.deadlines = nil
	c.mu.Unlock()
	for _, cancel := range deadlines {
		cancel()
	}
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, ch: make(chan time.Time, 1), at: c.now.Add(d), armed: true}
	c.timers = append(c.timers, t)
	return t
}

// fire moves the clock to t's deadline and delivers it, as a real timer
// would; a timer due at the same moment fires too.
func (c *fakeClock) fire(tb testing.TB, t timer) {
	tb.Helper()
	ft := t.(*fakeTimer)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !ft.armed {
		tb.Fatal("fire: the timer is stopped")
	}
	if ft.at.After(c.now) {
		c.now = ft.at
	}
	for _, other := range c.timers {
		if other.armed && !other.at.After(c.now) {
			other.armed = false
			select {
			case other.ch <- c.now:
			default:
			}
		}
	}
}

// deadline is when t fires, zero if it is stopped.
func (c *fakeClock) deadline(t timer) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ft := t.(*fakeTimer)
	if !ft.armed {
		return time.Time{}
	}
	return ft.at
}

type fakeTimer struct {
	c     *fakeClock
	ch    chan time.Time
	at    time.Time
	armed bool
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Reset(d time.Duration) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	t.at, t.armed = t.c.now.Add(d), true
}

func (t *fakeTimer) Stop() {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	t.armed = false
}
