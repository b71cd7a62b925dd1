package fetch

import (
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"
)

// holdState is where a settler is with the change it holds.
type holdState int

const (
	// idle: nothing held; a change seen is handed on, settled or splayed.
	idle holdState = iota
	// settling: a change is held until a poll that began Settle after the
	// latest change seen finds nothing new, or SettleMax after the first.
	settling
	// splaying: settled; the change is handed on at release.
	splaying
)

func (s holdState) String() string {
	switch s {
	case idle:
		return "idle"
	case settling:
		return "settling"
	case splaying:
		return "splaying"
	}
	return "unknown"
}

// A settler decides when a change the polls saw is handed on. It holds no
// environment: what is handed on is always the newest one the polls read,
// so changes seen while holding join the same update. Its methods take the
// time from the caller, so its decisions can be tested without a clock.
type settler struct {
	settle, max, splay time.Duration
	// randN picks the splay delay in [0, n); rand.N unless a test says.
	randN func(n time.Duration) time.Duration
	log   *slog.Logger

	state holdState
	// first and last are when the polls that saw the first and the latest
	// held change began: a change seen by a poll happened before it began.
	first, last time.Time
	release     time.Time // splaying: when to hand the change on
	// names are the variables seen to change while holding, for the log;
	// the update handed on names what differs from the last one instead.
	names []string
}

// newSettler returns a settler that waits for settle of quiet, at most
// maxWait from the first change, then a random delay below splay. All zero,
// every change is handed on at once.
func newSettler(settle, maxWait, splay time.Duration, log *slog.Logger) *settler {
	return &settler{settle: settle, max: maxWait, splay: splay, randN: rand.N[time.Duration], log: log}
}

// seen records a change to the variables named, found by a poll that
// began at began; it reports whether to hand it on now.
func (s *settler) seen(began time.Time, changed []string) bool {
	if s.state == idle {
		s.names = nil
	}
	for _, n := range changed {
		if !slices.Contains(s.names, n) {
			s.names = append(s.names, n)
		}
	}
	slices.Sort(s.names)
	switch s.state {
	case idle:
		if s.settle <= 0 {
			return s.settled(began, "")
		}
		s.state, s.first = settling, began
		fallthrough
	case settling:
		s.last = began
		s.log.Info("change seen; settling", "changed", changed, "settle", s.settle, "settle_max", s.max,
			"waited", began.Sub(s.first).Round(time.Millisecond))
	case splaying:
		s.log.Info("change seen; joins the change held for splay", "changed", changed,
			"release_in", s.release.Sub(began).Round(time.Millisecond))
	}
	return false
}

// quiet records that a poll of every source, begun at began, found no
// change; it reports whether to hand the held change on now. A failed poll
// is no evidence of quiet and must not be reported.
func (s *settler) quiet(began time.Time) bool {
	if s.state == settling && began.Sub(s.last) >= s.settle {
		return s.settled(began, "quiet")
	}
	return false
}

// expired records that the deadline passed; it reports whether to hand the
// held change on now.
func (s *settler) expired(now time.Time) bool {
	switch s.state {
	case settling:
		if now.Before(s.first.Add(s.max)) {
			return false
		}
		return s.settled(now, "settle-max")
	case splaying:
		if now.Before(s.release) {
			return false
		}
		s.state = idle
		return true
	}
	return false
}

// settled ends the settling, if any (by says what ended it); it reports
// whether to hand on at once, that is, when there is no splay.
func (s *settler) settled(now time.Time, by string) bool {
	if s.state == settling {
		s.log.Info("settled", "changed", s.names, "by", by, "waited", now.Sub(s.first).Round(time.Millisecond))
	}
	if s.splay <= 0 {
		s.state = idle
		return true
	}
	delay := s.randN(s.splay)
	s.state, s.release = splaying, now.Add(delay)
	s.log.Info("splaying", "changed", s.names, "delay", delay, "until", s.release, "splay", s.splay)
	return false
}

// deadline is when expired must be called next; ok is false when nothing
// is held.
func (s *settler) deadline() (at time.Time, ok bool) {
	switch s.state {
	case settling:
		return s.first.Add(s.max), true
	case splaying:
		return s.release, true
	}
	return time.Time{}, false
}

// pollEvery is the time between polls given the usual one. While settling,
// polls come every Settle/2 (at least 1s, at most the usual time), so that
// the quiet Settle asks for is confirmed by a poll at most half a Settle
// late. That costs quota: a change makes each instance poll up to
// SettleMax/(Settle/2) times more (8 with the default SettleMax of four
// settles), all within SettleMax of the change, where it would otherwise
// poll about SettleMax/Interval times. A fleet that sees one change within
// an interval of each other spends that burst once per change, not per
// interval.
func (s *settler) pollEvery(usual time.Duration) time.Duration {
	if s.state != settling {
		return usual
	}
	return min(usual, max(s.settle/2, time.Second))
}

// newSettler makes the Watcher's settler and the timer for its deadlines,
// stopped until there is one.
func (w *Watcher) newSettler(c clock, log *slog.Logger) (*settler, timer) {
	maxWait := w.SettleMax
	if maxWait <= 0 {
		maxWait = 4 * w.Settle
	}
	t := c.NewTimer(time.Hour)
	t.Stop()
	return newSettler(w.Settle, maxWait, w.Splay, log), t
}

// holdC is the channel that says the settler's deadline passed, nil (never
// ready) while it holds nothing.
func holdC(s *settler, t timer) <-chan time.Time {
	if _, ok := s.deadline(); ok {
		return t.C()
	}
	return nil
}

// rearm sets t to the settler's deadline.
func rearm(c clock, s *settler, t timer) {
	at, ok := s.deadline()
	if !ok {
		t.Stop()
		return
	}
	t.Reset(at.Sub(c.Now()))
}
