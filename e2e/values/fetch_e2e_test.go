package values

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/paramexec/paramexec/internal/faultproxy"
	"github.com/paramexec/paramexec/internal/harness"
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
				name, value := fmt.Sprintf("p%04d", i), harness.Val(fmt.Sprintf("v%d", i))
				harness.Moto.PutParameter(t, path+"/"+name, value, "String")
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
	harness.ParallelE2E(t)
	for _, n := range []int{0, 1, 25, 1000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			path := harness.UniquePath(t)
			want := seed(t, path, n)
			args, rec := harness.ChildArgs(t, "-exit", "0")
			r := harness.RunBinary(t, harness.BaseEnv(harness.Moto.URL), append([]string{"--path", path}, args...)...)
			if r.Code != 0 {
				t.Fatalf("exit %d; stderr:\n%s", r.Code, r.Stderr)
			}
			env := harness.OnlyStart(t, rec).Env
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
	harness.ParallelE2E(t)
	path := harness.UniquePath(t)
	harness.Moto.PutParameter(t, path+"/db/password", harness.Val("pw"), "SecureString")
	harness.Moto.PutParameter(t, path+"/hosts", harness.Val("a,b,c"), "StringList")
	harness.Moto.PutParameter(t, path+"/a/b/c/deep", harness.Val("deep"), "String")
	harness.Moto.PutParameter(t, path+"/feature-x.enabled", harness.Val("yes"), "String")
	harness.Moto.PutParameter(t, path+"/9lives", harness.Val("cat"), "String")
	args, rec := harness.ChildArgs(t, "-exit", "0")
	r := harness.RunBinary(t, harness.BaseEnv(harness.Moto.URL), append([]string{"--path", path + "/"}, args...)...)
	if r.Code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.Code, r.Stderr)
	}
	env := harness.OnlyStart(t, rec).Env
	for k, v := range map[string]string{
		"DB_PASSWORD":       harness.Val("pw"), // SecureString, decrypted
		"HOSTS":             harness.Val("a,b,c"),
		"A_B_C_DEEP":        harness.Val("deep"),
		"FEATURE_X_ENABLED": harness.Val("yes"),
		"_9LIVES":           harness.Val("cat"),
	} {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
}

func TestPathPrecedenceFollowsCommandLine(t *testing.T) {
	harness.ParallelE2E(t)
	base := harness.UniquePath(t)
	harness.Moto.PutParameter(t, base+"/common/DB_HOST", harness.Val("common"), "String")
	harness.Moto.PutParameter(t, base+"/common/ONLY_COMMON", harness.Val("c"), "String")
	harness.Moto.PutParameter(t, base+"/prod/DB_HOST", harness.Val("prod"), "String")
	for _, tc := range []struct {
		order []string
		want  string
	}{
		{[]string{base + "/common", base + "/prod"}, harness.Val("prod")},
		{[]string{base + "/prod", base + "/common"}, harness.Val("common")},
	} {
		args, rec := harness.ChildArgs(t, "-exit", "0")
		r := harness.RunBinary(t, harness.BaseEnv(harness.Moto.URL), append([]string{"--path", tc.order[0], "--path", tc.order[1]}, args...)...)
		if r.Code != 0 {
			t.Fatalf("exit %d; stderr:\n%s", r.Code, r.Stderr)
		}
		env := harness.OnlyStart(t, rec).Env
		if env["DB_HOST"] != tc.want || env["ONLY_COMMON"] != harness.Val("c") {
			t.Errorf("order %v: DB_HOST=%q ONLY_COMMON=%q; want %q and the common-only value", tc.order, env["DB_HOST"], env["ONLY_COMMON"], tc.want)
		}
	}
}

