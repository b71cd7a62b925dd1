package ready

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/harness"
)

// A systemd that does not read its notify socket must not stall
// supervision: each notification paramexec writes then waits for its
// 1 s deadline, and it must wait on a goroutine of its own, never on the
// loop that forwards signals. The receiver here never reads and its queue
// is full before paramexec starts, so every write fails after 1 s. A
// SIGUSR1 sent once the child runs must reach it before the first of those
// failures is logged: the loop had the child's start and readiness to
// report (two writes, 2 s) and a signal to forward, which takes a moment.
// (Before, the loop wrote each notification itself: the signal waited for
// the writes, and the failures came first.)
func TestStalledNotifySocketNeverDelaysSignals(t *testing.T) {
	harness.ParallelE2E(t)
	sock := filepath.Join(t.TempDir(), "notify.sock")
	rcv, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	harness.MustDo(t, err)
	defer rcv.Close() // never read
	fillQueue(t, sock)

	args, rec := harness.ChildArgs(t)
	env := append(harness.BaseEnv(""), "NOTIFY_SOCKET="+sock)
	pe := harness.StartBinary(t, env, append([]string{"--init", "--log-level", "debug"}, args...)...)
	harness.WaitStarts(t, rec, 1)
	pe.Signal(syscall.SIGUSR1)
	harness.WaitFor(t, "the child to get SIGUSR1", func() bool {
		for _, r := range harness.ReadRecords(t, rec) {
			if r.Signal == "SIGUSR1" {
				return true
			}
		}
		return false
	})
	failed := `msg="systemd notification failed"`
	if strings.Contains(pe.Stderr.String(), failed) {
		t.Errorf("a notification write failed before the signal reached the child: the loop waited on it; log:\n%s", pe.Stderr.String())
	}
	// The writes do happen, and fail, on their own time.
	harness.WaitFor(t, "a failed notification in the log", func() bool { return strings.Contains(pe.Stderr.String(), failed) })
	pe.Signal(syscall.SIGTERM)
	if code := pe.Wait(); code != 0 {
		t.Errorf("exit %d after SIGTERM, want the child's 0; log:\n%s", code, pe.Stderr.String())
	}
}

// fillQueue sends datagrams to the unixgram socket at path until it takes
// no more: its receive queue is full, and the next writer waits.
func fillQueue(t *testing.T, path string) {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	harness.MustDo(t, err)
	defer c.Close()
	for i := 0; ; i++ {
		if i > 1<<20 {
			t.Fatal("the notify socket's queue never filled")
		}
		harness.MustDo(t, c.SetWriteDeadline(time.Now().Add(100*time.Millisecond)))
		if _, err := c.Write([]byte("STATUS=filler")); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, syscall.EAGAIN) {
				t.Fatal(err)
			}
			return
		}
	}
}
