package kit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"time"
)

// Runner drives a bench/internal/runner process, which times whole-process
// runs and reads their peak RSS without the benchmark's own memory leaking
// into it (see that command's doc).
type Runner struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// Run is one timed run.
type Run struct {
	Wall      time.Duration
	MaxRSS    int // KiB: max(the program's peak, RunnerHWM)
	RunnerHWM int // KiB: the runner's own peak, the lowest MaxRSS can read
}

// StartRunner starts the runner binary.
func StartRunner(bin string) (*Runner, error) {
	cmd := exec.Command(bin)
	cmd.SysProcAttr = Managed()
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start runner: %w", err)
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	return &Runner{cmd: cmd, in: in, out: sc}, nil
}

// Run runs argv with env to its end. A program that fails is an error
// carrying its output: its time would mean nothing.
func (r *Runner) Run(argv, env []string) (Run, error) {
	req, err := json.Marshal(struct {
		Argv []string `json:"argv"`
		Env  []string `json:"env"`
	}{argv, env})
	if err != nil {
		return Run{}, err
	}
	if _, err := r.in.Write(append(req, '\n')); err != nil {
		return Run{}, fmt.Errorf("runner: %w", err)
	}
	if !r.out.Scan() {
		return Run{}, fmt.Errorf("runner: no answer: %w", errors.Join(r.out.Err(), io.ErrUnexpectedEOF))
	}
	var res struct {
		WallNs    int64  `json:"wall_ns"`
		MaxRSSKiB int    `json:"maxrss_kib"`
		RunnerKiB int    `json:"runner_hwm_kib"`
		Error     string `json:"error"`
		Output    string `json:"output"`
	}
	if err := json.Unmarshal(r.out.Bytes(), &res); err != nil {
		return Run{}, fmt.Errorf("runner: %w", err)
	}
	if res.Error != "" {
		return Run{}, fmt.Errorf("%v: %s\n%s", argv, res.Error, res.Output)
	}
	return Run{Wall: time.Duration(res.WallNs), MaxRSS: res.MaxRSSKiB, RunnerHWM: res.RunnerKiB}, nil
}

// Close ends the runner.
func (r *Runner) Close() error {
	r.in.Close()
	return r.cmd.Wait()
}