func TestPathCollisionNamesBoth(t *testing.T) {
	harness.ParallelE2E(t)
	path := harness.UniquePath(t)
	harness.Moto.PutParameter(t, path+"/db-host", harness.Val("one"), "String")
	harness.Moto.PutParameter(t, path+"/db.host", harness.Val("two"), "String")
	args, rec := harness.ChildArgs(t, "-exit", "0")
	r := harness.RunBinary(t, harness.BaseEnv(harness.Moto.URL), append([]string{"--path", path}, args...)...)
	if r.Code != harness.ExitSource {
		t.Fatalf("exit %d, want %d; stderr:\n%s", r.Code, harness.ExitSource, r.Stderr)
	}
	for _, want := range []string{path + "/db-host", path + "/db.host", "DB_HOST"} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("stderr does not name %q:\n%s", want, r.Stderr)
		}
	}
	if len(harness.ReadRecords(t, rec)) != 0 {
		t.Error("the command ran despite the collision")
	}
}

func TestMissingPathIsEmpty(t *testing.T) {
	harness.ParallelE2E(t)
	args, rec := harness.ChildArgs(t, "-exit", "0")
	r := harness.RunBinary(t, harness.BaseEnv(harness.Moto.URL), append([]string{"--path", harness.UniquePath(t)}, args...)...)
	if r.Code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.Code, r.Stderr)
	}
	harness.OnlyStart(t, rec)
}

func TestInheritedAndNoOverride(t *testing.T) {
	harness.ParallelE2E(t)
	path := harness.UniquePath(t)
	harness.Moto.PutParameter(t, path+"/MODE", harness.Val("fetched"), "String")
	for _, tc := range []struct {
		flags []string
		want  string
	}{
		{nil, harness.Val("fetched")},
		{[]string{"--no-override"}, "inherited"},
	} {
		args, rec := harness.ChildArgs(t, "-exit", "0")
		env := append(harness.BaseEnv(harness.Moto.URL), "MODE=inherited")
		r := harness.RunBinary(t, env, append(append(tc.flags, "--path", path), args...)...)
		if r.Code != 0 {
			t.Fatalf("exit %d; stderr:\n%s", r.Code, r.Stderr)
		}
		if got := harness.OnlyStart(t, rec).Env["MODE"]; got != tc.want {
			t.Errorf("flags %v: MODE=%q, want %q", tc.flags, got, tc.want)
		}
	}
}

func TestMotoDownExits3AfterRetries(t *testing.T) {
	harness.ParallelE2E(t)
	// A port nothing listens on: every attempt is refused.
	p, err := faultproxy.Start("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	url := p.URL()
	p.Close()
	args, rec := harness.ChildArgs(t, "-exit", "0")
	r := harness.RunBinary(t, harness.BaseEnv(url), append([]string{"--path", "/app", "--startup-timeout", "5s"}, args...)...)
	if r.Code != harness.ExitSource {
		t.Fatalf("exit %d, want %d; stderr:\n%s", r.Code, harness.ExitSource, r.Stderr)
	}
	for _, want := range []string{"--path /app", "gave up after 5s", "retrying"} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.Stderr)
		}
	}
	if len(harness.ReadRecords(t, rec)) != 0 {
		t.Error("the command ran without its configuration")
	}
}

func TestAccessDeniedNamesTheAction(t *testing.T) {
	harness.ParallelE2E(t)
	p, err := faultproxy.Start(harness.Moto.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	path := harness.UniquePath(t)
	harness.Moto.PutParameter(t, path+"/x", harness.Val("x"), "SecureString")
	for _, tc := range []struct {
		fault faultproxy.Fault
		want  string
	}{
		{faultproxy.AccessDenied, "allow ssm:GetParametersByPath"},
		{faultproxy.KMSAccessDenied, "allow kms:Decrypt"},
	} {
		p.Clear()
		p.Inject(faultproxy.Rule{Op: "ssm:GetParametersByPath", Fault: tc.fault})
		args, _ := harness.ChildArgs(t, "-exit", "0")
		r := harness.RunBinary(t, harness.BaseEnv(p.URL()), append([]string{"--path", path, "--startup-timeout", "1m"}, args...)...)
		if r.Code != harness.ExitSource || !strings.Contains(r.Stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr:\n%s\nwant exit 3 and %q", tc.fault, r.Code, r.Stderr, tc.want)
		}
		// A denial is permanent: it must not be retried for the whole budget.
		if strings.Contains(r.Stderr, "retrying") {
			t.Errorf("%v: a permanent error was retried:\n%s", tc.fault, r.Stderr)
		}
	}
}

func TestEnvFile(t *testing.T) {
	harness.ParallelE2E(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "app.env")
	content := "# settings\nexport GREETING=\"hello\\nworld\"\nPLAIN=" + harness.Val("plain") + " # comment\nQUOTED='" + harness.Val("$literal") + "'\n\n"
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	args, rec := harness.ChildArgs(t, "-exit", "0")
	r := harness.RunBinary(t, harness.BaseEnv(""), append([]string{"--env-file", file}, args...)...)
	if r.Code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.Code, r.Stderr)
	}
	env := harness.OnlyStart(t, rec).Env
	for k, v := range map[string]string{"GREETING": "hello\nworld", "PLAIN": harness.Val("plain"), "QUOTED": harness.Val("$literal")} {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}

	bad := filepath.Join(dir, "bad.env")
	os.WriteFile(bad, []byte("OK=1\nBROKEN=\""+harness.Val("unterminated")+"\n"), 0o600)
	r = harness.RunBinary(t, harness.BaseEnv(""), append([]string{"--env-file", bad}, args...)...)
	if r.Code != harness.ExitSource || !strings.Contains(r.Stderr, bad+":2") {
		t.Errorf("syntax error: exit %d, stderr:\n%s\nwant exit 3 naming %s:2", r.Code, r.Stderr, bad)
	}
}

