package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/paramexec/paramexec/exec"
	"github.com/paramexec/paramexec/fetch"
	"github.com/paramexec/paramexec/internal/environ"
)

// The files flags' rules: each refusal names the setting.
func TestFilesFlagRules(t *testing.T) {
	open := t.TempDir()
	if err := os.Chmod(open, 0o750); err != nil {
		t.Fatal(err)
	}
	private := filepath.Join(t.TempDir(), "files")
	sec := []string{"--secret", "prod/tls=TLS_", "--interval", "5s"}
	for _, tc := range []struct {
		env  []string
		args []string
		want string
	}{
		{nil, append(sec, "--deliver", "files:secret:prod/tls=TLS_", "--files-dir", open, "true"), "lets other users in"},
		{nil, append(sec, "--deliver", "files:secret:prod/tls=TLS_", "true"), "give --files-dir"},
		{nil, append(sec, "--files-dir", private, "true"), "no source is delivered as files"},
		{nil, append(sec, "--on-change-of", "reload:secret:prod/tls=TLS_", "true"), "a reload signal reaches a child that re-reads files"},
		{nil, append(sec, "--deliver", "both:secret:prod/tls=TLS_", "--files-dir", private, "--on-change-of", "reload:secret:prod/tls=TLS_", "true"), "only a restart changes"},
		{nil, append(sec, "--deliver", "files:secret:prod/other", "--files-dir", private, "true"), "no --secret prod/other is given"},
		{nil, append(sec, "--deliver", "files:prod/tls", "true"), "KIND:VALUE"},
		{nil, append(sec, "--deliver", "disk:secret:prod/tls=TLS_", "true"), "want env, files, both or document"},
		{nil, append(sec, "--deliver", "files:secret:prod/tls=TLS_", "--deliver", "env:secret:prod/tls=TLS_", "--files-dir", private, "true"), "named twice"},
		{nil, append(sec, "--deliver", "files:secret:prod/tls=TLS_", "--files-dir", private, "--files-mode", "0644", "true"), "want 0400 or 0600"},
		{nil, append(sec, "--deliver", "files:secret:prod/tls=TLS_", "--files-dir", private, "--on-change", "exit", "--on-change-of", "none:secret:prod/tls=TLS_", "true"), "only goes with --on-change restart"},
		{nil, []string{"--secret", "s", "--deliver", "files:secret:s", "--files-dir", private, "--on-change-of", "reload:secret:s", "true"}, "give --interval too"},
		{[]string{"PARAMEXEC_DELIVER=files:secret:s"}, []string{"--secret", "s", "true"}, "give --files-dir"},
		{nil, append(sec, "--name-file", "true"), "--name-file: no source"},
		{nil, append(sec, "--files-mode", "0600", "true"), "--files-mode: no source"},
		{[]string{"PARAMEXEC_RELOAD_SIGNAL=USR1"}, append(sec, "true"), "--reload-signal: no source says"},
	} {
		err := usageErr(tc.args, tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %q: error %v, want one containing %q", tc.env, tc.args, err, tc.want)
		}
	}
	// And what is fine: an ARN (colons) and a prefix (=) in the source.
	arn := "arn:aws:secretsmanager:us-east-1:123456789012:secret:tls-AbCdEf"
	ok := []string{"--secret", arn + "=TLS_", "--interval", "5s", "--deliver", "files:secret:" + arn + "=TLS_", "--files-dir", private, "--on-change-of", "reload:secret:" + arn + "=TLS_", "--", "true"}
	if err := usageErr(ok, nil); err != nil {
		t.Fatalf("%q: %v", ok, err)
	}
}

// newTestDelivery is a delivery of one files-only source (rank 0, action
// act) and one environment source (rank 1).
func newTestDelivery(t *testing.T, act changeAction) *delivery {
	t.Helper()
	cfg := filesConfig{
		dir: filepath.Join(t.TempDir(), "files"), mode: 0o400, nameFile: true, reloadSig: syscall.SIGHUP,
		policies: map[int]sourcePolicy{0: {how: deliverFiles, action: act}},
	}
	d, err := openDelivery(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.close)
	return d
}

