package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/paramexec/paramexec/internal/faultproxy"
)

// seed puts n String parameters under path, named p000..., concurrently.
func seed(t *testing.T, path string, n int) map[string]string {
	t.Helper()
	want := make(map[string]string, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range jobs {
				name, value := fmt.Sprintf("p%04d", i), val(fmt.Sprintf("v%d", i))
				moto.PutParameter(t, path+"/"+name, value, "String")
				mu.Lock()
				want[strings.ToUpper(name)] = value
				mu.Unlock()
			}
		})
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return want
}

func TestPathSizes(t *testing.T) {
	for _, n := range []int{0, 1, 25, 1000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			path := uniquePath(t)
			want := seed(t, path, n)
			args, rec := childArgs(t, "-exit", "0")
			r := runBinary(t, baseEnv(moto.URL), append([]string{"--path", path}, args...)...)
			if r.code != 0 {
				t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
			}
			env := onlyStart(t, rec).Env
			got := 0
			for k, v := range want {
				if env[k] != v {
					t.Errorf("%s = %q, want %q", k, env[k], v)
				}
				got++
			}
			for k := range env {
				if strings.HasPrefix(k, "P0") || strings.HasPrefix(k, "P1") {
					if _, ok := want[k]; !ok {
						t.Errorf("unexpected variable %s", k)
					}
				}
			}
			if got != n {
				t.Errorf("got %d variables, want %d", got, n)
			}
		})
	}
}

func TestPathTypesAndNames(t *testing.T) {
	path := uniquePath(t)
	moto.PutParameter(t, path+"/db/password", val("pw"), "SecureString")
	moto.PutParameter(t, path+"/hosts", val("a,b,c"), "StringList")
	moto.PutParameter(t, path+"/a/b/c/deep", val("deep"), "String")
	moto.PutParameter(t, path+"/feature-x.enabled", val("yes"), "String")
	moto.PutParameter(t, path+"/9lives", val("cat"), "String")
	args, rec := childArgs(t, "-exit", "0")
	r := runBinary(t, baseEnv(moto.URL), append([]string{"--path", path + "/"}, args...)...)
	if r.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
	}
	env := onlyStart(t, rec).Env
	for k, v := range map[string]string{
		"DB_PASSWORD":       val("pw"), // SecureString, decrypted
		"HOSTS":             val("a,b,c"),
		"A_B_C_DEEP":        val("deep"),
		"FEATURE_X_ENABLED": val("yes"),
		"_9LIVES":           val("cat"),
	} {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
}

func TestPathPrecedenceFollowsCommandLine(t *testing.T) {
	base := uniquePath(t)
	moto.PutParameter(t, base+"/common/DB_HOST", val("common"), "String")
	moto.PutParameter(t, base+"/common/ONLY_COMMON", val("c"), "String")
	moto.PutParameter(t, base+"/prod/DB_HOST", val("prod"), "String")
	for _, tc := range []struct {
		order []string
		want  string
	}{
		{[]string{base + "/common", base + "/prod"}, val("prod")},
		{[]string{base + "/prod", base + "/common"}, val("common")},
	} {
		args, rec := childArgs(t, "-exit", "0")
		r := runBinary(t, baseEnv(moto.URL), append([]string{"--path", tc.order[0], "--path", tc.order[1]}, args...)...)
		if r.code != 0 {
			t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
		}
		env := onlyStart(t, rec).Env
		if env["DB_HOST"] != tc.want || env["ONLY_COMMON"] != val("c") {
			t.Errorf("order %v: DB_HOST=%q ONLY_COMMON=%q; want %q and the common-only value", tc.order, env["DB_HOST"], env["ONLY_COMMON"], tc.want)
		}
	}
}

func TestPathCollisionNamesBoth(t *testing.T) {
	path := uniquePath(t)
	moto.PutParameter(t, path+"/db-host", val("one"), "String")
	moto.PutParameter(t, path+"/db.host", val("two"), "String")
	args, rec := childArgs(t, "-exit", "0")
	r := runBinary(t, baseEnv(moto.URL), append([]string{"--path", path}, args...)...)
	if r.code != exitSource {
		t.Fatalf("exit %d, want %d; stderr:\n%s", r.code, exitSource, r.stderr)
	}
	for _, want := range []string{path + "/db-host", path + "/db.host", "DB_HOST"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not name %q:\n%s", want, r.stderr)
		}
	}
	if len(readRecords(t, rec)) != 0 {
		t.Error("the command ran despite the collision")
	}
}

func TestMissingPathIsEmpty(t *testing.T) {
	args, rec := childArgs(t, "-exit", "0")
	r := runBinary(t, baseEnv(moto.URL), append([]string{"--path", uniquePath(t)}, args...)...)
	if r.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
	}
	onlyStart(t, rec)
}