func TestExitCodes(t *testing.T) {
	harness.ParallelE2E(t)
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
			args, _ := harness.ChildArgs(t, tc.args...)
			r := harness.RunBinary(t, harness.BaseEnv(""), append(mode, args...)...)
			if r.Code != tc.want {
				t.Errorf("%s %v: exit %d, want %d; stderr:\n%s", tc.name, mode, r.Code, tc.want, r.Stderr)
			}
			// A supervisor reports the child's death as an exit code; it
			// must not die itself.
			if mode != nil && r.Signaled {
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
			r := harness.RunBinary(t, harness.BaseEnv(""), append(mode, "--", tc.cmd)...)
			if r.Code != tc.want {
				t.Errorf("%s %v: exit %d, want %d; stderr:\n%s", tc.cmd, mode, r.Code, tc.want, r.Stderr)
			}
		}
	}
}

func TestExecInPlace(t *testing.T) {
	harness.ParallelE2E(t)
	args, rec := harness.ChildArgs(t, "-exit", "0")
	cmd := append([]string{harness.BinPath}, args...)
	_ = cmd
	r := harness.RunBinary(t, append(harness.BaseEnv(""), "MARK=1"), args...)
	if r.Code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.Code, r.Stderr)
	}
	start := harness.OnlyStart(t, rec)
	// In place, the child is paramexec's process: its parent is the test.
	if start.Ppid != os.Getpid() {
		t.Errorf("child's parent is %d, want the test process %d: paramexec did not exec in place", start.Ppid, os.Getpid())
	}
	if start.Env["MARK"] != "1" {
		t.Error("inherited environment lost")
	}
}

func TestPrint(t *testing.T) {
	harness.ParallelE2E(t)
	path := harness.UniquePath(t)
	harness.Moto.PutParameter(t, path+"/db/password", harness.Val("it's \"secret\""), "SecureString")
	harness.Moto.PutParameter(t, path+"/host", harness.Val("h"), "String")
	r := harness.RunBinary(t, harness.BaseEnv(harness.Moto.URL), "--path", path, "--print")
	if r.Code != 0 || r.Stdout != "DB_PASSWORD=\"********\"\nHOST=\"********\"\n" {
		t.Errorf("masked dotenv: exit %d, stdout:\n%s", r.Code, r.Stdout)
	}
	r = harness.RunBinary(t, harness.BaseEnv(harness.Moto.URL), "--path", path, "--print", "--format", "json", "--reveal")
	var got map[string]string
	if err := json.Unmarshal([]byte(r.Stdout), &got); err != nil || got["DB_PASSWORD"] != harness.Val("it's \"secret\"") {
		t.Errorf("revealed json: %v, %q", err, r.Stdout)
	}
	r = harness.RunBinary(t, harness.BaseEnv(harness.Moto.URL), "--path", path, "--print", "--format", "shell", "--reveal")
	if !strings.Contains(r.Stdout, `export DB_PASSWORD='`+harness.Val(`it'\''s "secret"`)+`'`) {
		t.Errorf("revealed shell: %q", r.Stdout)
	}
	// The dotenv output reads back through --env-file unchanged.
	r = harness.RunBinary(t, harness.BaseEnv(harness.Moto.URL), "--path", path, "--print", "--reveal")
	file := filepath.Join(t.TempDir(), "round.env")
	os.WriteFile(file, []byte(r.Stdout), 0o600)
	args, rec := harness.ChildArgs(t, "-exit", "0")
	harness.RunBinary(t, harness.BaseEnv(""), append([]string{"--env-file", file}, args...)...)
	if got := harness.OnlyStart(t, rec).Env["DB_PASSWORD"]; got != harness.Val("it's \"secret\"") {
		t.Errorf("round trip through --print and --env-file: %q", got)
	}
}

