package supervise

import (
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/paramexec/paramexec/internal/environ"
	"github.com/paramexec/paramexec/internal/harness"
	"github.com/paramexec/paramexec/internal/testenv"
)

// --env-file with what is not a regular file, and polling when the file
// watch cannot start.

// polled waits until paramexec has logged n polls that found no change.
func polled(t *testing.T, stderr *harness.SyncBuffer, n int) {
	t.Helper()
	harness.WaitFor(t, fmt.Sprintf("%d polls", n), func() bool {
		return strings.Count(stderr.String(), `msg="poll: no change"`) >= n
	})
}

func TestEnvFileFromProcessSubstitution(t *testing.T) {
	harness.ParallelE2E(t)
	// What bash hands over for --env-file <(printf ...): a /dev/fd path
	// to a pipe.
	r, w, err := os.Pipe()
	harness.MustDo(t, err)
	_, err = w.WriteString("GREETING=hello\n")
	harness.MustDo(t, err)
	w.Close()
	var stderr harness.SyncBuffer
	args, rec := harness.ChildArgs(t)
	pe, wait := startCmd(t, func(cmd *osexec.Cmd) {
		cmd.ExtraFiles = []*os.File{r}
		cmd.Stderr = &stderr
	}, append([]string{"--env-file", "/dev/fd/3", "--interval", "1s", "--log-level", "debug"}, args...)...)
	r.Close()
	if got := harness.WaitStarts(t, rec, 1)[0].Env["GREETING"]; got != "hello" {
		t.Fatalf("GREETING=%q", got)
	}
	// Two polls: a pipe re-read is empty, and would have restarted the
	// child without GREETING at the first.
	polled(t, &stderr, 2)
	if n := len(harness.Starts(harness.ReadRecords(t, rec))); n != 1 {
		t.Errorf("%d child starts; the pipe was re-read:\n%s", n, stderr.String())
	}
	harness.MustDo(t, pe.Process.Signal(syscall.SIGTERM))
	if code := wait(); code != 0 {
		t.Errorf("exit %d", code)
	}
}

func TestEnvFileFIFOAtStartUp(t *testing.T) {
	harness.ParallelE2E(t)
	fifo := filepath.Join(t.TempDir(), "app.env")
	harness.MustDo(t, syscall.Mkfifo(fifo, 0o600))
	go func() {
		// Blocks until paramexec opens the FIFO for reading.
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		f.WriteString("GREETING=hello\n")
		f.Close()
	}()
	args, rec := harness.ChildArgs(t)
	pe := harness.StartBinary(t, harness.BaseEnv(""), append([]string{"--env-file", fifo, "--interval", "1s", "--log-level", "debug"}, args...)...)
	if got := harness.WaitStarts(t, rec, 1)[0].Env["GREETING"]; got != "hello" {
		t.Fatalf("GREETING=%q", got)
	}
	// A poll that opened the FIFO again would wait for a writer forever.
	polled(t, pe.Stderr, 2)
	pe.Signal(syscall.SIGTERM)
	if code := pe.Wait(); code != 0 {
		t.Errorf("exit %d", code)
	}
	if n := len(harness.Starts(harness.ReadRecords(t, rec))); n != 1 {
		t.Errorf("%d child starts", n)
	}
}

func TestEnvFileFIFOSwappedInForAWatchedFile(t *testing.T) {
	harness.ParallelE2E(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "app.env")
	harness.MustDo(t, os.WriteFile(file, []byte("GREETING=hello\n"), 0o600))
	args, rec := harness.ChildArgs(t)
	pe := harness.StartBinary(t, harness.BaseEnv(""), append([]string{"--env-file", file, "--interval", "1s"}, args...)...)
	harness.WaitStarts(t, rec, 1)
	fifo := filepath.Join(dir, "fifo")
	harness.MustDo(t, syscall.Mkfifo(fifo, 0o600))
	harness.MustDo(t, os.Rename(fifo, file))
	harness.WaitFor(t, "a failed poll", func() bool { return strings.Contains(pe.Stderr.String(), "no longer a regular file") })
	// A poll blocked on the FIFO would hold paramexec's shutdown forever.
	pe.Signal(syscall.SIGTERM)
	if code := pe.Wait(); code != 0 {
		t.Errorf("exit %d:\n%s", code, pe.Stderr.String())
	}
	if n := len(harness.Starts(harness.ReadRecords(t, rec))); n != 1 {
		t.Errorf("%d child starts", n)
	}
}

func TestEnvFileEndless(t *testing.T) {
	harness.ParallelE2E(t)
	args, rec := harness.ChildArgs(t)
	r := harness.RunBinary(t, harness.BaseEnv(""), append([]string{"--env-file", "/dev/zero"}, args...)...)
	if r.Code != harness.ExitSource || !strings.Contains(r.Stderr, "1048576 bytes") {
		t.Errorf("exit %d, stderr:\n%s", r.Code, r.Stderr)
	}
	if len(harness.ReadRecords(t, rec)) != 0 {
		t.Error("the child ran")
	}
}

