package harness

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// DaemonsOf returns the pids of the setsid daemons each child reported,
// by the child's pid.
func DaemonsOf(t *testing.T, rec string) map[int][]int {
	t.Helper()
	out := map[int][]int{}
	for _, r := range ReadRecords(t, rec) {
		if r.Event == "spawned" && r.Kind == "daemons" {
			out[r.Pid] = r.Children
		}
	}
	return out
}

// A child's setsid daemons leave its process group, so a signal to the

// IsAlive reports whether pid runs and is no zombie.
func IsAlive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z"
}
