package files

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/paramexec/paramexec/internal/harness"
)

// uniqueName is a secret or parameter name of the test's own.
func uniqueName(t *testing.T, what string) string {
	return strings.TrimPrefix(harness.UniquePath(t), "/") + "/" + what
}

// readerChild is a child that reads APP_TOKEN_FILE when it starts and on
// each SIGHUP, and records what it read, with its pid, in the file $1:
// a program that follows the _FILE convention and reloads on a signal.
const readerChild = `rec=$1
echo "start $$ env=${APP_TOKEN-unset} db=${DB-unset} file=$(cat "$APP_TOKEN_FILE")" >> "$rec"
trap 'echo "hup $$ file=$(cat "$APP_TOKEN_FILE")" >> "$rec"' HUP
trap 'exit 0' TERM
while :; do sleep 1 & wait $!; done
`

// lines returns the lines of rec that start with prefix.
func lines(t *testing.T, rec, prefix string) []string {
	t.Helper()
	b, err := os.ReadFile(rec)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// A change of a value delivered only as a file, from a source that says
// reload, reaches the running child by SIGHUP: same pid, new file, nothing
// in its environment. A change of a value in the environment still
// restarts. When paramexec stops, the files go with it.
func TestFileChangeReloadsAndEnvChangeRestarts(t *testing.T) {
	harness.E2E(t)
	secret := uniqueName(t, "app")
	harness.Moto.CreateSecret(t, secret, `{"token":"`+harness.Val("tok1")+`"}`)
	param := "/" + uniqueName(t, "db")
	harness.Moto.PutParameter(t, param, harness.Val("db1"), "String")
	dir := filepath.Join(t.TempDir(), "files")
	rec := filepath.Join(t.TempDir(), "rec")
	pe := harness.StartBinary(t, harness.BaseEnv(harness.Moto.URL),
		"--secret", secret+"=APP_", "--param", param+"=DB", "--interval", "1s",
		"--files-dir", dir, "--name-file",
		"--deliver", "files:secret:"+secret+"=APP_",
		"--on-change-of", "reload:secret:"+secret+"=APP_",
		"--", "sh", "-c", readerChild, "sh", rec)

	harness.WaitFor(t, "the child's start", func() bool { return len(lines(t, rec, "start ")) == 1 })
	start := lines(t, rec, "start ")[0]
	if want := "env=unset db=" + harness.Val("db1") + " file=" + harness.Val("tok1"); !strings.HasSuffix(start, want) {
		t.Fatalf("child started with %q, want it to end %q: the token only in its file", start, want)
	}
	pid := strings.Fields(start)[1]
	checkPrivate(t, dir, filepath.Join(dir, "APP_TOKEN"))

	harness.Moto.PutSecretValue(t, secret, `{"token":"`+harness.Val("tok2")+`"}`)
	harness.WaitFor(t, "the child's reload", func() bool { return len(lines(t, rec, "hup ")) > 0 })
	if hup, want := lines(t, rec, "hup ")[0], "hup "+pid+" file="+harness.Val("tok2"); hup != want {
		t.Fatalf("after the rotation the child recorded %q, want %q: the same process reading the new file", hup, want)
	}
	// The reload is the change's whole effect: a restart would have come
	// before the signal (the change is acted on once), so one look after
	// the child recorded the signal is enough.
	if n := len(lines(t, rec, "start ")); n != 1 {
		t.Fatalf("%d starts after a files-only change; want no restart", n)
	}
	log := pe.Stderr.String()
	if !regexp.MustCompile(`signalling child to reload.*signal=SIGHUP.*APP_TOKEN changed`).MatchString(log) {
		t.Errorf("the log does not say the child was signalled for APP_TOKEN:\n%s", log)
	}

	harness.Moto.PutParameter(t, param, harness.Val("db2"), "String")
	harness.WaitFor(t, "the restart for DB", func() bool { return len(lines(t, rec, "start ")) == 2 })
	second := lines(t, rec, "start ")[1]
	if strings.Fields(second)[1] == pid || !strings.Contains(second, "db="+harness.Val("db2")+" file="+harness.Val("tok2")) {
		t.Fatalf("after a change in the environment the child recorded %q; want a new process with db2 and tok2", second)
	}

	pe.Signal(syscall.SIGTERM)
	if code := pe.Wait(); code != 0 {
		t.Fatalf("paramexec exited %d after SIGTERM; stderr:\n%s", code, pe.Stderr.String())
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Fatalf("the files directory is still there after paramexec exited (%v)", err)
	}
}

// checkPrivate fails unless dir is 0700 and file, read through its link,
// 0400, both this user's.
func checkPrivate(t *testing.T, dir, file string) {
	t.Helper()
	for path, want := range map[string]os.FileMode{dir: 0o700, file: 0o400} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != want || int(st.Uid) != os.Geteuid() {
			t.Errorf("%s: mode %#o uid %d, want %#o uid %d", path, fi.Mode().Perm(), st.Uid, want, os.Geteuid())
		}
	}
}