func TestInheritedAndNoOverride(t *testing.T) {
	path := uniquePath(t)
	moto.PutParameter(t, path+"/MODE", val("fetched"), "String")
	for _, tc := range []struct {
		flags []string
		want  string
	}{
		{nil, val("fetched")},
		{[]string{"--no-override"}, "inherited"},
	} {
		args, rec := childArgs(t, "-exit", "0")
		env := append(baseEnv(moto.URL), "MODE=inherited")
		r := runBinary(t, env, append(append(tc.flags, "--path", path), args...)...)
		if r.code != 0 {
			t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
		}
		if got := onlyStart(t, rec).Env["MODE"]; got != tc.want {
			t.Errorf("flags %v: MODE=%q, want %q", tc.flags, got, tc.want)
		}
	}
}

func TestMotoDownExits3AfterRetries(t *testing.T) {
	// A port nothing listens on: every attempt is refused.
	p, err := faultproxy.Start("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	url := p.URL()
	p.Close()
	args, rec := childArgs(t, "-exit", "0")
	r := runBinary(t, baseEnv(url), append([]string{"--path", "/app", "--startup-timeout", "5s"}, args...)...)
	if r.code != exitSource {
		t.Fatalf("exit %d, want %d; stderr:\n%s", r.code, exitSource, r.stderr)
	}
	for _, want := range []string{"--path /app", "gave up after 5s", "retrying"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if len(readRecords(t, rec)) != 0 {
		t.Error("the command ran without its configuration")
	}
}

func TestAccessDeniedNamesTheAction(t *testing.T) {
	p, err := faultproxy.Start(moto.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	path := uniquePath(t)
	moto.PutParameter(t, path+"/x", val("x"), "SecureString")
	for _, tc := range []struct {
		fault faultproxy.Fault
		want  string
	}{
		{faultproxy.AccessDenied, "allow ssm:GetParametersByPath"},
		{faultproxy.KMSAccessDenied, "allow kms:Decrypt"},
	} {
		p.Clear()
		p.Inject(faultproxy.Rule{Op: "ssm:GetParametersByPath", Fault: tc.fault})
		args, _ := childArgs(t, "-exit", "0")
		r := runBinary(t, baseEnv(p.URL()), append([]string{"--path", path, "--startup-timeout", "1m"}, args...)...)
		if r.code != exitSource || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr:\n%s\nwant exit 3 and %q", tc.fault, r.code, r.stderr, tc.want)
		}
		// A denial is permanent: it must not be retried for the whole budget.
		if strings.Contains(r.stderr, "retrying") {
			t.Errorf("%v: a permanent error was retried:\n%s", tc.fault, r.stderr)
		}
	}
}

func TestEnvFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "app.env")
	content := "# settings\nexport GREETING=\"hello\\nworld\"\nPLAIN=" + val("plain") + " # comment\nQUOTED='" + val("$literal") + "'\n\n"
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	args, rec := childArgs(t, "-exit", "0")
	r := runBinary(t, baseEnv(""), append([]string{"--env-file", file}, args...)...)
	if r.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
	}
	env := onlyStart(t, rec).Env
	for k, v := range map[string]string{"GREETING": "hello\nworld", "PLAIN": val("plain"), "QUOTED": val("$literal")} {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}

	bad := filepath.Join(dir, "bad.env")
	os.WriteFile(bad, []byte("OK=1\nBROKEN=\""+val("unterminated")+"\n"), 0o600)
	r = runBinary(t, baseEnv(""), append([]string{"--env-file", bad}, args...)...)
	if r.code != exitSource || !strings.Contains(r.stderr, bad+":2") {
		t.Errorf("syntax error: exit %d, stderr:\n%s\nwant exit 3 naming %s:2", r.code, r.stderr, bad)
	}
}

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"success", []string{"-exit", "0"}, 0},
		{"failure", []string{"-exit", "42"}, 42},
		{"killed", []string{"-die", "KILL"}, 128 + 9},
		{"terminated", []string{"-die", "TERM"}, 128 + 15},
	} {
		for _, mode := range [][]string{nil, {"--init"}} {
			args, _ := childArgs(t, tc.args...)
			r := runBinary(t, baseEnv(""), append(mode, args...)...)
			if r.code != tc.want {
				t.Errorf("%s %v: exit %d, want %d; stderr:\n%s", tc.name, mode, r.code, tc.want, r.stderr)
			}
			// A supervisor reports the child's death as an exit code; it
			// must not die itself.
			if mode != nil && r.signaled {
				t.Errorf("%s %v: paramexec died from a signal instead of exiting", tc.name, mode)
			}
		}
	}
	for _, tc := range []struct {
		cmd  string
		want int
	}{
		{"no-such-command-anywhere", 127},
		{filepath.Join(dir, "missing"), 127},
		{notExec, 126},
		{dir, 126},
	} {
		for _, mode := range [][]string{nil, {"--init"}} {
			r := runBinary(t, baseEnv(""), append(mode, "--", tc.cmd)...)
			if r.code != tc.want {
				t.Errorf("%s %v: exit %d, want %d; stderr:\n%s", tc.cmd, mode, r.code, tc.want, r.stderr)
			}
		}
	}
}