func TestEnvironmentConfiguresFlags(t *testing.T) {
	harness.ParallelE2E(t)
	path := harness.UniquePath(t)
	harness.Moto.PutParameter(t, path+"/FROM_ENV", harness.Val("yes"), "String")
	dir := t.TempDir()
	file := filepath.Join(dir, "a.env")
	os.WriteFile(file, []byte("FROM_FILE=1\nFROM_ENV=file\n"), 0o600)
	args, rec := harness.ChildArgs(t, "-exit", "0")
	env := append(harness.BaseEnv(harness.Moto.URL), "PARAMEXEC_PATH="+path, "PARAMEXEC_ENV_FILE="+file, "PARAMEXEC_LOG_LEVEL=debug")
	r := harness.RunBinary(t, env, args...)
	if r.Code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.Code, r.Stderr)
	}
	got := harness.OnlyStart(t, rec).Env
	// From the environment, files come before paths, so the path wins.
	if got["FROM_ENV"] != harness.Val("yes") || got["FROM_FILE"] != "1" {
		t.Errorf("FROM_ENV=%q FROM_FILE=%q", got["FROM_ENV"], got["FROM_FILE"])
	}
	for k := range got {
		if strings.HasPrefix(k, "PARAMEXEC_") {
			t.Errorf("%s passed on to the child", k)
		}
	}
	if !strings.Contains(r.Stderr, "level=DEBUG") {
		t.Error("PARAMEXEC_LOG_LEVEL=debug had no effect")
	}
	// A flag on the command line wins over its variable.
	r = harness.RunBinary(t, append(env, "PARAMEXEC_FORMAT=json"), "--print", "--format", "shell")
	if !strings.HasPrefix(r.Stdout, "export ") {
		t.Errorf("--format on the command line lost to PARAMEXEC_FORMAT: %q", r.Stdout)
	}
	r = harness.RunBinary(t, append(harness.BaseEnv(""), "PARAMEXEC_INTERVAL=soon"), "--print")
	if r.Code != harness.ExitUsage || !strings.Contains(r.Stderr, "PARAMEXEC_INTERVAL") {
		t.Errorf("bad PARAMEXEC_INTERVAL: exit %d, stderr %q", r.Code, r.Stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	harness.ParallelE2E(t)
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
		r := harness.RunBinary(t, harness.BaseEnv(""), args...)
		if r.Code != harness.ExitUsage {
			t.Errorf("%v: exit %d, want %d; stderr:\n%s", args, r.Code, harness.ExitUsage, r.Stderr)
		}
	}
	r := harness.RunBinary(t, harness.BaseEnv(""), "--version")
	if r.Code != 0 || !strings.HasPrefix(r.Stdout, "paramexec ") {
		t.Errorf("--version: exit %d, %q", r.Code, r.Stdout)
	}
	r = harness.RunBinary(t, harness.BaseEnv(""), "--help")
	if r.Code != 0 || !strings.Contains(r.Stdout, "SYNOPSIS") {
		t.Errorf("--help: exit %d", r.Code)
	}
}

