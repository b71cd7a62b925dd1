package supervise

import (
	"bytes"
	"errors"
	"io"
	"os"
	osexec "os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/harness"
)

// Supervision must not depend on whoever reads paramexec's stderr: a log
// shipper that went away or one that stalls.

// startWithStderr starts paramexec with stderr as its fd 2, as a container
// runtime hands it a pipe. It returns a func that waits for the exit code.
func startWithStderr(t *testing.T, stderr *os.File, args ...string) (cmd *osexec.Cmd, wait func() int) {
	t.Helper()
	return startCmd(t, func(cmd *osexec.Cmd) { cmd.Stderr = stderr }, args...)
}

// startCmd starts paramexec with args, setup adjusting the command first.
func startCmd(t *testing.T, setup func(*osexec.Cmd), args ...string) (cmd *osexec.Cmd, wait func() int) {
	t.Helper()
	cmd = osexec.Command(harness.BinPath, args...)
	cmd.Env = harness.BaseEnv("")
	// Descendants that outlive a killed paramexec keep a stderr pipe open;
	// do not let them hang the test.
	cmd.WaitDelay = 5 * time.Second
	setup(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var code int
	go func() {
		cmd.Wait()
		code = cmd.ProcessState.ExitCode()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = -int(ws.Signal())
		}
		close(done)
	}()
	// A test that ends early stops paramexec as a container runtime
	// would, so that it stops its child too, and kills it only if that
	// does not work.
	t.Cleanup(func() {
		select {
		case <-done:
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Signal(syscall.SIGKILL)
			<-done
		}
	})
	return cmd, func() int {
		t.Helper()
		select {
		case <-done:
			return code
		case <-time.After(60 * time.Second):
			t.Fatal("paramexec did not exit")
			return 0
		}
	}
}

