package kit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/paramexec/paramexec/internal/motoserver"
)

// ChildEnv is the environment the benchmarks give paramexec and the floor:
// PATH and HOME only, plus the AWS settings that point at url, so that no
// AWS_* or PARAMEXEC_* of the caller's changes what is measured.
func ChildEnv(url string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	return append(env, motoserver.Env(url)...)
}

// Managed is the SysProcAttr of every process a benchmark starts: should
// the benchmark die, the process is asked to stop (a supervisor then stops
// its child) instead of running on as an orphan.
func Managed() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

// Stop asks a started process to stop with SIGTERM and kills it after
// grace. It returns the process's exit error, if any, ignoring the -1 of a kill.
func Stop(cmd *exec.Cmd, grace time.Duration) error {
	if cmd.Process == nil {
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		return err
	case <-time.After(grace):
		cmd.Process.Kill()
		<-done
		return fmt.Errorf("pid %d still running %s after SIGTERM: killed", cmd.Process.Pid, grace)
	}
}

// RSS reads a process's resident set size (VmRSS) in KiB.
func RSS(pid int) (int, error) {
	return statusField(pid, "VmRSS:")
}

// HWM reads a process's peak resident set size (VmHWM) in KiB.
func HWM(pid int) (int, error) {
	return statusField(pid, "VmHWM:")
}

// StatusKiB reads a KiB field of /proc/PID/status, such as "RssAnon:".
func StatusKiB(pid int, field string) (int, error) { return statusField(pid, field) }

func statusField(pid int, field string) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
			return strconv.Atoi(kb)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// userHZ is the unit of /proc's CPU times, fixed at 100 on Linux whatever
// the kernel's own tick rate.
const userHZ = 100

// CPUTime reads the user+system CPU time a process has used.
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	// After the name: state(0) ... utime(11) stime(12).
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ut+st) * time.Second / userHZ, nil
}

// CPUStat is the machine's CPU time so far, from /proc/stat.
type CPUStat struct{ Busy, Total time.Duration }

// ReadCPUStat reads the machine-wide CPU counters.
func ReadCPUStat() (CPUStat, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return CPUStat{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return CPUStat{}, fmt.Errorf("/proc/stat: empty")
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 5 || fields[0] != "cpu" {
		return CPUStat{}, fmt.Errorf("/proc/stat: unexpected first line")
	}
	var s CPUStat
	for i, v := range fields[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return CPUStat{}, fmt.Errorf("/proc/stat: %w", err)
		}
		d := time.Duration(n) * time.Second / userHZ
		s.Total += d
		if i != 3 && i != 4 { // idle, iowait
			s.Busy += d
		}
	}
	return s, nil
}

// Utilisation is the share of all CPUs busy between two readings, 0..1.
func Utilisation(a, b CPUStat) float64 {
	if b.Total <= a.Total {
		return 0
	}
	return float64(b.Busy-a.Busy) / float64(b.Total-a.Total)
}

// Machine describes the box a run came from.
type Machine struct {
	CPUs      int
	CPUModel  string
	MemoryMiB int
	Kernel    string
	Go        string
}

// DescribeMachine reads what the README reports next to the figures.
func DescribeMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
				n, _ := strconv.Atoi(kb)
				m.MemoryMiB = n / 1024
			}
		}
	}
	return m
}

func (m Machine) String() string {
	return fmt.Sprintf("%d CPUs (%s), %d MiB RAM, Linux %s, %s", m.CPUs, m.CPUModel, m.MemoryMiB, m.Kernel, m.Go)
}