// startsHold fails unless every child start so far had exactly want.
func startsHold(t *testing.T, rec string, want map[string]string, what string) []harness.Record {
	t.Helper()
	s := harness.Starts(harness.ReadRecords(t, rec))
	for i, st := range s {
		for k, v := range want {
			if got, ok := st.Env[k]; !ok || got != v {
				t.Errorf("%s: child %d has %s=%q (present %v), want %q: a partial environment", what, i+1, k, got, ok, v)
			}
		}
		for k := range st.Env {
			if len(k) == 3 && k[0] == 'P' && k[1] >= '0' && k[1] <= '9' && k[2] >= '0' && k[2] <= '9' {
				if _, ok := want[k]; !ok {
					t.Errorf("%s: child %d has %s, which is not under the path any more", what, i+1, k)
				}
			}
		}
	}
	return s
}

// Answers that leave a name out, each given to a real poll through the
// proxy, never restart the child without that variable, and the name stays
// watched: a later change to it is applied, and a real deletion is one
// restart without it.
func TestInconsistentAnswersNeverRestartWithAPartialEnvironment(t *testing.T) {
	harness.ParallelE2E(t)
	p := harness.Proxied(t)
	path := harness.UniquePath(t)
	want := make(map[string]string)
	for i := range 12 { // two listing pages
		name := fmt.Sprintf("P%02d", i)
		typ := "String"
		if i%4 == 3 {
			typ = "SecureString"
		}
		harness.Moto.PutParameter(t, path+"/"+name, harness.Val("v1-"+name), typ)
		want[name] = harness.Val("v1-" + name)
	}
	args, rec := harness.ChildArgs(t)
	pe := harness.StartBinary(t, harness.BaseEnv(p.URL()), append([]string{"--path", path, "--interval", "1s", "--discover-every", "2"}, args...)...)
	harness.WaitStarts(t, rec, 1)
	startsHold(t, rec, want, "at start")

	p03 := path + "/P03"
	rules := []faultproxy.Rule{
		{Op: "ssm:GetParameters", Fault: faultproxy.OmitParameter, Names: []string{p03}, WithDecryption: aws.Bool(false), Times: 2},
		{Op: "ssm:GetParameters", Fault: faultproxy.ReportMissing, Names: []string{p03}, WithDecryption: aws.Bool(false), Times: 1},
		{Op: "ssm:GetParametersByPath", Fault: faultproxy.OmitParameter, Names: []string{p03}, Times: 1},
		{Op: "ssm:GetParametersByPath", Fault: faultproxy.DropNextToken, Times: 1},
		{Op: "ssm:GetParametersByPath", Fault: faultproxy.EmptyListing, Times: 1},
	}
	hits := 0
	for _, r := range rules {
		p.Inject(r)
		hits += r.Times
	}
	// Failed polls back off (up to nine intervals each), so six of them
	// in a row may take half a minute; none of this measures speed.
	harness.WaitForWithin(t, 3*time.Minute, "every inconsistent answer given", func() bool { return p.Counts().Faulted >= hits })
	// The absence of a restart is proved by watching until one clean
	// version check (two GetParameters for twelve names) and one clean
	// listing have followed the last fault: any change a faulted answer
	// had staged would have been applied by then.
	after := p.Counts()
	harness.WaitForWithin(t, 3*time.Minute, "a clean version check and a clean listing", func() bool {
		c := p.Counts()
		return c.ByOp["ssm:GetParameters"] >= after.ByOp["ssm:GetParameters"]+2 && c.ByOp["ssm:GetParametersByPath"] >= after.ByOp["ssm:GetParametersByPath"]+2
	})
	if n := len(startsHold(t, rec, want, "after inconsistent answers")); n != 1 {
		t.Fatalf("%d child starts with nothing changed, want 1; stderr:\n%s", n, pe.Stderr.String())
	}
	if !strings.Contains(pe.Stderr.String(), "poll failed") {
		t.Error("the inconsistent answers were not logged as failed polls")
	}

	// P03 is still watched; a decrypted re-read that leaves it out twice
	// delays the restart, and the restart has every variable.
	p.Inject(faultproxy.Rule{Op: "ssm:GetParameters", Fault: faultproxy.OmitParameter, Names: []string{p03}, WithDecryption: aws.Bool(true), Times: 2})
	harness.Moto.PutParameter(t, p03, harness.Val("v2-P03"), "SecureString")
	want["P03"] = harness.Val("v2-P03")
	harness.WaitStartsWithin(t, 3*time.Minute, rec, 2)
	if c := p.Counts(); c.Faulted < hits+2 {
		t.Errorf("the restart came before the re-read was faulted (%d faults of %d)", c.Faulted, hits+2)
	}
	second := harness.WaitStarts(t, rec, 2)[1]
	for k, v := range want {
		if second.Env[k] != v {
			t.Errorf("after P03 changed: %s=%q, want %q", k, second.Env[k], v)
		}
	}

	// A real deletion: one restart, without P05 and with everything else.
	harness.Moto.DeleteParameter(t, path+"/P05")
	delete(want, "P05")
	third := harness.WaitStarts(t, rec, 3)[2]
	for k, v := range want {
		if third.Env[k] != v {
			t.Errorf("after the deletion: %s=%q, want %q", k, third.Env[k], v)
		}
	}
	if _, still := third.Env["P05"]; still {
		t.Error("after the deletion P05 is still set")
	}
	after = p.Counts()
	harness.WaitFor(t, "two more polls of each kind", func() bool {
		c := p.Counts()
		return c.ByOp["ssm:GetParameters"] >= after.ByOp["ssm:GetParameters"]+4 && c.ByOp["ssm:GetParametersByPath"] >= after.ByOp["ssm:GetParametersByPath"]+2
	})
	if n := len(harness.Starts(harness.ReadRecords(t, rec))); n != 3 {
		t.Errorf("%d child starts for one change and one deletion, want 3", n)
	}
	pe.Signal(syscall.SIGTERM)
	pe.Wait()
}

