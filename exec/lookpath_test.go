package exec_test

import (
	"errors"
	"os"
	osexec "os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/paramexec/paramexec/exec"
)

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	bin1, bin2, empty := filepath.Join(dir, "bin1"), filepath.Join(dir, "bin2"), filepath.Join(dir, "empty")
	for _, d := range []string{bin1, bin2, empty, filepath.Join(bin1, "isdir"), filepath.Join(bin2, "sub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path string, mode os.FileMode) {
		if err := os.WriteFile(path, []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(bin1, "prog"), 0o755)
	write(filepath.Join(bin1, "plain"), 0o644)
	write(filepath.Join(bin2, "plain"), 0o755) // later on PATH, executable
	write(filepath.Join(bin1, "onlyplain"), 0o644)
	write(filepath.Join(bin2, "isdir"), 0o755) // after a directory of the same name
	write(filepath.Join(bin2, "sub", "prog"), 0o755)
	osPath := os.Getenv("PATH")

	for _, tc := range []struct {
		name, cmd string
		env       []string
		want      string
		err       error
	}{
		{"found", "prog", []string{"PATH=" + bin1}, filepath.Join(bin1, "prog"), nil},
		{"first executable match wins", "plain", []string{"PATH=" + bin1 + ":" + bin2}, filepath.Join(bin2, "plain"), nil},
		{"directory skipped", "isdir", []string{"PATH=" + bin1 + ":" + bin2}, filepath.Join(bin2, "isdir"), nil},
		{"last PATH in env wins", "prog", []string{"PATH=" + empty, "PATH=" + bin1}, filepath.Join(bin1, "prog"), nil},
		{"not found", "nope", []string{"PATH=" + bin1 + ":" + bin2}, "", exec.ErrNotFound},
		{"only directory", "isdir", []string{"PATH=" + bin1}, "", exec.ErrNotFound},
		{"not executable", "onlyplain", []string{"PATH=" + bin1 + ":" + bin2}, "", exec.ErrNotExecutable},
		{"PATH from env, not os", "sh", []string{"PATH=" + empty}, "", exec.ErrNotFound},
		{"os PATH not used either when env has none", "prog", []string{"HOME=/"}, "", exec.ErrNotFound},
		{"no PATH: default path", "sh", nil, "/usr/bin/sh", nil},
		{"slash: not searched", "sub/prog", []string{"PATH=" + bin2}, "", exec.ErrNotFound},
		{"slash: absolute", filepath.Join(bin1, "prog"), []string{"PATH=" + empty}, filepath.Join(bin1, "prog"), nil},
		{"slash: not executable", filepath.Join(bin1, "plain"), nil, "", exec.ErrNotExecutable},
		{"slash: directory", bin1, nil, "", exec.ErrNotExecutable},
		{"slash: missing", filepath.Join(bin1, "nope"), nil, "", exec.ErrNotFound},
		{"slash: through a file", filepath.Join(bin1, "prog", "x"), nil, "", exec.ErrNotFound},
		{"empty name", "", []string{"PATH=" + osPath}, "", exec.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := exec.LookPath(tc.cmd, tc.env)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("LookPath(%q) = %q, %v; want an error wrapping %v", tc.cmd, got, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("LookPath(%q): %v", tc.cmd, err)
			}
			if tc.name == "no PATH: default path" {
				// /bin may be a link to /usr/bin; either is right.
				if got != "/usr/bin/sh" && got != "/bin/sh" && got != "/usr/local/bin/sh" {
					t.Fatalf("LookPath(sh) = %q", got)
				}
				return
			}
			if got != tc.want {
				t.Fatalf("LookPath(%q) = %q; want %q", tc.cmd, got, tc.want)
			}
		})
	}
}

func TestLookPathEmptyElementIsCurrentDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "here"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	got, err := exec.LookPath("here", []string{"PATH=/nonexistent:"})
	if err != nil || got != "./here" {
		t.Fatalf("LookPath = %q, %v; want ./here", got, err)
	}
}

// A program in a directory the user may not enter is there but cannot be
// run: 126, not 127. Root passes directory permission checks, so as root
// the lookup runs in a copy of the test binary with nobody's credentials.
func TestLookPathPermissionDenied(t *testing.T) {
	dir, err := os.MkdirTemp("", "lookpath")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	locked := filepath.Join(dir, "locked")
	if err := os.Mkdir(locked, 0o755); err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(locked, "prog")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(locked, 0o000); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(locked, 0o755) })
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath(prog, nil); !errors.Is(err, exec.ErrNotExecutable) {
			t.Fatalf("err = %v; want ErrNotExecutable", err)
		}
		return
	}
	// nobody must reach the test binary and the directory above locked:
	// a copy of the binary goes next to locked, and both get 0755 (go
	// test's build directory and t.TempDir are 0700).
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(dir, "exec.test")
	if err := os.WriteFile(helper, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := osexec.Command(helper, prog)
	cmd.Env = append(os.Environ(), helperEnv+"=lookpath")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	var exit *osexec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 126 {
		t.Fatalf("LookPath as nobody: %v, want exit 126 (not executable); output:\n%s", err, out)
	}
}

func TestExitCode(t *testing.T) {
	_, notFound := exec.LookPath("paramexec-no-such-command", []string{"PATH=/nonexistent"})
	_, notExec := exec.LookPath(t.TempDir(), nil)
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{notFound, 127},
		{notExec, 126},
		{errors.New("fork: resource temporarily unavailable"), 126},
	} {
		if got := exec.ExitCode(tc.err); got != tc.want {
			t.Errorf("ExitCode(%v) = %d; want %d", tc.err, got, tc.want)
		}
	}
}
