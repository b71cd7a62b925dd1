package exec

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// world is everything the core does outside itself: time, processes,
// readiness checks, handovers and events. osWorld is the real one; the
// simulation's is a fake. Every method returns soon: none waits on a
// child, on output, or on a lock a fork holds.
type world interface {
	now() time.Time
	// checkStart reports why env cannot start the command, if it cannot.
	checkStart(env []string) error
	// start forks the command with env in a process group of its own.
	start(env []string) (pid int, tick uint64, err error)
	signal(pid int, sig syscall.Signal)
	signalGroup(pgid int, sig syscall.Signal)
	killGroup(pgid int)
	// checkReady starts the readiness check of the child of gen; its
	// answer comes back as core.answered. cancel ends it.
	checkReady(gen, pid int) (cancel func())
	// handover starts the handover of the child of gen, if there is one;
	// its end comes back as core.handedOver.
	handover(gen, pid int) bool
	// descendantsOutside lists this process's live descendants outside
	// process group pgid.
	descendantsOutside(pgid int) []proc
	alive(p proc) bool
	signalProc(p proc, sig syscall.Signal)
	// killProcs SIGKILLs procs and whatever they started.
	killProcs(procs []proc)
	// continueStopped sends SIGCONT to pid (its group, with group) if
	// pid is stopped.
	continueStopped(pid int, group bool)
	stopSelf()
	// foreground gives the terminal to process group pgid, if this
	// process holds its foreground.
	foreground(pgid int)
	emit(e Event)
}

// readyAnswer is what Supervisor.Ready said about the child of gen.
type readyAnswer struct {
	gen int
	err error
}

// osWorld is the world of real processes, owned by Run's goroutine; the
// goroutines it starts (readiness checks, handover waits) report by
// channel and end when Run does.
type osWorld struct {
	s    *Supervisor
	log  *slog.Logger
	io   *stdio
	fork *forker
	tty  int // the terminal each child gets as foreground, or -1

	readyTimeout time.Duration
	ctx          context.Context // ends when Run returns
	quit         chan struct{}   // closed when the loop ends
	answers      chan readyAnswer
	handovers    chan int
	waiting      sync.WaitGroup
}

func (w *osWorld) now() time.Time { return time.Now() }

func (w *osWorld) checkStart(env []string) error { return checkStart(w.s.Argv, env) }

func (w *osWorld) start(env []string) (int, uint64, error) {
	argv := w.s.Argv
	// PrepareEnv's additions (a proxy port) are this start's alone: the
	// core keeps env, so that environments compare by what the sources
	// gave.
	if w.s.PrepareEnv != nil {
		var err error
		if env, err = w.s.PrepareEnv(env); err != nil {
			return 0, 0, fmt.Errorf("start %s: %w", argv[0], err)
		}
	}
	path, err := LookPath(argv[0], env)
	if err != nil {
		return 0, 0, err
	}
	files := []uintptr{w.io.files[0].Fd(), w.io.files[1].Fd(), w.io.files[2].Fd()}
	var extra []*os.File
	if w.s.ExtraFiles != nil {
		if extra, err = w.s.ExtraFiles(); err != nil {
			return 0, 0, fmt.Errorf("start %s: %w", argv[0], err)
		}
		defer closeFiles(extra)
		for _, f := range extra {
			files = append(files, f.Fd())
		}
	}
	forkPath, forkArgv := path, argv
	if w.s.Wrap != nil {
		forkPath, forkArgv = w.s.Wrap(path, argv)
	}
	// Its own process group, so that SIGKILL reaches its descendants too and
	// a terminal's ^C reaches it rather than this process. SIGKILL when this
	// process dies, even by SIGKILL (see forker); not inherited by the
	// child's own children, which only a PID namespace's end or a cgroup
	// kill reaches then.
	sys := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if w.tty >= 0 {
		sys.Foreground, sys.Ctty = true, w.tty
	}
	// ForkExec, not os/exec: the reaper owns wait4, so nothing here may wait.
	pid, err := w.fork.forkExec(forkPath, forkArgv, &syscall.ProcAttr{Env: env, Files: files, Sys: sys})
	runtime.KeepAlive(w.io)
	runtime.KeepAlive(extra)
	if err != nil {
		return 0, 0, startError(path, argv, env, err)
	}
	var tick uint64
	// Unreaped, it is in /proc even if it has exited already.
	if _, t, _, ok := procStat(pid); ok {
		tick = t
	}
	w.log.Info("child started", "pid", pid, "command", path)
	return pid, tick, nil
}

