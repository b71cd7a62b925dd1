package harness

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// SharedWindows reads the overlaps of a --listen log, a rejected one
// ending at its rollback, and none from a --proxy log.
func TestSharedWindows(t *testing.T) {
	lines := []string{
		`time=2026-12-02T03:39:24.417Z level=INFO msg="listening for the child" app=paramexec name=web address=tcp://127.0.0.1:1`,
		`time=2026-12-02T03:39:26.290Z level=INFO msg="overlap begun" app=paramexec pid=2 old_pid=1 reason="VALUE changed"`,
		`time=2026-12-02T03:39:27.545Z level=INFO msg=switched app=paramexec pid=2 old_pid=1`,
		`time=2026-12-02T03:39:27.549Z level=INFO msg="old child exited" app=paramexec pid=1 code=0`,
		`time=2026-12-02T03:39:28.160Z level=INFO msg="overlap begun" app=paramexec pid=3 old_pid=2 reason="VALUE changed"`,
		`time=2026-12-02T03:39:28.700Z level=INFO msg="rollback finished; the old child kept serving" app=paramexec pid=2 took=1ms`,
	}
	at := func(s string) time.Time { v, _ := time.Parse(time.RFC3339Nano, "2026-12-02T03:39:"+s+"Z"); return v }
	want := []Window{{at("26.290"), at("27.550")}, {at("28.160"), at("28.701")}}
	if got := SharedWindows(t, strings.Join(lines, "\n")+"\n"); !slices.Equal(got, want) {
		t.Errorf("sharedWindows = %v; want %v", got, want)
	}
	if got := SharedWindows(t, strings.Join(lines[1:], "\n")); got != nil {
		t.Errorf("without --listen: %v; want none", got)
	}
}
