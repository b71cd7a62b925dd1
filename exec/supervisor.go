package exec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// NoGrace as Supervisor.Grace sends SIGKILL right after the stop signal.
// Zero is not it: a zero Supervisor gets the default grace.
const NoGrace time.Duration = -1

const (
	defaultGrace = 10 * time.Second
	// safetyTick is how often Run reaps without being told to: the signal
	// package drops signals that do not fit the channel, SIGCHLD included.
	safetyTick = time.Second
)

// A Change asks the supervisor to apply a new environment.
type Change struct {
	Env []string // the complete environment for the child
	// Reason names what changed for the logs, never values:
	// "DB_PASSWORD changed".
	Reason string
}

// EventKind says what happened to the supervised child.
type EventKind int

const (
	// Started: the first child has started.
	Started EventKind = iota + 1
	// RestartBegun: a change asked for a restart; the stop signal was sent.
	RestartBegun
	// Restarted: the new child of a restart has started.
	Restarted
	// Stopping: the child was asked to stop for good (terminating signal,
	// OnChange Exit, ctx done), or a restart under way became a stop.
	Stopping
	// Killed: the grace period ran out; the child's process group got SIGKILL.
	Killed
	// Exited: a child has exited, the old one of a restart as well as the
	// last one, after which Run returns.
	Exited
	// Rejected: a change's environment cannot start the command (too large
	// for execve, or the command not found with its PATH); the child keeps
	// running. Reason says why, with names and sizes only.
	Rejected
)

