package exec

import (
	"slices"
	"time"
)

// deadline is the earliest deadline the core waits for, zero if none:
// the caller calls fire once it has passed.
func (m *core) deadline() time.Time {
	var d time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	for _, c := range m.kids {
		earliest(c.graceBy)
		earliest(c.handoverBy)
		earliest(c.liveBy)
		earliest(c.readyBy)
	}
	if len(m.left) > 0 {
		earliest(m.left[0].deadline)
	}
	return d
}

// fire acts on every deadline that has passed by now.
func (m *core) fire(now time.Time) {
	due := func(t time.Time) bool { return !t.IsZero() && !now.Before(t) }
	for _, c := range slices.Clone(m.kids) {
		if c.exited || m.byGen(c.gen) == nil {
			continue
		}
		switch {
		case due(c.graceBy):
			m.kill(c)
		case due(c.handoverBy):
			m.handoverEnded(c, true)
		case due(c.readyBy):
			m.answered(c.gen, errNoAnswer)
		case due(c.liveBy):
			c.liveBy = time.Time{}
			if c.role == candidate {
				c.lived = true
				m.settle()
			}
		}
	}
	if len(m.left) > 0 && due(m.left[0].deadline) {
		m.killLeftovers()
	}
	m.after()
}
