package ready

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Procs runs the processes of exec: checks and learns of their exit from
// the supervisor's reaper.
//
// The supervisor reaps every child with wait4(-1) (signals.Reap), so a
// process started with os/exec would race it: either side could collect the
// exit, and Cmd.Wait would fail with ECHILD. Instead the check process is
// started with syscall.ForkExec and registered, and the supervisor hands
// every pid it reaps to Exited first. The lock is never held across the
// fork, which the reaper (the supervisor's loop, which forwards signals)
// must not wait on: an exit reaped while a fork is under way, of a pid not
// registered yet, is kept as unclaimed until every fork under way has
// registered, and a fork that finds its pid there takes that exit; the
// others go back to the supervisor through Release. Exited kills what the check left in its process group, right
// after the reap, on the reaper's goroutine: as for the supervisor's own
// child, the group id cannot be reused while the group has members.
//
// A check that runs out of time kills its process through a pidfd (Linux ≥
// 5.3), which cannot reach a reused pid even if the reaper has just
// collected the process; the rest of the group dies when Exited sees the
// exit. Without pidfds it signals the pid, and only while the exit is not
// yet recorded.
type Procs struct {
	// fork is syscall.ForkExec; tests hold it to show that nothing waits
	// on a fork.
	fork func(argv0 string, argv []string, attr *syscall.ProcAttr) (int, error)

	mu      sync.Mutex
	running map[int]*proc
	forking int // forks under way, not yet registered
	// unclaimed holds exits of unknown pids reaped while forking > 0:
	// one may be a fork's own child, reaped before it registered. When
	// forking drops to 0 the rest move to released, for Release.
	unclaimed map[int]syscall.WaitStatus
	released  []exit
}

// exit is a reaped pid and its status.
type exit struct {
	pid int
	ws  syscall.WaitStatus
}

type proc struct {
	pid   int
	pidfd int                     // -1 if the kernel gave none
	done  chan syscall.WaitStatus // buffered 1, sent once by Exited
}

// NewProcs returns an empty registry.
func NewProcs() *Procs {
	return &Procs{fork: syscall.ForkExec, running: make(map[int]*proc), unclaimed: make(map[int]syscall.WaitStatus)}
}

// Exited is the reaper's hook: call it for every pid reaped, before anything
// else looks at it. It reports whether Procs took the exit: a check's
// process, or one held until the forks under way know their pids (see
// Release); if so the pid is not the supervisor's business now.
func (p *Procs) Exited(pid int, ws syscall.WaitStatus) bool {
	if p == nil || pid <= 1 {
		return false
	}
	p.mu.Lock()
	pr, ok := p.running[pid]
	if ok {
		delete(p.running, pid)
	} else if p.forking > 0 {
		p.unclaimed[pid] = ws
		p.mu.Unlock()
		return true
	}
	p.mu.Unlock()
	if !ok {
		return false
	}
	pr.exited(ws)
	return true
}

// Release hands the reaper the exits Exited held during a fork that were
// not a check's: call it, with the reaper's own onExit, each time it reaps.
func (p *Procs) Release(onExit func(pid int, ws syscall.WaitStatus)) {
	if p == nil {
		return
	}
	p.mu.Lock()
	out := p.released
	p.released = nil
	p.mu.Unlock()
	for _, e := range out {
		onExit(e.pid, e.ws)
	}
}

// exited ends pr: what it left in its group is killed, its exit reported.
func (pr *proc) exited(ws syscall.WaitStatus) {
	syscall.Kill(-pr.pid, syscall.SIGKILL) // ESRCH: the group is already empty
	if pr.pidfd >= 0 {
		syscall.Close(pr.pidfd)
	}
	pr.done <- ws
}

// Running is how many check processes have not been reported as exited.
func (p *Procs) Running() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.running)
}

// start forks argv in its own process group.
func (p *Procs) start(argv, env []string, out *os.File) (*proc, error) {
	null, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer null.Close()
	outFd := null.Fd()
	if out != nil {
		outFd = out.Fd()
	}
	pidfd := -1
	attr := &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{null.Fd(), outFd, outFd},
		Sys:   &syscall.SysProcAttr{Setpgid: true, PidFD: &pidfd},
	}
	p.mu.Lock()
	p.forking++
	p.mu.Unlock()
	pid, err := p.fork(argv[0], argv, attr)

	p.mu.Lock()
	defer p.mu.Unlock()
	p.forking--
	defer p.releaseUnclaimed()
	if err != nil {
		return nil, err
	}
	pr := &proc{pid: pid, pidfd: pidfd, done: make(chan syscall.WaitStatus, 1)}
	if ws, ok := p.unclaimed[pid]; ok {
		// Reaped before it was registered: it is gone already.
		delete(p.unclaimed, pid)
		pr.exited(ws)
		return pr, nil
	}
	p.running[pid] = pr
	return pr, nil
}

// releaseUnclaimed moves what no fork under way can claim any more to
// released. p.mu is held.
func (p *Procs) releaseUnclaimed() {
	if p.forking > 0 {
		return
	}
	for pid, ws := range p.unclaimed {
		p.released = append(p.released, exit{pid, ws})
	}
	clear(p.unclaimed)
}

// kill sends SIGKILL to a check process that ran out of time.
func (p *Procs) kill(pr *proc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.running[pr.pid]; !ok {
		return // reported exited; its pidfd is closed
	}
	if pr.pidfd >= 0 {
		unix.PidfdSendSignal(pr.pidfd, unix.SIGKILL, nil, 0)
		return
	}
	syscall.Kill(pr.pid, syscall.SIGKILL)
}

// errExecTimeout is the reason of a try that ran out of time.
var errExecTimeout = errors.New("timed out, killed")

// run runs argv once: nil when it exits 0. It returns when the exit is
// reported, when the try times out (after the kill and the report), or at
// once when ctx ends (after the kill: the reaper reports the exit later).
func (p *Procs) run(ctx context.Context, argv, env []string, out *os.File, timeout time.Duration) error {
	pr, err := p.start(argv, env, out)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case ws := <-pr.done:
		return exitErr(ws)
	case <-ctx.Done():
		p.kill(pr)
		return ctx.Err()
	case <-t.C:
	}
	p.kill(pr)
	select {
	case <-pr.done:
	case <-ctx.Done():
	}
	return errExecTimeout
}

func exitErr(ws syscall.WaitStatus) error {
	switch {
	case ws.Exited() && ws.ExitStatus() == 0:
		return nil
	case ws.Exited():
		return fmt.Errorf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Errorf("killed by %v", ws.Signal())
	}
	return fmt.Errorf("wait status %#x", uint32(ws))
}
