package exec_test

import (
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/testenv"
)

// D7: job control in a terminal, as a user has it: paramexec supervising
// `sleep 1000` from an interactive shell in a real pty (tmux). ^Z stops
// the child and then paramexec, so the shell gets its prompt back; fg
// continues both; ^C ends the child, and paramexec with it (130).
func TestJobControlInATerminal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds paramexec and drives a terminal")
	}
	for _, tool := range []string{"tmux", "bash", "go"} {
		if _, err := osexec.LookPath(tool); err != nil {
			testenv.SkipOrFailOnCI(t, "%s not installed", tool)
		}
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "paramexec")
	build := osexec.Command("go", "build", "-o", bin, "github.com/paramexec/paramexec")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte("A=1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tm := &tmux{t: t, sock: filepath.Join(dir, "tmux.sock")}
	tm.run("new-session", "-d", "-x", "150", "-y", "40", "env", "-i", "PATH="+os.Getenv("PATH"), "HOME="+dir, "HISTFILE=/dev/null", "TERM=xterm", "bash", "--norc", "--noprofile", "-i")
	shell := tm.panePid()
	t.Cleanup(func() {
		tm.run("kill-server")
		// The shell and the server leave files in dir as they go.
		eventually(t, "the shell to exit", func() bool { return !alive(shell) })
	})
	tm.keys("cd "+dir+" && PS1='$ '", "Enter")
	tm.keys(bin+" --env-file .env --interval 1m -- sleep 1000", "Enter")
	var sup, child int
	eventually(t, "paramexec to start sleep", func() bool {
		sup = childOf(shell, "paramexec")
		child = childOf(sup, "sleep")
		return child > 0
	})

	tm.keys("C-z")
	eventually(t, "the child and paramexec to stop", func() bool { return procState(child) == "T" && procState(sup) == "T" })
	tm.keys("echo prompt-$((40+2))", "Enter")
	tm.waitFor("prompt-42")

	tm.keys("fg", "Enter")
	eventually(t, "fg to continue both", func() bool { return procState(child) == "S" && procState(sup) != "T" })
	// Watched 300 ms: a child continued but stopped again (or a paramexec
	// that does not give the terminal back) would show within that.
	time.Sleep(300 * time.Millisecond)
	if s := procState(child); s == "T" {
		t.Fatalf("the child stopped again after fg\n%s", tm.capture())
	}

	tm.keys("C-c")
	eventually(t, "paramexec to exit", func() bool { return !alive(sup) })
	tm.keys("echo code=$?", "Enter")
	tm.waitFor("code=130")
}

type tmux struct {
	t    *testing.T
	sock string
}

func (m *tmux) run(args ...string) string {
	m.t.Helper()
	out, err := osexec.Command("tmux", append([]string{"-S", m.sock}, args...)...).CombinedOutput()
	if err != nil && args[0] != "kill-server" {
		m.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (m *tmux) keys(keys ...string) { m.run(append([]string{"send-keys", "-t", "0"}, keys...)...) }

func (m *tmux) capture() string { return m.run("capture-pane", "-p", "-t", "0") }

func (m *tmux) panePid() int {
	pid, err := strconv.Atoi(strings.TrimSpace(m.run("display-message", "-p", "-t", "0", "#{pane_pid}")))
	if err != nil {
		m.t.Fatal(err)
	}
	return pid
}

// waitFor waits for text on the screen.
func (m *tmux) waitFor(text string) {
	m.t.Helper()
	end := time.Now().Add(deadline)
	for !strings.Contains(m.capture(), text) {
		if time.Now().After(end) {
			m.t.Fatalf("no %q on the screen:\n%s", text, m.capture())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// childOf returns a child of ppid whose command is comm, 0 if none. It
// scans /proc: paramexec forks from a thread of its own, whose children
// /proc/PID/task/PID/children does not list.
func childOf(ppid int, comm string) int {
	if ppid <= 0 {
		return 0
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		name := s[strings.IndexByte(s, '(')+1 : strings.LastIndexByte(s, ')')]
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && name == comm && f[1] == strconv.Itoa(ppid) {
			return pid
		}
	}
	return 0
}