func (w *osWorld) signal(pid int, sig syscall.Signal) { signalPid(w.log, pid, sig) }

func (w *osWorld) signalGroup(pgid int, sig syscall.Signal) {
	if pgid <= 1 { // kill(0) and kill(-1) mean far more than one child
		return
	}
	if err := syscall.Kill(-pgid, sig); err != nil && err != syscall.ESRCH {
		w.log.Warn("cannot signal the child's process group", "pgid", pgid, "signal", signalName(sig), "error", err)
	}
}

func (w *osWorld) killGroup(pgid int) { w.signalGroup(pgid, syscall.SIGKILL) }

func (w *osWorld) checkReady(gen, pid int) func() {
	ctx, cancel := context.WithTimeout(w.ctx, w.readyTimeout)
	w.waiting.Go(func() {
		err := w.s.Ready(ctx, pid)
		select {
		case w.answers <- readyAnswer{gen, err}:
		case <-w.quit:
		}
	})
	return cancel
}

func (w *osWorld) handover(gen, pid int) bool {
	if w.s.Handover == nil {
		return false
	}
	done := w.s.Handover(pid)
	if done == nil {
		return false
	}
	w.waiting.Go(func() {
		select {
		case <-done:
		case <-w.quit:
			return
		}
		select {
		case w.handovers <- gen:
		case <-w.quit:
		}
	})
	return true
}

func (w *osWorld) descendantsOutside(pgid int) []proc {
	return descendantsOutside(pgid, os.Getpid())
}

func (w *osWorld) alive(p proc) bool { return p.alive() }

func (w *osWorld) signalProc(p proc, sig syscall.Signal) { p.signal(sig) }

func (w *osWorld) killProcs(procs []proc) { killProcs(procs) }

func (w *osWorld) continueStopped(pid int, group bool) {
	if pid <= 1 || !stopped(pid) {
		return
	}
	if group {
		w.signalGroup(pid, syscall.SIGCONT)
		return
	}
	signalPid(w.log, pid, syscall.SIGCONT)
}

func (w *osWorld) stopSelf() { syscall.Kill(os.Getpid(), syscall.SIGSTOP) }

func (w *osWorld) foreground(pgid int) {
	if w.tty < 0 || pgid <= 1 {
		return
	}
	if pgrp, err := unix.IoctlGetInt(w.tty, unix.TIOCGPGRP); err != nil || pgrp != unix.Getpgrp() {
		return // continued in the background (bg): the terminal is not ours to give
	}
	if err := unix.IoctlSetPointerInt(w.tty, unix.TIOCSPGRP, pgid); err != nil {
		w.log.Warn("cannot give the terminal back to the child", "pgid", pgid, "error", err)
	}
}

func (w *osWorld) emit(e Event) {
	if w.s.OnEvent != nil {
		w.s.OnEvent(e)
	}
}

func signalPid(log *slog.Logger, pid int, sig syscall.Signal) {
	if pid <= 1 { // kill(0) and kill(-1) mean far more than one child
		return
	}
	if err := syscall.Kill(pid, sig); err != nil && err != syscall.ESRCH {
		log.Warn("cannot signal child", "pid", pid, "signal", signalName(sig), "error", err)
	}
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
