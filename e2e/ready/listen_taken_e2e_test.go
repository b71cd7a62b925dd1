package ready

import (
	"fmt"
	"strings"
	"testing"

	"github.com/paramexec/paramexec/internal/harness"
)

// TestListenSocketNotTaken: an app that is not told to use activated
// sockets closes the one it was given and binds a port of its own, then
// says READY=1. Before paramexec looked at /proc, that child was declared
// ready and every connection to the --listen address waited in the
// backlog for ever; now the first child is not ready (exit 4) and the log
// says which address nobody holds.
func TestListenSocketNotTaken(t *testing.T) {
	harness.ParallelE2E(t)
	listenPort, ownPort := harness.FreePort(t), harness.FreePort(t)
	// The shell drops fd 3 and LISTEN_PID, as such an app would: the
	// test server then binds PORT itself and notifies.
	script := fmt.Sprintf("exec 3<&-; unset LISTEN_PID LISTEN_FDS LISTEN_FDNAMES; PORT=%d exec %s", ownPort, harness.ServerBin)
	r := harness.RunBinary(t, harness.BaseEnv(""),
		"--listen", fmt.Sprintf("tcp://127.0.0.1:%d", listenPort), "--ready", "notify", "--ready-timeout", "30s",
		"--", "/bin/sh", "-c", script)
	if r.Code != 4 {
		t.Fatalf("exit %d, want 4 (the first child is not ready); stderr:\n%s", r.Code, r.Stderr)
	}
	want := fmt.Sprintf("127.0.0.1:%d", listenPort)
	if !strings.Contains(r.Stderr, want) {
		t.Errorf("the log does not name the socket nobody holds (%s):\n%s", want, r.Stderr)
	}
}
