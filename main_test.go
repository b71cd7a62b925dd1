package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/motoserver"
	"github.com/paramexec/paramexec/internal/testchild/childrec"
)

// The process-level tests run the real binary, built once, against a real
// moto_server, with the project's test child as the command.
var (
	moto      *motoserver.Server
	binPath   string // the paramexec binary under test
	childBin  string // internal/testchild
	serverBin string // internal/testserver, the HTTP child of the readiness and zero-downtime tests
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		// A developer's quick loop: the unit tests only, without the
		// binaries and moto that only the end-to-end tests (see e2e) use.
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "paramexec-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binPath = filepath.Join(dir, "paramexec")
	childBin = filepath.Join(dir, "testchild")
	serverBin = filepath.Join(dir, "testserver")
	// The release build's tag, so that the tests run the HTTP client a
	// release ships (HTTP/1.1 only).
	args := []string{"build", "-tags", "nethttpomithttp2", "-o", binPath}
	if raceEnabled {
		args = append(args, "-race")
	}
	for _, b := range []struct{ args []string }{
		{append(args, ".")},
		{[]string{"build", "-o", childBin, "./internal/testchild"}},
		{[]string{"build", "-o", serverBin, "./internal/testserver"}},
	} {
		cmd := osexec.Command("go", b.args...)
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go %s: %v\n%s", strings.Join(b.args, " "), err, out)
			return 1
		}
	}
	code := motoserver.Main(m, &moto)
	if leaks := logScan.leaks(); len(leaks) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: paramexec output holds seeded values:\n%s\n", strings.Join(leaks, "\n"))
		return 1
	}
	fmt.Printf("log scan: %d paramexec runs, no seeded value in their logs\n", logScan.runs)
	return code
}

// e2e marks a test that runs the real binary. go test -short, a developer's
// quick loop, skips it; CI never passes -short, so it always runs there.
func e2e(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("slow: runs the real binary against moto; run without -short")
	}
}

// parallelE2E is e2e for a test that runs alongside the other parallel
// ones: it shares nothing with them but moto, where uniquePath gives each
// test its own names (nothing resets moto in this package), and the
// logScan collector, which is safe for concurrent use. Each starts its own
// paramexec and fault proxy. Tests whose assertions bound a time (settle,
// splay, deadlines, readiness timeouts, zero-downtime load with no failure
// allowed, the fault soak) stay serial: the parallel ones run after them,
// so a loaded machine does not stretch their windows.
func parallelE2E(t *testing.T) {
	t.Helper()
	e2e(t)
	t.Parallel()
}

// baseEnv is a minimal environment for the binary, without the developer's
// AWS settings, pointing at endpoint (moto or a proxy in front of it).
func baseEnv(endpoint string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	if endpoint != "" {
		env = append(env, motoserver.Env(endpoint)...)
	}
	return env
}

// result is what a user sees of one paramexec run.
type result struct {
	code           int
	signaled       bool // the process died from a signal (code is 128+N)
	stdout, stderr string
}

// runBinary runs paramexec to completion with env and args.
func runBinary(t *testing.T, env []string, args ...string) result {
	t.Helper()
	return runCommand(t, env, binPath, args...)
}

// runCommand is runBinary with a command in front that execs paramexec.
func runCommand(t *testing.T, env []string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := osexec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if slices.Contains(args, "--reveal") {
		logScan.add(r.stderr)
	} else {
		logScan.add(r.stdout + r.stderr)
	}
	if exitErr, ok := err.(*osexec.ExitError); ok {
		r.code = exitErr.ExitCode()
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			// What a shell reports; in place the child is this process.
			r.code, r.signaled = 128+int(ws.Signal()), true
		}
	} else if err != nil {
		t.Fatalf("run paramexec: %v", err)
	}
	return r
}

// record is one line the test child writes.
type record = childrec.Record

// readRecords returns what the test child recorded so far.
func readRecords(t *testing.T, path string) []record {
	t.Helper()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	recs, err := childrec.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func starts(recs []record) []record {
	var out []record
	for _, r := range recs {
		if r.Event == "start" {
			out = append(out, r)
		}
	}
	return out
}

// onlyStart returns the single start record of a run, failing otherwise.
func onlyStart(t *testing.T, path string) record {
	t.Helper()
	s := starts(readRecords(t, path))
	if len(s) != 1 {
		t.Fatalf("want 1 child start, got %d", len(s))
	}
	return s[0]
}

// childArgs is the test child as paramexec's command, recording to a file
// in the test's temp dir; it returns the args and the record file.
func childArgs(t *testing.T, flags ...string) ([]string, string) {
	rec := filepath.Join(t.TempDir(), "records.jsonl")
	return append([]string{"--", childBin, "-record", rec}, flags...), rec
}

// uniquePath gives each test its own parameter namespace in the shared moto.
func uniquePath(t *testing.T) string {
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	return "/test/" + name + "/" + fmt.Sprint(time.Now().UnixNano())
}

// valueMark starts every value the tests seed, so that the output of every
// run can be scanned for values: paramexec must never log one.
const valueMark = "zqv_"

// val makes a seeded value recognisable to the log scan.
func val(s string) string { return valueMark + s }

// logScan collects what paramexec wrote to stderr (and to stdout unless
// values were asked for) across the whole suite.
var logScan collector

type collector struct {
	mu   sync.Mutex
	buf  strings.Builder
	runs int
}

func (c *collector) add(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.WriteString(s)
	c.runs++
}

// leaks returns the lines that hold a seeded value.
func (c *collector) leaks() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, line := range strings.Split(c.buf.String(), "\n") {
		if strings.Contains(line, valueMark) {
			out = append(out, line)
		}
	}
	return out
}

func TestVersionOf(t *testing.T) {
	vcs := func(kv ...string) *debug.BuildInfo {
		info := &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}
		for i := 0; i+1 < len(kv); i += 2 {
			info.Settings = append(info.Settings, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return info
	}
	tagged := &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}
	for _, tc := range []struct {
		name    string
		stamped string
		info    *debug.BuildInfo
		want    string
	}{
		{"ldflags wins", "v9.9.9", tagged, "v9.9.9"},
		{"module version", "", tagged, "v1.4.0"},
		{"commit and time", "", vcs("vcs.revision", "6689fb3c07724a1b9d2e", "vcs.time", "2026-12-02T01:05:10Z", "vcs.modified", "false"), "(devel) 6689fb3c0772 2026-12-02T01:05:10Z"},
		{"uncommitted changes", "", vcs("vcs.revision", "6689fb3c0772", "vcs.modified", "true"), "(devel) 6689fb3c0772+dirty"},
		{"nothing to go on", "", vcs(), "(devel)"},
		{"no build info", "", nil, "(devel)"},
	} {
		if got := versionOf(tc.stamped, tc.info); got != tc.want {
			t.Errorf("%s: versionOf = %q, want %q", tc.name, got, tc.want)
		}
	}
}
