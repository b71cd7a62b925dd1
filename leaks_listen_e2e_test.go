package main

import (
	"strings"
	"testing"
)

// --listen in place of paramexec (no supervision) puts five sockets on fds
// 3 to 7, where the Go runtime keeps its own files (the netpoller's epoll
// fd and eventfd): moving them there while the runtime ran crashed
// paramexec now and then with /bin/true, and often with a command that
// does not exist (paramexec goes on to log the error). 30 runs of each:
// the old binary crashed in about one run in five of the missing command.
func TestListenInPlaceNeverCrashes(t *testing.T) {
	parallelE2E(t)
	var args []string
	for range 5 {
		args = append(args, "--listen", "tcp://127.0.0.1:0")
	}
	env := baseEnv("")
	for i := range 30 {
		r := runBinary(t, env, append(args, "--", "no-such-command-paramexec")...)
		if r.code != 127 || strings.Contains(r.stderr, "runtime:") || strings.Contains(r.stderr, "fatal error") {
			t.Fatalf("run %d of a missing command: exit %d, want 127; stderr:\n%s", i, r.code, r.stderr)
		}
		if !strings.Contains(r.stderr, "no-such-command-paramexec") {
			t.Fatalf("run %d: the error does not name the command:\n%s", i, r.stderr)
		}
		r = runBinary(t, env, append(args, "--", "true")...)
		if r.code != 0 || strings.Contains(r.stderr, "runtime:") {
			t.Fatalf("run %d of true: exit %d; stderr:\n%s", i, r.code, r.stderr)
		}
	}
}
