// Command runner times whole-process runs for the start-up benchmark and
// reads their peak RSS, from a process small enough not to distort it.
//
// Why a process of its own: Go starts children with vfork (CLONE_VM), and
// when the child execs, Linux folds the peak RSS of the memory it leaves,
// which is the parent's, into the child's ru_maxrss. Timed straight from
// the benchmark, every program would report the benchmark's own peak. From
// this runner it reports max(runner's peak, program's peak), and the
// runner's peak, a few MiB, is reported beside it as the floor of what the
// figure can show.
//
// Protocol: one JSON request a line on stdin ({"argv": [...], "env": [...]}),
// one JSON result a line on stdout, until stdin ends.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type request struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
}

type result struct {
	WallNs    int64  `json:"wall_ns"`
	MaxRSSKiB int64  `json:"maxrss_kib"`
	RunnerKiB int64  `json:"runner_hwm_kib"` // this runner's own peak: the floor of MaxRSSKiB
	Error     string `json:"error,omitempty"`
	Output    string `json:"output,omitempty"` // on failure: what the program printed (names and codes, never values)
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var req request
		if err := json.Unmarshal(in.Bytes(), &req); err != nil || len(req.Argv) == 0 {
			out.Encode(result{Error: fmt.Sprintf("bad request: %v", err)})
			continue
		}
		out.Encode(runOne(req))
	}
}

func runOne(req request) result {
	cmd := exec.Command(req.Argv[0], req.Argv[1:]...)
	cmd.Env = req.Env
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	err := cmd.Start()
	if err == nil {
		err = cmd.Wait()
	}
	r := result{WallNs: int64(time.Since(start)), RunnerKiB: selfHWM()}
	if err != nil {
		r.Error, r.Output = err.Error(), output.String()
		return r
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.MaxRSSKiB = ru.Maxrss
	}
	return r
}

func selfHWM() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
			n, _ := strconv.ParseInt(kb, 10, 64)
			return n
		}
	}
	return 0
}