func TestExecInPlace(t *testing.T) {
	args, rec := childArgs(t, "-exit", "0")
	cmd := append([]string{binPath}, args...)
	_ = cmd
	r := runBinary(t, append(baseEnv(""), "MARK=1"), args...)
	if r.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
	}
	start := onlyStart(t, rec)
	// In place, the child is paramexec's process: its parent is the test.
	if start.Ppid != os.Getpid() {
		t.Errorf("child's parent is %d, want the test process %d: paramexec did not exec in place", start.Ppid, os.Getpid())
	}
	if start.Env["MARK"] != "1" {
		t.Error("inherited environment lost")
	}
}

func TestPrint(t *testing.T) {
	path := uniquePath(t)
	moto.PutParameter(t, path+"/db/password", val("it's \"secret\""), "SecureString")
	moto.PutParameter(t, path+"/host", val("h"), "String")
	r := runBinary(t, baseEnv(moto.URL), "--path", path, "--print")
	if r.code != 0 || r.stdout != "DB_PASSWORD=\"********\"\nHOST=\"********\"\n" {
		t.Errorf("masked dotenv: exit %d, stdout:\n%s", r.code, r.stdout)
	}
	r = runBinary(t, baseEnv(moto.URL), "--path", path, "--print", "--format", "json", "--reveal")
	var got map[string]string
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got["DB_PASSWORD"] != val("it's \"secret\"") {
		t.Errorf("revealed json: %v, %q", err, r.stdout)
	}
	r = runBinary(t, baseEnv(moto.URL), "--path", path, "--print", "--format", "shell", "--reveal")
	if !strings.Contains(r.stdout, `export DB_PASSWORD='`+val(`it'\''s "secret"`)+`'`) {
		t.Errorf("revealed shell: %q", r.stdout)
	}
	// The dotenv output reads back through --env-file unchanged.
	r = runBinary(t, baseEnv(moto.URL), "--path", path, "--print", "--reveal")
	file := filepath.Join(t.TempDir(), "round.env")
	os.WriteFile(file, []byte(r.stdout), 0o600)
	args, rec := childArgs(t, "-exit", "0")
	runBinary(t, baseEnv(""), append([]string{"--env-file", file}, args...)...)
	if got := onlyStart(t, rec).Env["DB_PASSWORD"]; got != val("it's \"secret\"") {
		t.Errorf("round trip through --print and --env-file: %q", got)
	}
}

func TestEnvironmentConfiguresFlags(t *testing.T) {
	path := uniquePath(t)
	moto.PutParameter(t, path+"/FROM_ENV", val("yes"), "String")
	dir := t.TempDir()
	file := filepath.Join(dir, "a.env")
	os.WriteFile(file, []byte("FROM_FILE=1\nFROM_ENV=file\n"), 0o600)
	args, rec := childArgs(t, "-exit", "0")
	env := append(baseEnv(moto.URL), "PARAMEXEC_PATH="+path, "PARAMEXEC_ENV_FILE="+file, "PARAMEXEC_LOG_LEVEL=debug")
	r := runBinary(t, env, args...)
	if r.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
	}
	got := onlyStart(t, rec).Env
	// From the environment, files come before paths, so the path wins.
	if got["FROM_ENV"] != val("yes") || got["FROM_FILE"] != "1" {
		t.Errorf("FROM_ENV=%q FROM_FILE=%q", got["FROM_ENV"], got["FROM_FILE"])
	}
	for k := range got {
		if strings.HasPrefix(k, "PARAMEXEC_") {
			t.Errorf("%s passed on to the child", k)
		}
	}
	if !strings.Contains(r.stderr, "level=DEBUG") {
		t.Error("PARAMEXEC_LOG_LEVEL=debug had no effect")
	}
	// A flag on the command line wins over its variable.
	r = runBinary(t, append(env, "PARAMEXEC_FORMAT=json"), "--print", "--format", "shell")
	if !strings.HasPrefix(r.stdout, "export ") {
		t.Errorf("--format on the command line lost to PARAMEXEC_FORMAT: %q", r.stdout)
	}
	r = runBinary(t, append(baseEnv(""), "PARAMEXEC_INTERVAL=soon"), "--print")
	if r.code != exitUsage || !strings.Contains(r.stderr, "PARAMEXEC_INTERVAL") {
		t.Errorf("bad PARAMEXEC_INTERVAL: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},                             // no command
		{"--no-such-flag", "true"},     // unknown flag
		{"--path", "relative", "true"}, // a path starts with /
		{"--format", "xml", "--print"},
		{"--on-change", "explode", "true"},
		{"--stop-signal", "SIGNOPE", "true"},
		{"--reveal", "true"},
		{"--interval", "10ms", "true"},
	} {
		r := runBinary(t, baseEnv(""), args...)
		if r.code != exitUsage {
			t.Errorf("%v: exit %d, want %d; stderr:\n%s", args, r.code, exitUsage, r.stderr)
		}
	}
	r := runBinary(t, baseEnv(""), "--version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "paramexec ") {
		t.Errorf("--version: exit %d, %q", r.code, r.stdout)
	}
	r = runBinary(t, baseEnv(""), "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "SYNOPSIS") {
		t.Errorf("--help: exit %d", r.code)
	}
}