func vars(key, db string) []fetch.Var {
	return []fetch.Var{{Name: "KEY", Value: key, Rank: 0}, {Name: "DB", Value: db, Rank: 1}}
}

func update(key, db string, changed ...string) fetch.Update {
	return fetch.Update{Env: []string{"PATH=/bin", "KEY=" + key, "DB=" + db}, Changed: changed, Vars: vars(key, db)}
}

func TestDeliveryKeepsFilesOnlyValuesOutOfTheEnvironment(t *testing.T) {
	d := newTestDelivery(t, actReload)
	env, err := d.start([]string{"PATH=/bin", "KEY=k1", "DB=d1"}, vars("k1", "d1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := environ.Lookup(env, "KEY"); ok {
		t.Fatalf("KEY, delivered only as a file, is in the environment: %q", env)
	}
	path, _ := environ.Lookup(env, "KEY_FILE")
	if b, err := os.ReadFile(path); err != nil || string(b) != "k1" {
		t.Fatalf("KEY_FILE %q: %q, %v", path, b, err)
	}
	if v, _ := environ.Lookup(env, "DB"); v != "d1" {
		t.Fatalf("DB = %q", v)
	}

	// A files-only change with reload: a signal, and the new file.
	c, send, err := d.update(update("k2", "d1", "KEY"))
	if err != nil || !send || c.Reload != syscall.SIGHUP || c.Env != nil {
		t.Fatalf("files-only change: %+v, %v, %v; want a reload", c, send, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "k2" {
		t.Fatalf("KEY file after the change: %q", b)
	}
	// An environment change with it: a restart.
	c, send, err = d.update(update("k3", "d2", "DB", "KEY"))
	if err != nil || !send || c.Reload != 0 || !slices.Contains(c.Env, "DB=d2") {
		t.Fatalf("mixed change: %+v, %v, %v; want a restart with DB=d2", c, send, err)
	}
	if strings.Contains(strings.Join(c.Env, "\n"), "k3") {
		t.Fatalf("a files-only value reached the environment: %q", c.Env)
	}
}

// A files-only change of a restart source is a restart whose environment
// names a new generation; a child started again with the old environment
// (a rollback) gets the old files back, with the newest live values.
func TestDeliveryFilesOnlyRestartAndRollback(t *testing.T) {
	d := newTestDelivery(t, actRestart)
	d.cfg.policies[2] = sourcePolicy{how: deliverFiles, action: actReload}
	withLive := func(key, db, tok string) []fetch.Var {
		return append(vars(key, db), fetch.Var{Name: "TOK", Value: tok, Rank: 2})
	}
	first, err := d.start([]string{"DB=d1"}, withLive("k1", "d1", "t1"))
	if err != nil {
		t.Fatal(err)
	}
	u := update("k2", "d1", "KEY")
	u.Vars = withLive("k2", "d1", "t1")
	c, send, _ := d.update(u)
	g1, _ := environ.Lookup(first, generationVar)
	g2, _ := environ.Lookup(c.Env, generationVar)
	if !send || c.Reload != 0 || g1 == "" || g2 == "" || g1 == g2 {
		t.Fatalf("files-only change of a restart source: %+v, %v; want a restart naming a new generation (was %q)", c, send, g1)
	}
	read := func(name string) string { b, _ := os.ReadFile(d.w.Path(name)); return string(b) }
	if got := read("KEY"); got != "k1" {
		t.Fatalf("KEY file before the new child starts: %q; the running child keeps its set", got)
	}
	if err := d.prepare(c.Env); err != nil || read("KEY") != "k2" {
		t.Fatalf("KEY file as the new child starts: %q, %v; want k2", read("KEY"), err)
	}
	u = update("k2", "d1", "TOK") // a reload source moves meanwhile
	u.Vars = withLive("k2", "d1", "t2")
	if c, send, _ := d.update(u); !send || c.Reload == 0 {
		t.Fatalf("a live change: %+v; want a reload", c)
	}
	if err := d.prepare(first); err != nil || read("KEY") != "k1" || read("TOK") != "t2" {
		t.Fatalf("files after a rollback to the first environment: KEY %q TOK %q, %v; want k1 and the newest t2", read("KEY"), read("TOK"), err)
	}
}

func TestDeliveryNoneSendsNothing(t *testing.T) {
	d := newTestDelivery(t, actNone)
	if _, err := d.start(nil, vars("k1", "d1")); err != nil {
		t.Fatal(err)
	}
	if c, send, _ := d.update(update("k2", "d1", "KEY")); send {
		t.Fatalf("a change of a none source was sent: %+v", c)
	}
	if b, _ := os.ReadFile(d.w.Path("KEY")); string(b) != "k2" {
		t.Fatalf("KEY file of a none source: %q; files always hold the last poll", b)
	}
}

// A change whose files cannot be written is not sent; the next one
// restarts, whatever it changed, so that what was dropped reaches the child.
func TestDeliveryAfterAFailedWriteRestarts(t *testing.T) {
	d := newTestDelivery(t, actReload)
	if _, err := d.start(nil, vars("k1", "d1")); err != nil {
		t.Fatal(err)
	}
	bad := update("k1", "d2", "DB")
	bad.Vars = append(bad.Vars, fetch.Var{Name: "a/b", Value: "x", Rank: 0}) // no file can have that name
	if c, send, err := d.update(bad); err == nil || send {
		t.Fatalf("a change whose files failed: %+v, %v, %v; want an error and nothing sent", c, send, err)
	}
	c, send, err := d.update(update("k2", "d2", "KEY"))
	if err != nil || !send || c.Reload != 0 || !slices.Contains(c.Env, "DB=d2") {
		t.Fatalf("the change after a failed one: %+v, %v, %v; want a restart carrying DB=d2", c, send, err)
	}
}

// After a rejected overlap the old child serves on, but the candidate's
// start had written the rejected set: the serving child's files come back
// (with the newest live values), and a later rollback goes back to the set
// of the child that became current, not to the first.
func TestDeliveryOverlapRollbackRestoresTheServingFiles(t *testing.T) {
	d := newTestDelivery(t, actRestart)
	read := func(name string) string { b, _ := os.ReadFile(d.w.Path(name)); return string(b) }
	if _, err := d.start([]string{"DB=d1"}, vars("k1", "d1")); err != nil {
		t.Fatal(err)
	}
	d.follow(exec.Event{Kind: exec.Ready, Pid: 10})

	bad, _, _ := d.update(update("k2", "d1", "KEY"))
	if err := d.prepare(bad.Env); err != nil || read("KEY") != "k2" {
		t.Fatalf("KEY as the candidate starts: %q, %v; want k2", read("KEY"), err)
	}
	d.follow(exec.Event{Kind: exec.RolledBack, Pid: 11})
	d.follow(exec.Event{Kind: exec.Ready, Pid: 10, Reason: "rolled back"})
	if got := read("KEY"); got != "k1" {
		t.Fatalf("KEY after the rejected overlap: %q; want the serving child's k1", got)
	}

	good, _, _ := d.update(update("k3", "d1", "KEY"))
	if err := d.prepare(good.Env); err != nil {
		t.Fatal(err)
	}
	d.follow(exec.Event{Kind: exec.Restarted, Pid: 12})
	worse, _, _ := d.update(update("k4", "d1", "KEY"))
	if err := d.prepare(worse.Env); err != nil {
		t.Fatal(err)
	}
	d.follow(exec.Event{Kind: exec.Ready, Pid: 12, Reason: "rolled back"})
	if got := read("KEY"); got != "k3" {
		t.Fatalf("KEY after a second rejected overlap: %q; want k3, the set of the child that became current", got)
	}
}
