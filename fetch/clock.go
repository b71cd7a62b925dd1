package fetch

import (
	"context"
	"time"
)

// A clock is the Watcher's time: the real one, or a test's, so that the
// order of polls, retries and held changes can be driven step by step.
type clock interface {
	Now() time.Time
	NewTimer(d time.Duration) timer
	// WithTimeout is context.WithTimeout on this clock's time: a poll's
	// deadline.
	WithTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc)
}

// A timer is the part of *time.Timer the Watcher uses.
type timer interface {
	C() <-chan time.Time
	Reset(d time.Duration)
	Stop()
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) timer { return realTimer{time.NewTimer(d)} }

func (realClock) WithTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.t.C }

func (t realTimer) Reset(d time.Duration) { t.t.Reset(d) }

func (t realTimer) Stop() { t.t.Stop() }
