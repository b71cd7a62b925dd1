package supervise

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/paramexec/paramexec/internal/harness"
)

// bigValue is a seeded value of n bytes, so the log scan would see a leak.
func bigValue(n int) string {
	return harness.Val(strings.Repeat("x", n-len(harness.ValueMark)))
}

// expectRejected edits file to content, waits for paramexec to reject the
// result, and checks the first child was left alone: still the only one,
// never asked to stop, paramexec still running.
func expectRejected(t *testing.T, pe *harness.Running, rec, file, content, want string) {
	t.Helper()
	before := strings.Count(pe.Stderr.String(), "new environment rejected")
	harness.MustDo(t, os.WriteFile(file, []byte(content), 0o600))
	harness.WaitFor(t, "the rejection in the log", func() bool {
		return strings.Count(pe.Stderr.String(), "new environment rejected") > before
	})
	if !strings.Contains(pe.Stderr.String(), want) {
		t.Errorf("the rejection does not say %q:\n%s", want, pe.Stderr.String())
	}
	select {
	case <-pe.Done():
		t.Fatalf("paramexec exited %d after a rejected environment:\n%s", pe.Code(), pe.Stderr.String())
	default:
	}
	if n := len(harness.Starts(harness.ReadRecords(t, rec))); n != 1 {
		t.Errorf("%d child starts, want the first child only", n)
	}
	if sigs := signalsAt(t, rec); len(sigs) != 0 {
		t.Errorf("the working child got %q for an environment that cannot start", sigs)
	}
}

// expectRecovers writes a good file and waits for the restart it causes.
func expectRecovers(t *testing.T, pe *harness.Running, rec, file string) {
	t.Helper()
	harness.MustDo(t, os.WriteFile(file, []byte("V=3\n"), 0o600))
	if got := harness.WaitStarts(t, rec, 2)[1].Env["V"]; got != "3" {
		t.Errorf("after a good edit V=%q, want 3", got)
	}
	pe.Signal(syscall.SIGTERM)
	if code := pe.Wait(); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
}

func TestRestartRejectsEnvironmentThatCannotExec(t *testing.T) {
	harness.ParallelE2E(t)
	t.Run("total over a quarter of the stack limit", func(t *testing.T) {
		// A 1 MiB stack limit leaves 256 KiB to all strings. The inherited
		// variables take 240 KiB; the edit adds 60 KiB more.
		env, prefix := stackLimited()
		file := filepath.Join(t.TempDir(), "app.env")
		harness.MustDo(t, os.WriteFile(file, []byte("V=1\n"), 0o600))
		args, rec := harness.ChildArgs(t)
		pe := harness.StartCommand(t, env, "prlimit", append(append(prefix, "--env-file", file, "--interval", "1h"), args...)...)
		harness.WaitStarts(t, rec, 1)
		expectRejected(t, pe, rec, file, "V=2\nMORE="+bigValue(60<<10)+"\n", "over the 262144 execve accepts")
		expectRecovers(t, pe, rec, file)
	})
	t.Run("command no longer on PATH", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "app.env")
		harness.MustDo(t, os.WriteFile(file, []byte("V=1\n"), 0o600))
		env := slices.DeleteFunc(harness.BaseEnv(""), func(kv string) bool { return strings.HasPrefix(kv, "PATH=") })
		env = append(env, "PATH="+filepath.Dir(harness.ChildBin)+":"+os.Getenv("PATH"))
		_, rec := harness.ChildArgs(t)
		pe := harness.StartBinary(t, env, "--env-file", file, "--interval", "1h", "--", filepath.Base(harness.ChildBin), "-record", rec)
		harness.WaitStarts(t, rec, 1)
		expectRejected(t, pe, rec, file, "V=2\nPATH=/nonexistent\n", "executable file not found")
		expectRecovers(t, pe, rec, file)
	})
}

// stackLimited is paramexec under prlimit with a 1 MiB stack limit, which
// leaves 256 KiB to all of execve's strings; bulk inherited variables take
// 240 KiB of it.
func stackLimited() (env []string, prefix []string) {
	env = harness.BaseEnv("")
	for _, name := range []string{"BULK1", "BULK2", "BULK3", "BULK4"} {
		env = append(env, name+"="+bigValue(60<<10))
	}
	return env, []string{"--stack=1048576", "--", harness.BinPath}
}

// At start-up E2BIG is no "not executable": it says so, with figures and
// names, under its own exit code, in place and supervised alike.
func TestStartupEnvironmentTooLarge(t *testing.T) {
	harness.ParallelE2E(t)
	file := filepath.Join(t.TempDir(), "app.env")
	harness.MustDo(t, os.WriteFile(file, []byte("MORE="+bigValue(60<<10)+"\n"), 0o600))
	env, prefix := stackLimited()
	for _, mode := range [][]string{nil, {"--init"}} {
		args, rec := harness.ChildArgs(t)
		r := harness.RunCommand(t, env, "prlimit", append(append(append(prefix, "--env-file", file), mode...), args...)...)
		if r.Code != 126 || !strings.Contains(r.Stderr, "environment too large") || !strings.Contains(r.Stderr, "over the 262144 execve accepts") {
			t.Errorf("%q: exit %d, want 126 and \"environment too large\" with the limit:\n%s", mode, r.Code, r.Stderr)
		}
		if strings.Contains(r.Stderr, "not executable") {
			t.Errorf("%q: reported as not executable:\n%s", mode, r.Stderr)
		}
		if _, err := os.Stat(rec); err == nil {
			t.Errorf("%q: a child started", mode)
		}
	}
}
