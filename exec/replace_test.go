package exec_test

import (
	"bytes"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// replaceIn runs the test binary as helperReplace, which replaces itself
// with argv, and returns what it printed and its exit code.
func replaceIn(t *testing.T, env []string, argv ...string) (string, int, int) {
	t.Helper()
	cmd := osexec.Command(os.Args[0], argv...)
	cmd.Env = append([]string{helperEnv + "=replace"}, env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*osexec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	t.Logf("stderr: %s", errOut.String())
	return out.String(), code, cmd.Process.Pid
}

func TestReplace(t *testing.T) {
	path := "PATH=" + os.Getenv("PATH")
	// The shell reads its own signal dispositions: what it inherited.
	script := `echo "pid=$$ foo=$FOO helper=${` + helperEnv + `-unset}"
while read -r l; do case $l in Sig[IC]*) echo "$l";; esac; done < /proc/self/status`
	out, code, pid := replaceIn(t, []string{path, "FOO=bar"}, "sh", "-c", script)
	if code != 0 {
		t.Fatalf("exit code %d, output %q", code, out)
	}
	first, dispositions, _ := strings.Cut(out, "\n")
	if want := fmt.Sprintf("pid=%d foo=bar helper=unset", pid); first != want {
		t.Errorf("new program printed %q; want %q (same pid, env as given)", first, want)
	}
	// The helper handled SIGUSR1 and ignored SIGUSR2 before replacing
	// itself: the new program must start as if run directly.
	cmd := osexec.Command("sh", "-c", script)
	cmd.Env = []string{path, "FOO=bar"}
	direct, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	_, want, _ := strings.Cut(string(direct), "\n")
	if dispositions != want || !strings.Contains(want, "SigIgn") {
		t.Errorf("after Replace the program has signal dispositions\n%s\nwant, as when run directly,\n%s", dispositions, want)
	}
}

func TestReplaceFailure(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\necho ran\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := "PATH=" + os.Getenv("PATH")
	for _, tc := range []struct {
		name string
		env  []string
		argv []string
		want int
	}{
		{"not found", []string{path}, []string{"paramexec-no-such-command"}, 127},
		{"not found in env PATH", []string{"PATH=" + dir}, []string{"sh", "-c", "exit 0"}, 127},
		{"not executable", []string{path}, []string{plain}, 126},
		{"directory", []string{path}, []string{dir}, 126},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code, _ := replaceIn(t, tc.env, tc.argv...)
			if code != tc.want || out != "" {
				t.Fatalf("exit code %d, output %q; want %d and nothing run", code, out, tc.want)
			}
		})
	}
}