// killAfter makes sure a child orphaned by a failing run does not outlive
// the test.
func killAfter(t *testing.T, pid int) {
	t.Cleanup(func() {
		if syscall.Kill(pid, 0) == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// fillPipe writes to w until the pipe holds all it can: whoever writes to
// it next blocks until someone reads.
func fillPipe(t *testing.T, w *os.File) int {
	t.Helper()
	chunk := bytes.Repeat([]byte("x"), 4096)
	total := 0
	for {
		// The pipe from os.Pipe is non-blocking under the runtime's poller
		// until cmd.Start takes its Fd, which makes it blocking again for
		// paramexec, so a deadline ends the filling here.
		w.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := w.Write(chunk)
		total += n
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return total
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestBrokenStderrDoesNotKillTheSupervisor(t *testing.T) {
	harness.ParallelE2E(t)
	r, w, err := os.Pipe()
	harness.MustDo(t, err)
	r.Close() // the reader is gone before paramexec writes its first line
	args, rec := harness.ChildArgs(t, "-term-exit", "7")
	pe, wait := startWithStderr(t, w, append([]string{"--init", "--log-level", "debug"}, args...)...)
	w.Close()
	child := harness.WaitStarts(t, rec, 1)[0]
	killAfter(t, child.Pid)
	// A forwarded SIGHUP proves paramexec lived through its "child started"
	// and "forwarding signal" lines, both written to the broken pipe.
	harness.MustDo(t, pe.Process.Signal(syscall.SIGHUP))
	harness.WaitFor(t, "SIGHUP at the child", func() bool { return hasSignal(t, rec, "SIGHUP") })
	harness.MustDo(t, pe.Process.Signal(syscall.SIGTERM))
	if code := wait(); code != 7 {
		t.Errorf("exit %d, want the child's 7", code)
	}
	if !hasSignal(t, rec, "SIGTERM") {
		t.Error("SIGTERM was not forwarded")
	}
	if !harness.Gone(child.Pid) {
		t.Errorf("child %d outlived paramexec", child.Pid)
	}
}

func TestStalledStderrDoesNotStallTheSupervisor(t *testing.T) {
	harness.ParallelE2E(t)
	r, w, err := os.Pipe()
	harness.MustDo(t, err)
	defer r.Close()
	fillPipe(t, w)
	args, rec := harness.ChildArgs(t, "-term-exit", "7")
	pe, wait := startWithStderr(t, w, append([]string{"--init", "--log-level", "debug"}, args...)...)
	w.Close()
	child := harness.WaitStarts(t, rec, 1)[0]
	killAfter(t, child.Pid)
	// Nobody reads r: paramexec's "child started" line is stuck in the
	// full pipe, and so is every line after it.
	harness.MustDo(t, pe.Process.Signal(syscall.SIGTERM))
	harness.WaitFor(t, "SIGTERM at the child", func() bool { return hasSignal(t, rec, "SIGTERM") })
	// paramexec gives up on its queued lines after a bounded flush rather
	// than wait for a reader that never comes.
	if code := wait(); code != 7 {
		t.Errorf("exit %d, want the child's 7", code)
	}
	if !harness.Gone(child.Pid) {
		t.Errorf("child %d outlived paramexec", child.Pid)
	}
}

func TestDroppedLogLinesAreCounted(t *testing.T) {
	harness.E2E(t)
	r, w, err := os.Pipe()
	harness.MustDo(t, err)
	defer r.Close()
	filled := fillPipe(t, w)
	args, rec := harness.ChildArgs(t)
	pe, wait := startWithStderr(t, w, append([]string{"--init", "--log-level", "debug"}, args...)...)
	w.Close()
	child := harness.WaitStarts(t, rec, 1)[0]
	killAfter(t, child.Pid)

	// Every SIGWINCH the child records was forwarded, and logged at debug,
	// by paramexec while its stderr was full. 1500 such lines (about 100
	// bytes each) are more than paramexec's 64 KiB queue can hold.
	const want = 1500
	for sent := 0; ; sent++ {
		harness.MustDo(t, pe.Process.Signal(syscall.SIGWINCH))
		time.Sleep(time.Millisecond)
		if sent%100 == 99 && countSignal(t, rec, "SIGWINCH") >= want {
			break
		}
		if sent > 100*want {
			t.Fatalf("the child recorded %d SIGWINCH of %d sent", countSignal(t, rec, "SIGWINCH"), sent)
		}
	}
	forwarded := countSignal(t, rec, "SIGWINCH")

	// Now the reader catches up.
	var out harness.SyncBuffer
	var drain sync.WaitGroup
	drain.Go(func() { io.Copy(&out, r) })
	dropped := regexp.MustCompile(`msg="(\d+) log lines dropped"`)
	harness.WaitFor(t, "the dropped-lines report", func() bool { return dropped.MatchString(out.String()) })
	harness.MustDo(t, pe.Process.Signal(syscall.SIGTERM))
	if code := wait(); code != 0 {
		t.Errorf("exit %d, want the child's 0", code)
	}
	drain.Wait()

	text := out.String()[filled:]
	n := 0
	for _, m := range dropped.FindAllStringSubmatch(text, -1) {
		k, _ := strconv.Atoi(m[1])
		n += k
	}
	logged := 0
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, `msg="forwarding signal"`) && strings.Contains(line, "signal=SIGWINCH") {
			logged++
		}
	}
	if n == 0 {
		t.Fatalf("no line was reported dropped:\n%s", tail(text))
	}
	// Each forward was either written or counted; with signals held while
	// the child restarted there would be fewer, and none happen here.
	if logged+n < forwarded {
		t.Errorf("%d forwarding lines written + %d reported dropped < %d forwards", logged, n, forwarded)
	}
	t.Logf("%d forwards: %d lines written, %d reported dropped", forwarded, logged, n)
}

func hasSignal(t *testing.T, rec, name string) bool { return countSignal(t, rec, name) > 0 }

func countSignal(t *testing.T, rec, name string) int {
	n := 0
	for _, r := range harness.ReadRecords(t, rec) {
		if r.Signal == name {
			n++
		}
	}
	return n
}

func tail(s string) string {
	if len(s) > 2000 {
		return "…" + s[len(s)-2000:]
	}
	return s
}