// A child that exits by itself ends paramexec too, and the files go:
// another way out than a signal.
func TestFilesRemovedWhenTheChildExits(t *testing.T) {
	harness.ParallelE2E(t)
	secret := uniqueName(t, "app")
	harness.Moto.CreateSecret(t, secret, `{"token":"`+harness.Val("tok")+`"}`)
	dir := filepath.Join(t.TempDir(), "files")
	out := filepath.Join(t.TempDir(), "out") // not stdout: the log scan reads that
	r := harness.RunBinary(t, harness.BaseEnv(harness.Moto.URL),
		"--secret", secret+"=APP_", "--files-dir", dir, "--name-file", "--files-mode", "0600",
		"--deliver", "files:secret:"+secret+"=APP_",
		"--", "sh", "-c", `test -z "${APP_TOKEN+x}" && test "$(stat -L -c %a "$APP_TOKEN_FILE")" = 600 && cat "$APP_TOKEN_FILE" > "$1"`, "sh", out)
	if got, _ := os.ReadFile(out); r.Code != 0 || string(got) != harness.Val("tok") {
		t.Fatalf("exit %d; want 0 and the token read from its 0600 file\nstderr:\n%s", r.Code, r.Stderr)
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Fatalf("the files directory is still there after paramexec exited (%v)", err)
	}
}

// Bad file settings are refused before anything runs, with exit 2 and a
// message that names the setting.
func TestBadFileSettingsExit2(t *testing.T) {
	harness.ParallelE2E(t)
	open := t.TempDir()
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(t.TempDir(), "ran")
	cmd := []string{"--", "sh", "-c", "touch " + marker}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--secret", "s", "--deliver", "files:secret:s", "--files-dir", open}, "lets other users in"},
		{[]string{"--secret", "s", "--interval", "5s", "--on-change-of", "reload:secret:s"}, "a reload signal reaches a child that re-reads files"},
		{[]string{"--secret", "s", "--deliver", "files:secret:other", "--files-dir", filepath.Join(open, "x")}, "no --secret other is given"},
		{[]string{"--secret", "s", "--deliver", "files:secret:s"}, "give --files-dir"},
	} {
		r := harness.RunBinary(t, harness.BaseEnv(harness.Moto.URL), append(tc.args, cmd...)...)
		if r.Code != harness.ExitUsage || !strings.Contains(r.Stderr, tc.want) {
			t.Errorf("%q: exit %d, stderr:\n%s\nwant exit 2 saying %q", tc.args, r.Code, r.Stderr, tc.want)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the command ran despite a refused setting")
	}
}

// --deliver document keeps a JSON secret whole: one file holding the
// document exactly as stored, named as --secret's PREFIX.
func TestJSONSecretAsOneDocument(t *testing.T) {
	harness.ParallelE2E(t)
	secret := uniqueName(t, "doc")
	doc := `{"user": "app", "password": "` + harness.Val("pw") + `", "port": 5432}`
	harness.Moto.CreateSecret(t, secret, doc)
	out := filepath.Join(t.TempDir(), "out")
	r := harness.RunBinary(t, harness.BaseEnv(harness.Moto.URL),
		"--secret", secret+"=DB_CONFIG", "--files-dir", filepath.Join(t.TempDir(), "files"), "--name-file",
		"--deliver", "document:secret:"+secret+"=DB_CONFIG",
		"--", "sh", "-c", `test -z "${DB_CONFIG+x}${DB_CONFIGPASSWORD+x}" && cat "$DB_CONFIG_FILE" > "$1"`, "sh", out)
	if got, _ := os.ReadFile(out); r.Code != 0 || string(got) != doc {
		t.Fatalf("exit %d; want 0 and the document whole in DB_CONFIG_FILE\nstderr:\n%s", r.Code, r.Stderr)
	}
	r = harness.RunBinary(t, harness.BaseEnv(harness.Moto.URL),
		"--param", "/p", "--files-dir", filepath.Join(t.TempDir(), "files"), "--deliver", "document:param:/p", "--", "true")
	if r.Code != harness.ExitUsage || !strings.Contains(r.Stderr, "a --secret only") {
		t.Fatalf("--deliver document of a --param: exit %d, stderr:\n%s\nwant exit 2", r.Code, r.Stderr)
	}
}

// rollbackChild records the file it read and fails at once when that is
// the bad value, as a program that cannot use a new password would.
const rollbackChild = `rec=$1
v=$(cat "$APP_TOKEN_FILE")
echo "start $$ file=$v" >> "$rec"
case $v in *bad*) exit 1;; esac
trap 'exit 0' TERM
while :; do sleep 1 & wait $!; done
`

// A change of a value in files only, from a source that says restart,
// restarts the child; when the new child fails, the rollback restores
// the files with the environment: the restored child reads the old value.
func TestFilesRollBackWithTheEnvironment(t *testing.T) {
	harness.E2E(t)
	secret := uniqueName(t, "app")
	harness.Moto.CreateSecret(t, secret, `{"token":"`+harness.Val("good")+`"}`)
	rec := filepath.Join(t.TempDir(), "rec")
	pe := harness.StartBinary(t, harness.BaseEnv(harness.Moto.URL),
		"--secret", secret+"=APP_", "--interval", "1s", "--rollback-window", "3s",
		"--files-dir", filepath.Join(t.TempDir(), "files"), "--name-file",
		"--deliver", "files:secret:"+secret+"=APP_",
		"--", "sh", "-c", rollbackChild, "sh", rec)
	harness.WaitFor(t, "the first child", func() bool { return len(lines(t, rec, "start ")) == 1 })
	harness.Moto.PutSecretValue(t, secret, `{"token":"`+harness.Val("bad")+`"}`)
	harness.WaitFor(t, "the rollback's child", func() bool { return len(lines(t, rec, "start ")) >= 3 })
	starts := lines(t, rec, "start ")
	for i, want := range []string{"good", "bad", "good"} {
		if !strings.HasSuffix(starts[i], "file="+harness.Val(want)) {
			t.Errorf("child %d recorded %q, want it to read %s", i+1, starts[i], want)
		}
	}
	if t.Failed() {
		t.Logf("paramexec's log:\n%s", pe.Stderr.String())
	}
}
