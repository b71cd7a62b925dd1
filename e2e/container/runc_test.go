package container_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/testchild/childrec"
	"github.com/paramexec/paramexec/internal/testenv"
)

// recordFile is where the application writes its records, in the one
// writable mount the containers have: /out, a host directory, as a volume.
const recordFile = "/out/records.jsonl"

var containerSeq atomic.Int64

// container is one `runc run` in the foreground: its exit status is the
// container's, as Docker reports it.
type container struct {
	id, bundle, out string
	logs            testenv.Buffer
	done            chan struct{}
	code            int // valid once done is closed
}

// runContainer starts the image with args as the process (ENTRYPOINT and
// CMD, as docker run ARGS gives them) and env added to the image's.
func runContainer(t *testing.T, args, env []string) *container {
	t.Helper()
	c := &container{
		id:     fmt.Sprintf("paramexec-e2e-%d-%d", os.Getpid(), containerSeq.Add(1)),
		bundle: t.TempDir(),
		out:    t.TempDir(),
		done:   make(chan struct{}),
	}
	if err := os.Chown(c.out, imageUID, imageUID); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, c, args, env)
	cmd := exec.Command("runc", "run", "--bundle", c.bundle, c.id)
	cmd.Stdout, cmd.Stderr = &c.logs, &c.logs
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		c.code = cmd.ProcessState.ExitCode()
		close(c.done)
	}()
	t.Cleanup(func() {
		exec.Command("runc", "kill", c.id, "KILL").Run()
		<-c.done
		exec.Command("runc", "delete", "--force", c.id).Run()
	})
	return c
}

// writeConfig adapts umoci's runtime config to what Docker would run: the
// image's read-only root (docker run --read-only), the host's network
// namespace (--network host, to reach moto on the loopback), no
// capabilities for the non-root user (as Docker gives a non-root USER),
// Docker's environment, a writable /out volume, and the process given.
func writeConfig(t *testing.T, c *container, args, env []string) {
	t.Helper()
	var cfg map[string]any
	if err := json.Unmarshal(fx.config, &cfg); err != nil {
		t.Fatal(err)
	}
	proc := cfg["process"].(map[string]any)
	proc["terminal"] = false
	proc["args"] = args
	// umoci's TERM=xterm is for a terminal; Docker sets HOSTNAME, and
	// HOME=/ for a user without an /etc/passwd entry.
	base := slices.DeleteFunc(anyStrings(proc["env"]), func(kv string) bool { return strings.HasPrefix(kv, "TERM=") })
	proc["env"] = append(append(base, "HOSTNAME="+c.id, "HOME=/"), env...)
	caps := proc["capabilities"].(map[string]any)
	for _, set := range []string{"effective", "permitted", "inheritable", "ambient"} {
		caps[set] = []string{}
	}
	cfg["root"] = map[string]any{"path": fx.rootfs, "readonly": true}
	cfg["hostname"] = c.id
	cfg["mounts"] = append(cfg["mounts"].([]any), map[string]any{
		"destination": "/out", "type": "bind", "source": c.out, "options": []string{"rbind", "rw"},
	})
	linux := cfg["linux"].(map[string]any)
	var ns []any
	for _, n := range linux["namespaces"].([]any) {
		if n.(map[string]any)["type"] != "network" {
			ns = append(ns, n)
		}
	}
	linux["namespaces"] = ns
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.bundle, "config.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func anyStrings(v any) []string {
	var out []string
	for _, s := range v.([]any) {
		out = append(out, s.(string))
	}
	return out
}

// dockerStop does what `docker stop --time TIMEOUT` does: SIGTERM to the
// container's PID 1, SIGKILL if it has not ended after the timeout. It
// returns the exit status runc reports and whether SIGKILL was needed.
func (c *container) dockerStop(t *testing.T, timeout time.Duration) (code int, killed bool) {
	t.Helper()
	if out, err := exec.Command("runc", "kill", c.id, "TERM").CombinedOutput(); err != nil {
		t.Fatalf("runc kill %s TERM: %v\n%s", c.id, err, out)
	}
	select {
	case <-c.done:
		return c.code, false
	case <-time.After(timeout):
	}
	if out, err := exec.Command("runc", "kill", c.id, "KILL").CombinedOutput(); err != nil {
		t.Fatalf("runc kill %s KILL: %v\n%s", c.id, err, out)
	}
	return c.wait(t), true
}

// wait returns the exit status runc reports once the container has ended.
func (c *container) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-c.done:
		return c.code
	case <-time.After(60 * time.Second):
		t.Fatalf("container %s did not end; runc and paramexec said:\n%s", c.id, c.logs.String())
		return 0
	}
}

// pids lists the host pids of the container's processes (runc ps).
func (c *container) pids(t *testing.T) []int {
	t.Helper()
	out, err := exec.Command("runc", "ps", "--format", "json", c.id).Output()
	if err != nil {
		t.Fatalf("runc ps %s: %v", c.id, err)
	}
	var pids []int
	if err := json.Unmarshal(out, &pids); err != nil {
		t.Fatalf("runc ps %s: %v: %s", c.id, err, out)
	}
	return pids
}

// initPid is the host pid of the container's PID 1.
func (c *container) initPid(t *testing.T) int {
	t.Helper()
	out, err := exec.Command("runc", "state", c.id).Output()
	if err != nil {
		t.Fatalf("runc state %s: %v", c.id, err)
	}
	var st struct{ Pid int }
	if err := json.Unmarshal(out, &st); err != nil || st.Pid == 0 {
		t.Fatalf("runc state %s: %v: %s", c.id, err, out)
	}
	return st.Pid
}

// records reads what the application wrote so far.
func (c *container) records(t *testing.T) []childrec.Record {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(c.out, "records.jsonl"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	recs, err := childrec.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// waitStarts waits for n application starts, failing with paramexec's
// output if the container ends first.
func (c *container) waitStarts(t *testing.T, n int) []childrec.Record {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var starts []childrec.Record
		for _, r := range c.records(t) {
			if r.Event == "start" {
				starts = append(starts, r)
			}
		}
		if len(starts) >= n {
			return starts
		}
		select {
		case <-c.done:
			t.Fatalf("the container ended (%d) after %d of %d application start(s); output:\n%s", c.code, len(starts), n, c.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d application start(s) after 60s; output:\n%s", len(starts), n, c.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// gone reports whether no process has the host pid any more.
func gone(pid int) bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) }

type recordT = childrec.Record

func runcState(id string) ([]byte, error) { return exec.Command("runc", "state", id).CombinedOutput() }

// childrenOf lists the host pids whose parent is pid, zombies included.
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	tasks, err := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "children"))
	if err != nil {
		t.Fatal(err)
	}
	var kids []int
	for _, task := range tasks {
		data, _ := os.ReadFile(task) // a thread may have ended since
		for _, f := range strings.Fields(string(data)) {
			if n, err := strconv.Atoi(f); err == nil {
				kids = append(kids, n)
			}
		}
	}
	return kids
}