func TestBrokenEnvFileWhileWatchingSaysWhatHappens(t *testing.T) {
	harness.ParallelE2E(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "app.env")
	harness.MustDo(t, os.WriteFile(file, []byte("GREETING=one\n"), 0o600))
	args, rec := harness.ChildArgs(t)
	pe := harness.StartBinary(t, harness.BaseEnv(""), append([]string{"--env-file", file, "--interval", "1h"}, args...)...)
	harness.WaitStarts(t, rec, 1)
	save := func(text string) {
		tmp := filepath.Join(dir, ".app.env.tmp")
		harness.MustDo(t, os.WriteFile(tmp, []byte(text), 0o600))
		harness.MustDo(t, os.Rename(tmp, file))
	}
	save("GREETING='one\n")
	var line string
	harness.WaitFor(t, "the failed read", func() bool {
		for l := range strings.SplitSeq(pe.Stderr.String(), "\n") {
			if strings.Contains(l, "unterminated quoted value") {
				line = l
				return true
			}
		}
		return false
	})
	if strings.Contains(line, `code=""`) || !strings.Contains(line, "next save") {
		t.Errorf("the warning does not say what happens next:\n%s", line)
	}
	// The fix is read on its save, not after retry_in (about an hour).
	save("GREETING=two\n")
	if got := harness.WaitStarts(t, rec, 2)[1].Env["GREETING"]; got != "two" {
		t.Errorf("GREETING=%q after the fix", got)
	}
	pe.Signal(syscall.SIGTERM)
	pe.Wait()
}

// noInotifyEnv names the paramexec binary that this test binary, started
// as a wrapper, executes with no inotify instance left to it.
const noInotifyEnv = "PARAMEXEC_TEST_EXEC_WITHOUT_INOTIFY"

// init is the wrapper's side: inside a fresh user namespace, where the
// inotify instance limit is the namespace's own, it takes every instance
// away and becomes paramexec. inotify_init1 then fails with EMFILE, as
// when fs.inotify.max_user_instances is used up, for this process tree
// alone and not for the tests running beside it.
func init() {
	bin := os.Getenv(noInotifyEnv)
	if bin == "" {
		return
	}
	if err := os.WriteFile("/proc/sys/user/max_inotify_instances", []byte("0"), 0); err != nil {
		fmt.Fprintln(os.Stderr, "wrapper:", err)
		os.Exit(97)
	}
	env := environ.Filter(os.Environ(), func(name string) bool { return name != noInotifyEnv })
	err := syscall.Exec(bin, append([]string{bin}, os.Args[1:]...), env)
	fmt.Fprintln(os.Stderr, "wrapper:", err)
	os.Exit(98)
}

func TestPollingGoesOnWithoutInotify(t *testing.T) {
	harness.ParallelE2E(t)
	self, err := os.Executable()
	harness.MustDo(t, err)
	dir := t.TempDir()
	file := filepath.Join(dir, "app.env")
	harness.MustDo(t, os.WriteFile(file, []byte("GREETING=one\n"), 0o600))
	var stderr harness.SyncBuffer
	args, rec := harness.ChildArgs(t)
	probe := osexec.Command("/bin/true")
	probe.SysProcAttr = userNS()
	if err := probe.Run(); err != nil {
		testenv.SkipOrFailOnCI(t, "no user namespace for the inotify limit: %v", err)
	}
	pe, wait := startCmd(t, func(cmd *osexec.Cmd) {
		cmd.Path = self
		cmd.Env = append(cmd.Env, noInotifyEnv+"="+harness.BinPath)
		cmd.SysProcAttr = userNS()
		cmd.Stderr = &stderr
	}, append([]string{"--env-file", file, "--interval", "1s"}, args...)...)
	harness.WaitStarts(t, rec, 1)
	// The edit is seen by a poll: nothing else is left to see it.
	tmp := filepath.Join(dir, ".app.env.tmp")
	harness.MustDo(t, os.WriteFile(tmp, []byte("GREETING=two\n"), 0o600))
	harness.MustDo(t, os.Rename(tmp, file))
	if got := harness.WaitStarts(t, rec, 2)[1].Env["GREETING"]; got != "two" {
		t.Errorf("GREETING=%q after the edit", got)
	}
	warn := "cannot watch --env-file files; edits are seen at the next poll"
	harness.WaitFor(t, "the warning that the file watch is off", func() bool { return strings.Contains(stderr.String(), warn) })
	if !strings.Contains(stderr.String(), "too many open files") {
		t.Errorf("the warning does not say why:\n%s", stderr.String())
	}
	harness.MustDo(t, pe.Process.Signal(syscall.SIGTERM))
	if code := wait(); code != 0 {
		t.Errorf("exit %d:\n%s", code, stderr.String())
	}
}

// userNS puts a process in a user namespace of its own, mapping the
// test's user to root there.
func userNS() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
}
