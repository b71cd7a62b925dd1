package exec_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/paramexec/paramexec/internal/testenv"
)

// supervise starts the test binary as helperSupervise, a small paramexec,
// supervising argv.
func supervise(t *testing.T, dir string, extraEnv []string, argv ...string) (*osexec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := osexec.Command(os.Args[0], argv...)
	cmd.Env = append([]string{helperEnv + "=supervise", "PATH=" + os.Getenv("PATH"), "D=" + dir}, extraEnv...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		t.Logf("supervisor output:\n%s", out.String())
	})
	return cmd, &out
}

func exitCode(t *testing.T, cmd *osexec.Cmd) int {
	t.Helper()
	err := cmd.Wait()
	if ee, ok := err.(*osexec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

// TestSuperviseEndToEnd sends real signals to a supervisor wired as main
// wires it: signals.Notify, signals.Reap, a subreaper.
func TestSuperviseEndToEnd(t *testing.T) {
	dir := t.TempDir()
	cmd, _ := supervise(t, dir, nil, "sh", "-c", signalScript)
	eventually(t, "the child to be ready", func() bool { return exists(filepath.Join(dir, "ready")) })
	sent := []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGQUIT, syscall.Signal(40)}
	var want []string
	for _, sig := range sent {
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		want = append(want, strconv.Itoa(int(sig)))
	}
	slices.Sort(want)
	eventually(t, "the child to record "+strings.Join(want, " "), func() bool {
		got := slices.DeleteFunc(readLines(t, filepath.Join(dir, "got")), func(s string) bool { return s == "gc" })
		slices.Sort(got)
		return slices.Equal(slices.Compact(got), want)
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, cmd); code != 7 {
		t.Fatalf("supervisor exited %d; want the child's 7", code)
	}
}

func TestSuperviseEndToEndRestart(t *testing.T) {
	dir := t.TempDir()
	cmd, out := supervise(t, dir, []string{"HELPER_RESTART_WHEN=" + filepath.Join(dir, "ready.1")}, "sh", "-c", restartScript)
	eventually(t, "the second child", func() bool { return exists(filepath.Join(dir, "ready.2")) })
	oldGrandchild := readPid(t, filepath.Join(dir, "gc.1"))
	// The supervisor is a subreaper: the killed grandchild is reparented
	// to it and reaped, not left a zombie.
	eventually(t, "the old grandchild to be reaped", func() bool { return syscall.Kill(oldGrandchild, 0) == syscall.ESRCH })
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	// SIGINT reaches the child as the stop signal, SIGTERM, which its trap
	// turns into exit 0 (SIGINT itself would have given sh's 130).
	if code := exitCode(t, cmd); code != 0 {
		t.Fatalf("supervisor exited %d; want the child's 0 from its TERM trap", code)
	}
	if !strings.Contains(out.String(), "restart finished") {
		t.Error("no restart logged")
	}
}

// openPTY returns the two ends of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		testenv.SkipOrFailOnCI(t, "no pseudo-terminals: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		testenv.SkipOrFailOnCI(t, "unlockpt: %v", err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		testenv.SkipOrFailOnCI(t, "ptsname: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		testenv.SkipOrFailOnCI(t, "open pts: %v", err)
	}
	return m, s
}

// fgScript writes "pgrp tpgid pid" of itself to $D/fg.$GEN: its process
// group and the terminal's foreground group.
const fgScript = `
read -r s < /proc/$$/stat; set -- $s; echo "$5 $8 $$" > $D/fg.$GEN
: > $D/ready.$GEN
if [ "$GEN" = 1 ]; then trap 'exit 0' TERM; sleep 1000 & wait $!; fi
exit 0
`

// TestSuperviseForegroundTerminal runs the supervisor as the session
// leader of a terminal, as a shell runs a command: each child must own the
// terminal's foreground, and the supervisor must have it back at the end.
func TestSuperviseForegroundTerminal(t *testing.T) {
	master, slave := openPTY(t)
	defer master.Close()
	dir := t.TempDir()
	cmd := osexec.Command(os.Args[0], "sh", "-c", fgScript)
	cmd.Env = []string{helperEnv + "=supervise", "PATH=" + os.Getenv("PATH"), "D=" + dir,
		"HELPER_RESTART_WHEN=" + filepath.Join(dir, "ready.1"), "HELPER_STAT=" + filepath.Join(dir, "helper.stat")}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() {
		io.Copy(&out, master) // ends with EIO once the terminal is closed
		close(copied)
	}()
	code := exitCode(t, cmd)
	master.Close()
	<-copied
	t.Logf("terminal output:\n%s", out.String())
	if code != 0 {
		t.Fatalf("supervisor exited %d", code)
	}
	for _, gen := range []string{"1", "2"} {
		f := strings.Fields(strings.Join(readLines(t, filepath.Join(dir, "fg."+gen)), " "))
		if len(f) != 3 || f[0] != f[1] || f[0] != f[2] {
			t.Errorf("child %s: pgrp, foreground group, pid = %q; want all the child's pid", gen, f)
		}
	}
	f := strings.Fields(strings.Join(readLines(t, filepath.Join(dir, "helper.stat")), " "))
	if len(f) != 2 || f[0] != f[1] || f[0] != strconv.Itoa(cmd.Process.Pid) {
		t.Errorf("supervisor after Run: pgrp, foreground group = %q; want both %d", f, cmd.Process.Pid)
	}
}