// A listing whose NextToken repeats ends start-up with an error naming it,
// and in a discovery poll fails the poll and keeps the child.
func TestRepeatedNextTokenIsAnError(t *testing.T) {
	harness.ParallelE2E(t)
	p := harness.Proxied(t)
	path := harness.UniquePath(t)
	harness.Moto.PutParameter(t, path+"/A", harness.Val("a"), "String")
	remove := p.Inject(faultproxy.Rule{Op: "ssm:GetParametersByPath", Fault: faultproxy.RepeatNextToken})
	args, rec := harness.ChildArgs(t, "-exit", "0")
	r := harness.RunBinary(t, harness.BaseEnv(p.URL()), append([]string{"--path", path, "--startup-timeout", "3s"}, args...)...)
	if r.Code != harness.ExitSource || !strings.Contains(r.Stderr, "repeated a NextToken") {
		t.Errorf("start-up: exit %d, stderr:\n%s\nwant exit %d naming the repeated NextToken", r.Code, r.Stderr, harness.ExitSource)
	}
	if len(harness.ReadRecords(t, rec)) != 0 {
		t.Error("the command ran without its configuration")
	}
	remove()

	args, rec = harness.ChildArgs(t)
	pe := harness.StartBinary(t, harness.BaseEnv(p.URL()), append([]string{"--path", path, "--interval", "1s", "--discover-every", "1"}, args...)...)
	harness.WaitStarts(t, rec, 1)
	p.ResetCounts()
	p.Inject(faultproxy.Rule{Op: "ssm:GetParametersByPath", Fault: faultproxy.RepeatNextToken})
	harness.WaitFor(t, "a discovery poll to fail on the repeated token", func() bool {
		return strings.Contains(pe.Stderr.String(), "repeated a NextToken")
	})
	c := p.Counts()
	p.Clear()
	// Each failed discovery costs two pages, never more.
	if fails := strings.Count(pe.Stderr.String(), "repeated a NextToken"); c.ByOp["ssm:GetParametersByPath"] > 2*(fails+1) {
		t.Errorf("%d listing calls for %d failed discoveries: the listing was not stopped", c.ByOp["ssm:GetParametersByPath"], fails)
	}
	if n := len(harness.Starts(harness.ReadRecords(t, rec))); n != 1 {
		t.Errorf("%d child starts, want 1", n)
	}
	pe.Signal(syscall.SIGTERM)
	pe.Wait()
}
