package supervise

import (
	"strings"
	"testing"

	"github.com/paramexec/paramexec/internal/harness"
)

// --listen in place of paramexec (no supervision) puts five sockets on fds
// 3 to 7, where the Go runtime keeps its own files (the netpoller's epoll
// fd and eventfd): moving them there while the runtime ran crashed
// paramexec now and then with /bin/true, and often with a command that
// does not exist (paramexec goes on to log the error). 30 runs of each:
// the old binary crashed in about one run in five of the missing command.
func TestListenInPlaceNeverCrashes(t *testing.T) {
	harness.ParallelE2E(t)
	var args []string
	for range 5 {
		args = append(args, "--listen", "tcp://127.0.0.1:0")
	}
	env := harness.BaseEnv("")
	for i := range 30 {
		r := harness.RunBinary(t, env, append(args, "--", "no-such-command-paramexec")...)
		if r.Code != 127 || strings.Contains(r.Stderr, "runtime:") || strings.Contains(r.Stderr, "fatal error") {
			t.Fatalf("run %d of a missing command: exit %d, want 127; stderr:\n%s", i, r.Code, r.Stderr)
		}
		if !strings.Contains(r.Stderr, "no-such-command-paramexec") {
			t.Fatalf("run %d: the error does not name the command:\n%s", i, r.Stderr)
		}
		r = harness.RunBinary(t, env, append(args, "--", "true")...)
		if r.Code != 0 || strings.Contains(r.Stderr, "runtime:") {
			t.Fatalf("run %d of true: exit %d; stderr:\n%s", i, r.Code, r.Stderr)
		}
	}
}
