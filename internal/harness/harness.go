// Package harness runs the end-to-end tests' real processes: it builds paramexec and its test
// programs once per test binary, starts moto, and scans every run's output for seeded values.
package harness

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/motoserver"
	"github.com/paramexec/paramexec/internal/testchild/childrec"
)

// The process-level tests run the real binary, built once per test
// package, against a real moto_server, with the project's test child as
// the command. Main sets these before any test runs.
var (
	Moto      *motoserver.Server
	BinPath   string // the paramexec binary under test
	ChildBin  string // internal/testchild
	ServerBin string // internal/testserver, the HTTP child of the readiness and zero-downtime tests
)

// paramexec's own exit codes, as the README documents them: a test
// asserts the documented number, not whatever main.go says today.
const (
	ExitUsage  = 2
	ExitSource = 3
)

// Main is an end-to-end test package's TestMain: os.Exit(harness.Main(m)).
// It builds the binaries, runs the tests against a fresh moto, and fails
// the package if any paramexec run logged a seeded value.
func Main(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		// A developer's quick loop: these tests all need the binaries
		// and moto, and all skip under -short.
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "paramexec-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := motoserver.Main(m, &Moto)
	if leaks := LogScan.Leaks(); len(leaks) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: paramexec output holds seeded values:\n%s\n", strings.Join(leaks, "\n"))
		return 1
	}
	fmt.Printf("log scan: %d paramexec runs, no seeded value in their logs\n", LogScan.runs)
	return code
}

// build puts the binaries under test in dir, built from the module's root
// whichever package's directory the test runs in.
func build(dir string) error {
	gomod, err := osexec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("find the module root: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	BinPath = filepath.Join(dir, "paramexec")
	ChildBin = filepath.Join(dir, "testchild")
	ServerBin = filepath.Join(dir, "testserver")
	// The release build's tag, so that the tests run the HTTP client a
	// release ships (HTTP/1.1 only).
	args := []string{"build", "-tags", "nethttpomithttp2", "-o", BinPath}
	if raceEnabled {
		args = append(args, "-race")
	}
	for _, b := range [][]string{
		append(args, "."),
		{"build", "-o", ChildBin, "./internal/testchild"},
		{"build", "-o", ServerBin, "./internal/testserver"},
	} {
		cmd := osexec.Command("go", b...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %w\n%s", strings.Join(b, " "), err, out)
		}
	}
	return nil
}

// E2E marks a test that runs the real binary. go test -short, a developer's
// quick loop, skips it; CI never passes -short, so it always runs there.
func E2E(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("slow: runs the real binary against moto; run without -short")
	}
}

// ParallelE2E is e2e for a test that runs alongside the other parallel
// ones: it shares nothing with them but moto, where UniquePath gives each
// test its own names (nothing resets moto in this package), and the
// LogScan collector, which is safe for concurrent use. Each starts its own
// paramexec and fault proxy. Tests whose assertions bound a time (settle,
// splay, deadlines, readiness timeouts, zero-downtime load with no failure
// allowed, the fault soak) stay serial: the parallel ones run after them,
// so a loaded machine does not stretch their windows.
func ParallelE2E(t *testing.T) {
	t.Helper()
	E2E(t)
	t.Parallel()
}

// BaseEnv is a minimal environment for the binary, without the developer's
// AWS settings, pointing at endpoint (moto or a proxy in front of it).
func BaseEnv(endpoint string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	if endpoint != "" {
		env = append(env, motoserver.Env(endpoint)...)
	}
	return env
}

// Result is what a user sees of one paramexec run.
type Result struct {
	Code           int
	Signaled       bool // the process died from a signal (code is 128+N)
	Stdout, Stderr string
}

// RunBinary runs paramexec to completion with env and args.
func RunBinary(t *testing.T, env []string, args ...string) Result {
	t.Helper()
	return RunCommand(t, env, BinPath, args...)
}

// RunCommand is runBinary with a command in front that execs paramexec.
func RunCommand(t *testing.T, env []string, name string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := osexec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	if slices.Contains(args, "--reveal") {
		LogScan.Add(r.Stderr)
	} else {
		LogScan.Add(r.Stdout + r.Stderr)
	}
	if exitErr, ok := err.(*osexec.ExitError); ok {
		r.Code = exitErr.ExitCode()
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			// What a shell reports; in place the child is this process.
			r.Code, r.Signaled = 128+int(ws.Signal()), true
		}
	} else if err != nil {
		t.Fatalf("run paramexec: %v", err)
	}
	return r
}

// Record is one line the test child writes.
type Record = childrec.Record

// ReadRecords returns what the test child recorded so far.
func ReadRecords(t *testing.T, path string) []Record {
	t.Helper()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	// The child ends each record with a newline, in one write(2); a reader
	// may still see a large one (a start with a big environment) half
	// copied into the file: what follows the last newline is not whole yet.
	data = data[:bytes.LastIndexByte(data, '\n')+1]
	recs, err := childrec.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func Starts(recs []Record) []Record {
	var out []Record
	for _, r := range recs {
		if r.Event == "start" {
			out = append(out, r)
		}
	}
	return out
}

// OnlyStart returns the single start record of a run, failing otherwise.
func OnlyStart(t *testing.T, path string) Record {
	t.Helper()
	s := Starts(ReadRecords(t, path))
	if len(s) != 1 {
		t.Fatalf("want 1 child start, got %d", len(s))
	}
	return s[0]
}

// ChildArgs is the test child as paramexec's command, recording to a file
// in the test's temp dir; it returns the args and the record file.
func ChildArgs(t *testing.T, flags ...string) ([]string, string) {
	rec := filepath.Join(t.TempDir(), "records.jsonl")
	return append([]string{"--", ChildBin, "-record", rec}, flags...), rec
}

// UniquePath gives each test its own parameter namespace in the shared moto.
func UniquePath(t *testing.T) string {
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	return "/test/" + name + "/" + fmt.Sprint(time.Now().UnixNano())
}

// ValueMark starts every value the tests seed, so that the output of every
// run can be scanned for values: paramexec must never log one.
const ValueMark = "zqv_"

// Val makes a seeded value recognisable to the log scan.
func Val(s string) string { return ValueMark + s }

// LogScan collects what paramexec wrote to stderr (and to stdout unless
// values were asked for) across the whole suite.
var LogScan Collector

type Collector struct {
	mu   sync.Mutex
	buf  strings.Builder
	runs int
}

func (c *Collector) Add(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.WriteString(s)
	c.runs++
}

// Leaks returns the lines that hold a seeded value.
func (c *Collector) Leaks() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, line := range strings.Split(c.buf.String(), "\n") {
		if strings.Contains(line, ValueMark) {
			out = append(out, line)
		}
	}
	return out
}