func (k EventKind) String() string {
	switch k {
	case Started:
		return "started"
	case RestartBegun:
		return "restart begun"
	case Restarted:
		return "restarted"
	case Stopping:
		return "stopping"
	case Killed:
		return "killed"
	case Exited:
		return "exited"
	case Rejected:
		return "rejected"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event reports a step of the child's lifecycle to Supervisor.OnEvent.
type Event struct {
	Kind EventKind
	Pid  int // the child concerned; for Restarted, the new one
	// Took, for Restarted: from the change that asked for it to the new
	// child's start.
	Took time.Duration
	// Gap, for Restarted: from the old child's exit to the new child's
	// start, the time nothing ran.
	Gap    time.Duration
	Reason string         // RestartBegun, Restarted, Stopping: why
	Signal syscall.Signal // RestartBegun, Stopping: the signal sent, 0 if none was
	Code   int            // Exited: StatusCode of the child
}

// Supervisor runs a command as a child process and stays its parent: it
// forwards signals to it, restarts it with a new environment when asked,
// and stops it with a grace period. Its fields must not change during Run.
type Supervisor struct {
	Argv       []string
	OnChange   Action
	Grace      time.Duration  // before SIGKILL; 10s when 0, none when NoGrace (any negative)
	StopSignal syscall.Signal // asks the child to stop; SIGTERM when 0
	Log        *slog.Logger   // nil: discard
	// Reap collects exited children and reports each (signals.Reap, which
	// takes orphans too). Run calls it on SIGCHLD and on a slow tick. When
	// nil, Run waits for its own child only.
	Reap func(onExit func(pid int, status syscall.WaitStatus))
	// Terminates tells the signals that, after being forwarded, shut the
	// supervisor down; nil: SIGTERM and SIGINT.
	Terminates func(os.Signal) bool
	// OnEvent, if set, is called from Run's goroutine and must return soon.
	OnEvent func(Event)
	// Stdin, Stdout, Stderr: nil means this process's own. An *os.File is
	// inherited as it is; anything else goes through a pipe.
	Stdin          io.Reader
	Stdout, Stderr io.Writer

	// Hooks for what --listen and --proxy give each child. Each is called
	// from Run's goroutine, once per start, and must return soon.
	//
	// PrepareEnv, if set, returns the environment the child gets instead
	// of env (--proxy adds the child's port); an error fails the start.
	PrepareEnv func(env []string) ([]string, error)
	// ExtraFiles, if set, returns descriptors for the child's fds 3, 4, …
	// (--listen's sockets); Run closes them once the child has started.
	ExtraFiles func() ([]*os.File, error)
	// Wrap, if set, turns the command found in PATH into the program that
	// is forked (--listen's trampoline, which then execs the command); the
	// log names the command, not the wrapper.
	Wrap func(path string, argv []string) (string, []string)
}

// Run starts the child with env and supervises it until it exits. It returns
// the child's StatusCode when the child exits on its own (it never restarts
// a child that exits by itself), after a terminating signal, after OnChange
// Exit, or after ctx is done; in each case Run sends StopSignal first (see
// terminate for the signals). A child still running Grace after a stop was asked
// for is SIGKILLed with its whole process group.
//
// sigs carries every signal this process receives, SIGCHLD included: each
// but SIGCHLD and the first terminating one is forwarded to the child's pid. changes carry new
// environments: see Action for what each does. Changes arriving during a
// restart are coalesced: the next child gets the newest environment; and
// signals other than terminating ones are held until it has started.
// Terminating ones end the restart: no new child starts.
//
// A change whose environment cannot start the command is rejected before
// the child is touched (see reject).
//
// Run returns an error only when a child could not be started, at first or
// on a restart, with ExitCode(err) as the code (126, 127, 4), or when the
// Supervisor is misconfigured (2). When ctx is done before the first start,
// it starts nothing and returns 1 and ctx's error. When Run returns, no
// child of it is running and nothing is left in the last child's process
// group, nor below this process: what a child left outside its group (see
// sweep) got the stop signal and Grace, then SIGKILL.
func (s *Supervisor) Run(ctx context.Context, env []string, changes <-chan Change, sigs <-chan os.Signal) (int, error) {
	if len(s.Argv) == 0 {
		return ExitCode(ErrNotFound), fmt.Errorf("supervise: empty command: %w", ErrNotFound)
	}
	if s.OnChange.Kind == Signal && s.OnChange.Signal == 0 {
		return 2, errors.New("supervise: on-change signal without a signal")
	}
	if err := ctx.Err(); err != nil {
		return 1, fmt.Errorf("supervise %s: not started: %w", s.Argv[0], err)
	}
	r := &run{
		s:          s,
		log:        s.Log,
		grace:      s.Grace,
		stopSig:    s.StopSignal,
		terminates: s.Terminates,
		env:        slices.Clone(env),
		tty:        -1,
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.grace == 0 {
		r.grace = defaultGrace
	}
	if r.stopSig == 0 {
		r.stopSig = syscall.SIGTERM
	}
	if r.terminates == nil {
		r.terminates = func(sig os.Signal) bool { return sig == syscall.SIGTERM || sig == syscall.SIGINT }
	}
	var err error
	if r.io, err = openStdio(s.Stdin, s.Stdout, s.Stderr); err != nil {
		return ExitCode(err), fmt.Errorf("supervise %s: %w", s.Argv[0], err)
	}
	defer r.io.close()
	if _, isFile := s.Stdin.(*os.File); s.Stdin == nil || isFile {
		if tty, ok := foregroundTTY(int(r.io.files[0].Fd())); ok {
			r.tty = tty
			defer r.restoreTTY()
		}
	}
	r.fork = startForker()
	defer r.fork.close()
	return r.loop(ctx, changes, sigs)
}

type phase int

const (
	running    phase = iota
	restarting       // stop asked; a new child starts when the old one has exited
	stopping         // stop asked; Run returns when the child has exited
)

// run is the state of one Run, owned by its goroutine.
type run struct {
	s          *Supervisor
	log        *slog.Logger
	grace      time.Duration
	stopSig    syscall.Signal
	terminates func(os.Signal) bool
	io         *stdio
	fork       *forker
	tty        int // the terminal each child gets as foreground, or -1

	phase      phase
	terminated bool               // a terminating signal was received
	pid        int                // the current child; also its process group
	env        []string           // the next child's environment
	reason     string             // why the restart or stop under way
	begun      time.Time          // when the restart under way was asked for
	queued     []syscall.Signal   // held for the next child, each once, in order
	timer      *time.Timer        // the grace period under way
	graceC     <-chan time.Time   // timer.C while the grace period runs, else nil
	exited     bool               // the current child has been reaped
	status     syscall.WaitStatus // and how it ended
	exitAt     time.Time

	stopBy time.Time        // when the grace period of the last stop ends
	left   []leftovers      // earlier generations' leftovers, by deadline
	leftT  *time.Timer      // the first deadline of left
	leftC  <-chan time.Time // leftT.C, or nil
}

func (r *run) loop(ctx context.Context, changes <-chan Change, sigs <-chan os.Signal) (int, error) {
	if err := r.start(); err != nil {
		return ExitCode(err), fmt.Errorf("supervise: %w", err)
	}
	r.emit(Event{Kind: Started, Pid: r.pid})
	tick := time.NewTicker(safetyTick)
	defer tick.Stop()
	done := ctx.Done()
	for {
		select {
		case <-done:
			done = nil
			r.stop(stopping, r.stopSig, context.Cause(ctx).Error())
		case c, ok := <-changes:
			if !ok {
				changes = nil
				continue
			}
			r.change(c)
		case sig, ok := <-sigs:
			if !ok {
				sigs = nil
				continue
			}
			r.signal(sig)
		case <-r.graceC:
			r.kill()
		case <-tick.C:
			r.reap()
		case <-r.leftC:
			r.killLeftovers()
		}
		if !r.exited {
			continue
		}
		code := StatusCode(r.status)
		r.cleanUp(code)
		r.sweep()
		if r.phase != restarting {
			r.finish(sigs, tick.C)
			return code, nil
		}
		if err := r.restart(); err != nil {
			return ExitCode(err), fmt.Errorf("restart: %w", err)
		}
	}
}

func (r *run) start() error {
	env := r.env
	if r.s.PrepareEnv != nil {
		var err error
		if env, err = r.s.PrepareEnv(env); err != nil {
			return fmt.Errorf("start %s: %w", r.s.Argv[0], err)
		}
	}
	path, err := LookPath(r.s.Argv[0], env)
	if err != nil {
		return err
	}
	files := []uintptr{r.io.files[0].Fd(), r.io.files[1].Fd(), r.io.files[2].Fd()}
	var extra []*os.File
	if r.s.ExtraFiles != nil {
		if extra, err = r.s.ExtraFiles(); err != nil {
			return fmt.Errorf("start %s: %w", r.s.Argv[0], err)
		}
		defer closeFiles(extra)
		for _, f := range extra {
			files = append(files, f.Fd())
		}
	}
	forkPath, forkArgv := path, r.s.Argv
	if r.s.Wrap != nil {
		forkPath, forkArgv = r.s.Wrap(path, r.s.Argv)
	}
	// Its own process group, so that SIGKILL reaches its descendants too and
	// a terminal's ^C reaches it rather than this process. SIGKILL when this
	// process dies, even by SIGKILL (see forker); not inherited by the
	// child's own children, which only a PID namespace's end or a cgroup
	// kill reaches then.
	sys := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if r.tty >= 0 {
		sys.Foreground, sys.Ctty = true, r.tty
	}
	// ForkExec, not os/exec: the reaper owns wait4, so nothing here may wait.
	pid, err := r.fork.forkExec(forkPath, forkArgv, &syscall.ProcAttr{Env: env, Files: files, Sys: sys})
	runtime.KeepAlive(r.io)
	runtime.KeepAlive(extra)
	if err != nil {
		return startError(path, r.s.Argv, env, err)
	}
	r.pid, r.exited = pid, false
	r.log.Info("child started", "pid", pid, "command", path)
	return nil
}

// signal handles one signal this process received.
func (r *run) signal(sig os.Signal) {
	ss, ok := sig.(syscall.Signal)
	if !ok {
		return
	}
	if ss == syscall.SIGCHLD {
		r.reap()
		return
	}
	name := SignalName(ss)
	if r.terminates(sig) {
		r.terminate(ss)
		return
	}
	if r.phase == restarting {
		// Meant for the program, not for the process on its way out: a
		// SIGHUP to reload would be lost on it.
		if !slices.Contains(r.queued, ss) {
			r.queued = append(r.queued, ss)
		}
		r.log.Debug("holding signal for the new child", "signal", name)
		return
	}
	r.log.Debug("forwarding signal", "pid", r.pid, "signal", name)
	r.send(ss)
}

// terminate handles a signal that ends the supervision. The first one asks
// the child to stop as the child wants to be asked, with StopSignal: docker
// stop, ECS and systemd send SIGTERM whatever the program's graceful stop
// is (nginx's is SIGQUIT), and ECS ignores an image's STOPSIGNAL. A child
// already sent StopSignal (a restart or a stop under way) gets nothing more
// for it. Every later one is forwarded as it is: a second ^C or SIGTERM
// during a stop says more than the first, as it would to the program run
// without paramexec.
func (r *run) terminate(sig syscall.Signal) {
	name := SignalName(sig)
	if r.terminated {
		r.log.Info("forwarding terminating signal", "pid", r.pid, "signal", name)
		r.send(sig)
		return
	}
	r.terminated = true
	if r.phase == running {
		r.log.Info("terminating signal received; asking the child to stop", "pid", r.pid, "signal", name, "stop_signal", SignalName(r.stopSig))
		r.stop(stopping, r.stopSig, "received "+name)
		return
	}
	r.log.Info("terminating signal received; the child is already stopping", "pid", r.pid, "signal", name)
	r.stop(stopping, 0, "received "+name)
}

func (r *run) change(c Change) {
	switch r.phase {
	case stopping:
		r.log.Debug("change ignored: the child is stopping", "reason", c.Reason)
		return
	case restarting:
		if r.reject(c) {
			return
		}
		r.env = slices.Clone(c.Env)
		r.addReason(c.Reason)
		r.log.Info("change joins the restart under way", "reason", c.Reason)
		return
	}
	if r.s.OnChange.Kind != Signal && r.reject(c) {
		return
	}
	switch r.s.OnChange.Kind {
	case Restart:
		r.env = slices.Clone(c.Env)
		r.reason, r.begun = "", time.Now()
		r.addReason(c.Reason)
		r.stop(restarting, r.stopSig, r.reason)
	case Exit:
		r.stop(stopping, r.stopSig, c.Reason)
	case Signal:
		r.log.Info("signalling child to reload", "pid", r.pid, "signal", SignalName(r.s.OnChange.Signal), "reason", c.Reason)
		r.send(r.s.OnChange.Signal)
	}
}

// reject reports whether the environment of c cannot start the command,
// and logs why (names and sizes, never values). It is checked before the
// child is touched: stopping a working child for an environment that
// cannot exec (over execve's limits, or a PATH that no longer leads to the
// command) would take the service down. The child keeps running and the
// environment is dropped; a later change is checked afresh.
func (r *run) reject(c Change) bool {
	err := checkStart(r.s.Argv, c.Env)
	if err == nil {
		return false
	}
	r.log.Error("new environment rejected; the child keeps running with its current one", "pid", r.pid, "reason", c.Reason, "error", err)
	r.emit(Event{Kind: Rejected, Pid: r.pid, Reason: c.Reason + ": " + err.Error()})
	return true
}

func (r *run) addReason(reason string) {
	switch {
	case reason == "" || strings.Contains(r.reason, reason):
	case r.reason == "":
		r.reason = reason
	default:
		r.reason += "; " + reason
	}
}

// stop moves to phase to (restarting or stopping), sends sig unless 0, and
// starts the grace period. A stop under way is not restarted: its grace
// period keeps running; a restart under way becomes a stop.
func (r *run) stop(to phase, sig syscall.Signal, reason string) {
	switch r.phase {
	case stopping:
		return
	case restarting:
		r.phase, r.reason = stopping, reason
		if len(r.queued) > 0 {
			r.log.Debug("dropping signals held for the new child", "count", len(r.queued))
			r.queued = nil
		}
		r.log.Info("restart abandoned; stopping", "pid", r.pid, "reason", reason)
		r.emit(Event{Kind: Stopping, Pid: r.pid, Reason: reason})
		return
	}
	r.phase, r.reason = to, reason
	if sig != 0 {
		r.send(sig)
	}
	r.stopBy = time.Now().Add(max(r.grace, 0))
	r.timer = time.NewTimer(max(r.grace, 0))
	r.graceC = r.timer.C
	kind, msg := Stopping, "stopping child"
	if to == restarting {
		kind, msg = RestartBegun, "restart begun"
	}
	attrs := []any{"pid", r.pid, "reason", reason}
	if sig != 0 {
		attrs = append(attrs, "signal", SignalName(sig))
	}
	r.log.Info(msg, attrs...)
	r.emit(Event{Kind: kind, Pid: r.pid, Reason: reason, Signal: sig})
}

// kill ends a grace period that ran out.
func (r *run) kill() {
	r.graceC = nil
	r.log.Warn("child still running after the grace period; killing its process group", "pid", r.pid, "grace", max(r.grace, 0))
	r.killGroup()
	// The child may have left its group (setsid); it is killed all the same.
	r.send(syscall.SIGKILL)
	r.emit(Event{Kind: Killed, Pid: r.pid})
}

func (r *run) reap() {
	onExit := func(pid int, ws syscall.WaitStatus) {
		if pid != r.pid || r.exited {
			r.log.Debug("reaped orphan", "pid", pid, "code", StatusCode(ws))
			return
		}
		r.exited, r.status, r.exitAt = true, ws, time.Now()
	}
	if r.s.Reap != nil {
		r.s.Reap(onExit)
		return
	}
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(r.pid, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err == nil && pid == r.pid {
			onExit(pid, ws)
		}
		return
	}
}

// cleanUp follows the reaping of the current child.
func (r *run) cleanUp(code int) {
	if r.timer != nil {
		r.timer.Stop()
		r.timer, r.graceC = nil, nil
	}
	// What the child left in its process group dies with it: restarts must
	// not pile up generations of grandchildren, and nothing should outlive
	// Run. The group id cannot have been reused yet: a pid stays allocated
	// while its group has members.
	r.killGroup()
	r.log.Info("child exited", "pid", r.pid, "code", code)
	r.emit(Event{Kind: Exited, Pid: r.pid, Code: code})
}

// sweep follows cleanUp: what the child left outside its process group
// (setsid daemons, double-forked helpers) is found among this process's
// descendants, where a subreaper or PID 1 has them. At this moment, the
// old child gone and no new one started, every descendant belongs to the
// generation that just ended. They get the stop signal now and SIGKILL
// after the grace period, while the new child runs: a restart replaces the
// whole generation, long-lived daemons included.
func (r *run) sweep() {
	procs := descendantsOutside(r.pid, os.Getpid())
	if len(procs) == 0 {
		return
	}
	grace := max(r.grace, 0)
	deadline := time.Now().Add(grace)
	if r.phase == stopping && !r.stopBy.IsZero() && r.stopBy.Before(deadline) {
		// Stopping for good, the grace is the stop's, for the whole
		// generation: an orchestrator's own timeout (docker stop's 10 s)
		// is counted from the same signal.
		deadline = r.stopBy
		grace = max(time.Until(deadline), 0)
	}
	l := leftovers{procs: procs, deadline: deadline}
	r.log.Info("stopping what the child left outside its process group", "pids", l.pids(), "signal", SignalName(r.stopSig), "grace", grace)
	for _, p := range procs {
		p.signal(r.stopSig)
	}
	r.left = append(r.left, l)
	r.armLeftovers()
}

// killLeftovers SIGKILLs the leftovers whose grace period is over.
func (r *run) killLeftovers() {
	now := time.Now()
	for len(r.left) > 0 && !r.left[0].deadline.After(now) {
		l := r.left[0]
		r.left = r.left[1:]
		if l.prune() {
			r.log.Warn("leftovers still running after the grace period; killing them", "pids", l.pids())
			l.kill()
		}
	}
	r.armLeftovers()
}

func (r *run) armLeftovers() {
	if r.leftT != nil {
		r.leftT.Stop()
		r.leftT, r.leftC = nil, nil
	}
	if len(r.left) > 0 {
		r.leftT = time.NewTimer(time.Until(r.left[0].deadline))
		r.leftC = r.leftT.C
	}
}

// finishBound caps the last sweep of finish: SIGKILL cannot be refused, so
// only a process forking as fast as it is killed would last that long.
const finishBound = 2 * time.Second

// finish ends Run once the last child has exited: the leftovers get the
// rest of their grace period (a terminating signal cuts it short), then
// whatever is still below this process is SIGKILLed, so that nothing this
// process started or adopted outlives it.
func (r *run) finish(sigs <-chan os.Signal, tick <-chan time.Time) {
	for len(r.left) > 0 {
		select {
		case <-r.leftC:
			r.killLeftovers()
		case sig, ok := <-sigs:
			switch {
			case !ok:
				sigs = nil
			case sig == syscall.SIGCHLD:
				r.reap()
			case r.terminates(sig):
				r.log.Info("terminating signal received; killing the leftovers now", "signal", sig.String())
				for _, l := range r.left {
					l.kill()
				}
			}
		case <-tick:
			r.reap()
		}
		for i := range r.left {
			r.left[i].prune()
		}
		r.left = slices.DeleteFunc(r.left, func(l leftovers) bool { return len(l.procs) == 0 })
	}
	r.armLeftovers()
	deadline := time.Now().Add(finishBound)
	for {
		procs := descendants(os.Getpid())
		if len(procs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			r.log.Warn("descendants still running at exit", "count", len(procs))
			return
		}
		for _, p := range procs {
			p.signal(syscall.SIGKILL)
		}
		// SIGKILL takes effect when the process next runs: give it the CPU.
		time.Sleep(5 * time.Millisecond)
		r.reap()
	}
}

func (r *run) restart() error {
	if err := r.start(); err != nil {
		return err
	}
	now := time.Now()
	for _, sig := range r.queued {
		r.send(sig)
	}
	r.queued = nil
	r.phase = running
	took, gap := now.Sub(r.begun), now.Sub(r.exitAt)
	r.log.Info("restart finished", "pid", r.pid, "reason", r.reason, "took", took, "gap", gap)
	r.emit(Event{Kind: Restarted, Pid: r.pid, Took: took, Gap: gap, Reason: r.reason})
	return nil
}

func (r *run) send(sig syscall.Signal) {
	if r.pid <= 1 { // kill(0) and kill(-1) mean far more than one child
		return
	}
	if err := syscall.Kill(r.pid, sig); err != nil && err != syscall.ESRCH {
		r.log.Warn("cannot signal child", "pid", r.pid, "signal", SignalName(sig), "error", err)
	}
}

func (r *run) killGroup() {
	if r.pid <= 1 {
		return
	}
	if err := syscall.Kill(-r.pid, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		r.log.Warn("cannot kill the child's process group", "pgid", r.pid, "error", err)
	}
}

func (r *run) restoreTTY() {
	if err := takeForeground(r.tty); err != nil {
		r.log.Warn("cannot take the terminal back", "error", err)
	}
}

func (r *run) emit(e Event) {
	if r.s.OnEvent != nil {
		r.s.OnEvent(e)
	}
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
