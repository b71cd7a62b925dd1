package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// bigValue is a seeded value of n bytes, so the log scan would see a leak.
func bigValue(n int) string {
	return val(strings.Repeat("x", n-len(valueMark)))
}

// expectRejected edits file to content, waits for paramexec to reject the
// result, and checks the first child was left alone: still the only one,
// never asked to stop, paramexec still running.
func expectRejected(t *testing.T, pe *running, rec, file, content, want string) {
	t.Helper()
	before := strings.Count(pe.stderr.String(), "new environment rejected")
	mustDo(t, os.WriteFile(file, []byte(content), 0o600))
	waitFor(t, "the rejection in the log", func() bool {
		return strings.Count(pe.stderr.String(), "new environment rejected") > before
	})
	if !strings.Contains(pe.stderr.String(), want) {
		t.Errorf("the rejection does not say %q:\n%s", want, pe.stderr.String())
	}
	select {
	case <-pe.done:
		t.Fatalf("paramexec exited %d after a rejected environment:\n%s", pe.code, pe.stderr.String())
	default:
	}
	if n := len(starts(readRecords(t, rec))); n != 1 {
		t.Errorf("%d child starts, want the first child only", n)
	}
	if sigs := signalsAt(t, rec); len(sigs) != 0 {
		t.Errorf("the working child got %q for an environment that cannot start", sigs)
	}
}

// expectRecovers writes a good file and waits for the restart it causes.
func expectRecovers(t *testing.T, pe *running, rec, file string) {
	t.Helper()
	mustDo(t, os.WriteFile(file, []byte("V=3\n"), 0o600))
	if got := waitStarts(t, rec, 2)[1].Env["V"]; got != "3" {
		t.Errorf("after a good edit V=%q, want 3", got)
	}
	pe.signal(syscall.SIGTERM)
	if code := pe.wait(); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
}

func TestRestartRejectsEnvironmentThatCannotExec(t *testing.T) {
	parallelE2E(t)
	t.Run("total over a quarter of the stack limit", func(t *testing.T) {
		// A 1 MiB stack limit leaves 256 KiB to all strings. The inherited
		// variables take 240 KiB; the edit adds 60 KiB more.
		env, prefix := stackLimited()
		file := filepath.Join(t.TempDir(), "app.env")
		mustDo(t, os.WriteFile(file, []byte("V=1\n"), 0o600))
		args, rec := childArgs(t)
		pe := startCommand(t, env, "prlimit", append(append(prefix, "--env-file", file, "--interval", "1h"), args...)...)
		waitStarts(t, rec, 1)
		expectRejected(t, pe, rec, file, "V=2\nMORE="+bigValue(60<<10)+"\n", "over the 262144 execve accepts")
		expectRecovers(t, pe, rec, file)
	})
	t.Run("command no longer on PATH", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "app.env")
		mustDo(t, os.WriteFile(file, []byte("V=1\n"), 0o600))
		env := slices.DeleteFunc(baseEnv(""), func(kv string) bool { return strings.HasPrefix(kv, "PATH=") })
		env = append(env, "PATH="+filepath.Dir(childBin)+":"+os.Getenv("PATH"))
		_, rec := childArgs(t)
		pe := startBinary(t, env, "--env-file", file, "--interval", "1h", "--", filepath.Base(childBin), "-record", rec)
		waitStarts(t, rec, 1)
		expectRejected(t, pe, rec, file, "V=2\nPATH=/nonexistent\n", "executable file not found")
		expectRecovers(t, pe, rec, file)
	})
}

// stackLimited is paramexec under prlimit with a 1 MiB stack limit, which
// leaves 256 KiB to all of execve's strings; bulk inherited variables take
// 240 KiB of it.
func stackLimited() (env []string, prefix []string) {
	env = baseEnv("")
	for _, name := range []string{"BULK1", "BULK2", "BULK3", "BULK4"} {
		env = append(env, name+"="+bigValue(60<<10))
	}
	return env, []string{"--stack=1048576", "--", binPath}
}

// At start-up E2BIG is no "not executable": it says so, with figures and
// names, under its own exit code, in place and supervised alike.
func TestStartupEnvironmentTooLarge(t *testing.T) {
	parallelE2E(t)
	file := filepath.Join(t.TempDir(), "app.env")
	mustDo(t, os.WriteFile(file, []byte("MORE="+bigValue(60<<10)+"\n"), 0o600))
	env, prefix := stackLimited()
	for _, mode := range [][]string{nil, {"--init"}} {
		args, rec := childArgs(t)
		r := runCommand(t, env, "prlimit", append(append(append(prefix, "--env-file", file), mode...), args...)...)
		if r.code != 126 || !strings.Contains(r.stderr, "environment too large") || !strings.Contains(r.stderr, "over the 262144 execve accepts") {
			t.Errorf("%q: exit %d, want 126 and \"environment too large\" with the limit:\n%s", mode, r.code, r.stderr)
		}
		if strings.Contains(r.stderr, "not executable") {
			t.Errorf("%q: reported as not executable:\n%s", mode, r.stderr)
		}
		if _, err := os.Stat(rec); err == nil {
			t.Errorf("%q: a child started", mode)
		}
	}
}
