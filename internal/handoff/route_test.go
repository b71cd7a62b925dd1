package handoff

import (
	"testing"

	"github.com/paramexec/paramexec/exec"
)

// step is one of exec's events and the move route must answer it with
// (nil: the proxies stay as they are).
type step struct {
	e    exec.Event
	want *move
}

func ev(k exec.EventKind, pid int) exec.Event { return exec.Event{Kind: k, Pid: pid} }

// The sequences exec emits (see exec.EventKind and exec/overlap.go), one
// per path: the proxies send only to a ready child, hold while none is,
// and hand over from exactly the child that is to get its stop signal.
func TestRouteFollowsExecsEventOrder(t *testing.T) {
	for _, tc := range []struct {
		name    string
		overlap bool
		steps   []step
	}{
		{"stop-first restart", false, []step{
			{ev(exec.Started, 10), nil},
			{ev(exec.Ready, 10), &move{to: 10, which: "old child"}},
			{ev(exec.RestartBegun, 10), &move{left: 10, which: "old child", handover: true}},
			{ev(exec.Exited, 10), nil},
			{ev(exec.Restarted, 11), &move{to: 11, left: 10, which: "old child"}},
			{ev(exec.Stopping, 11), &move{left: 11, which: "child"}},
			{ev(exec.Exited, 11), nil},
		}},
		{"stop-first rollback", false, []step{
			{ev(exec.Ready, 10), &move{to: 10, which: "old child"}},
			{ev(exec.RestartBegun, 10), &move{left: 10, which: "old child", handover: true}},
			{ev(exec.Exited, 10), nil},
			{ev(exec.Exited, 11), nil},
			{ev(exec.RolledBack, 11), nil},
			{ev(exec.Ready, 12), &move{to: 12, left: 10, which: "old child"}},
		}},
		{"overlap restart", true, []step{
			{ev(exec.Ready, 10), &move{to: 10, which: "old child"}},
			{ev(exec.OverlapBegun, 11), nil},
			{ev(exec.Restarted, 11), &move{to: 11, left: 10, which: "old child", handover: true}},
			{ev(exec.Draining, 10), nil},
			{ev(exec.Exited, 10), nil},
			{ev(exec.Stopping, 11), &move{left: 11, which: "child"}},
		}},
		{"overlap rejected: the old child serves on", true, []step{
			{ev(exec.Ready, 10), &move{to: 10, which: "old child"}},
			{ev(exec.OverlapBegun, 11), nil},
			{ev(exec.RolledBack, 11), nil},
			{ev(exec.Ready, 10), nil},
			{ev(exec.Exited, 11), nil},
		}},
		{"overlap: the serving child dies first", true, []step{
			{ev(exec.Ready, 10), &move{to: 10, which: "old child"}},
			{ev(exec.OverlapBegun, 11), nil},
			{ev(exec.Exited, 10), &move{left: 10, which: "exited child"}},
			{ev(exec.Restarted, 11), &move{to: 11, left: 10, which: "old child", handover: true}},
		}},
		{"overlap: stopped during the overlap", true, []step{
			{ev(exec.Ready, 10), &move{to: 10, which: "old child"}},
			{ev(exec.OverlapBegun, 11), nil},
			{ev(exec.Stopping, 11), &move{left: 10, which: "child"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := route{overlap: tc.overlap}
			for i, s := range tc.steps {
				got, ok := r.next(s.e)
				switch {
				case s.want == nil && ok:
					t.Errorf("step %d (%s %d): move %+v, want none", i, s.e.Kind, s.e.Pid, got)
				case s.want != nil && !ok:
					t.Errorf("step %d (%s %d): no move, want %+v", i, s.e.Kind, s.e.Pid, *s.want)
				case s.want != nil && got != *s.want:
					t.Errorf("step %d (%s %d): move %+v, want %+v", i, s.e.Kind, s.e.Pid, got, *s.want)
				}
			}
		})
	}
}
