package exec

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// safetyTick is how often Run reaps without being told to: the signal
// package drops signals that do not fit the channel, SIGCHLD included.
const safetyTick = time.Second

// finishBound caps the last sweep of finish: SIGKILL cannot be refused, so
// only a process forking as fast as it is killed would last that long.
const finishBound = 2 * time.Second

// loop feeds the core its inputs until it is done: one goroutine, one
// select, one timer for the core's earliest deadline.
func (w *osWorld) loop(ctx context.Context, m *core, env []string, changes <-chan Change, sigs <-chan os.Signal) (int, error) {
	var cancel context.CancelFunc
	w.ctx, cancel = context.WithCancel(ctx)
	w.answers, w.handovers, w.quit = make(chan readyAnswer), make(chan int), make(chan struct{})
	defer w.waiting.Wait()
	defer cancel()
	defer close(w.quit)

	if err := m.begin(env); err != nil {
		return ExitCode(err), fmt.Errorf("supervise: %w", err)
	}
	tick := time.NewTicker(safetyTick)
	defer tick.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	done := ctx.Done()
	for !m.done() {
		if d := m.deadline(); d.IsZero() {
			timer.Stop()
		} else {
			timer.Reset(time.Until(d))
		}
		select {
		case <-done:
			done = nil
			m.cancelled(context.Cause(ctx).Error())
		case c, ok := <-changes:
			if !ok {
				changes = nil
				continue
			}
			m.change(c)
		case sig, ok := <-sigs:
			if !ok {
				sigs = nil
				continue
			}
			w.received(m, sig)
		case a := <-w.answers:
			m.answered(a.gen, a.err)
		case gen := <-w.handovers:
			m.handedOver(gen)
		case <-tick.C:
			w.reap(m)
		case <-timer.C:
			m.fire(time.Now())
		}
	}
	w.finish()
	return m.code, m.err
}

// received takes one signal this process received.
func (w *osWorld) received(m *core, sig os.Signal) {
	ss, ok := sig.(syscall.Signal)
	switch {
	case !ok:
	case ss == syscall.SIGCHLD:
		w.reap(m)
	default:
		m.signal(ss)
	}
}

// reap collects every exited child in one pass and gives them to the
// core together, then, in a terminal, looks for a child stopped by job
// control (without one, no shell waits to take the terminal back).
func (w *osWorld) reap(m *core) {
	var batch []exit
	w.s.Reap(func(pid int, ws syscall.WaitStatus) { batch = append(batch, exit{pid, ws}) })
	m.reaped(batch)
	if w.tty < 0 {
		return
	}
	for _, c := range m.kids {
		if sig, ok := stoppedBy(c.pid); ok {
			m.childStopped(c.pid, sig)
		}
	}
}

// stoppedBy reports the signal that stopped child pid, once per stop,
// without reaping it if it has exited (WEXITED is not asked for): the
// reaper stays the only one to take exits.
func stoppedBy(pid int) (syscall.Signal, bool) {
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &info, unix.WSTOPPED|unix.WNOHANG, nil); err != nil {
		return 0, false
	}
	const cldStopped = 5 // CLD_STOPPED
	if info.Signo != int32(syscall.SIGCHLD) || info.Code != cldStopped {
		return 0, false
	}
	// siginfo_t's SIGCHLD fields on 64-bit Linux: si_pid at 16, si_uid at
	// 20, si_status at 24 (the stop signal for CLD_STOPPED).
	status := *(*int32)(unsafe.Add(unsafe.Pointer(&info), 24))
	return syscall.Signal(status), true
}

// finish ends Run once no child and no leftover is left: whatever is
// still below this process is SIGKILLed, so that nothing this process
// started or adopted outlives it.
func (w *osWorld) finish() {
	deadline := time.Now().Add(finishBound)
	for {
		procs := descendants(os.Getpid())
		if len(procs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			w.log.Warn("descendants still running at exit", "count", len(procs))
			return
		}
		for _, p := range procs {
			p.signal(syscall.SIGKILL)
		}
		// SIGKILL takes effect when the process next runs: give it the CPU.
		time.Sleep(5 * time.Millisecond)
		w.s.Reap(func(int, syscall.WaitStatus) {})
	}
}
