package exec

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// NoGrace as Supervisor.Grace sends SIGKILL right after the stop signal.
// Zero is not it: a zero Supervisor gets the default grace.
const NoGrace time.Duration = -1

// exitNotReady is Run's code when a child whose failure ends the run (the
// first one, or the last good one after a rollback) is not ready within
// ReadyTimeout. It is one of paramexec's documented exit codes.
const exitNotReady = 4

const (
	defaultGrace        = 10 * time.Second
	defaultReadyTimeout = 60 * time.Second
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
	// RestartBegun: a change asked for a restart; the stop signal follows
	// (at once, or after Handover).
	RestartBegun
	// Restarted: the new child of a restart has started and passed its
	// verification: Supervisor.Ready said it is ready, and it has lived
	// RollbackWindow. Without either, that is when it started.
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
	// Ready: a child whose failure ends Run (the first one, or the one
	// started with the last good environment after a rollback) is ready.
	// Without Supervisor.Ready it follows Started at once.
	Ready
	// RolledBack: the child started for a change failed; Changed names
	// what that change had changed, Reason says how it failed. A child with
	// the last good environment starts next (Ready when it is ready); in
	// Overlap, the old child serves on (Ready, Reason "rolled back").
	RolledBack
	// OverlapBegun (Overlap): the new child of a change has started while
	// the old one serves; Pid is the new one.
	OverlapBegun
	// Draining (Overlap): the old child was sent the stop signal, after
	// the new one became current (Restarted) or was rejected (RolledBack);
	// Pid is the old one, which has Grace to finish.
	Draining
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
	case Ready:
		return "ready"
	case RolledBack:
		return "rolled back"
	case OverlapBegun:
		return "overlap begun"
	case Draining:
		return "draining"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// RestartMode says how a change replaces the child.
type RestartMode int

const (
	// StopFirst stops the old child, then starts the new one.
	StopFirst RestartMode = iota
	// Overlap starts the new child while the old one serves, and stops the
	// old one once the new one is ready (Supervisor.Ready, required).
	Overlap
)

// Event reports a step of the child's lifecycle to Supervisor.OnEvent.
type Event struct {
	Kind EventKind
	Pid  int // the child concerned; for Restarted, the new one
	// Took, for Restarted: from the change that asked for it to the new
	// child being ready; for Ready after a rollback, from the decision to
	// roll back to the restored child being ready.
	Took time.Duration
	// Gap, for Restarted: from the old child's exit to the new child's
	// start, the time nothing ran; 0 in Overlap.
	Gap time.Duration
	// ReadyAfter, for Ready and Restarted: from the child's start to its
	// being ready; 0 without Supervisor.Ready.
	ReadyAfter time.Duration
	Reason     string         // RestartBegun, Restarted, Stopping, RolledBack: why
	Signal     syscall.Signal // RestartBegun, Stopping: the signal sent, 0 if none was
	Code       int            // Exited: the child's code as a shell reports it (128+n for signal n); RolledBack: the failed child's, -1 if it did not exit by itself
	Changed    []string       // RolledBack: the variables the rejected change had changed, names only
}

// Supervisor runs a command as a child process and stays its parent: it
// forwards signals to it, restarts it with a new environment when asked,
// and stops it with a grace period. Its fields must not change during Run.
// It knows nothing of where the environment comes from: callers hand it
// complete "K=V" lists.
type Supervisor struct {
	Argv       []string
	OnChange   Action
	Grace      time.Duration  // before SIGKILL; 10s when 0, none when NoGrace (any negative)
	StopSignal syscall.Signal // asks the child to stop; SIGTERM when 0
	Log        *slog.Logger   // nil: discard
	// Reap collects exited children and reports each (signals.Reap, which
	// takes orphans too). Run calls it on SIGCHLD and on a slow tick.
	// Required: Run never waits for its child in a goroutine of its own,
	// so that a single loop owns wait4(-1) and reaps orphans there too.
	Reap func(onExit func(pid int, status syscall.WaitStatus))
	// OnEvent, if set, is called from Run's goroutine and must return soon.
	OnEvent func(Event)
	// Ready, if set, says when a child is ready to serve. Run calls it on a
	// goroutine of its own for each child it starts, with the child's pid
	// and a ctx that ends ReadyTimeout after the start, when the child
	// exits, or when Run returns; it must return soon after ctx ends: nil
	// once the child is ready, else why not (names and addresses only, it
	// is logged). Run waits for it before returning. nil: a child is ready
	// when it has started.
	Ready func(ctx context.Context, pid int) error
	// ReadyTimeout bounds the wait for Ready; 60s when 0.
	ReadyTimeout time.Duration
	// RollbackWindow: a child started for a change that exits within this
	// long of its start counts as failed; 0 means only Ready decides.
	RollbackWindow time.Duration
	// Rollback: a child started for a change that fails (exits before it
	// is verified, see Restarted, or is not ready within ReadyTimeout) is
	// replaced by a child with the last environment whose child was ready,
	// and that failed environment is never tried again. Without it, such a
	// failure ends Run as a first child's would.
	Rollback bool
	// Restart says how a change replaces the child (OnChange Restart):
	// StopFirst, or Overlap, which needs Ready. See overlap.go.
	Restart RestartMode
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
	// Handover, if set, is called from Run's goroutine when a child is to
	// be replaced for a change (after RestartBegun, or after Restarted in
	// an overlap), with its pid, and must return soon. The child gets its
	// stop signal once the returned channel is closed, or Grace later: a
	// proxy closes it once everything it sent the child has been
	// answered, so that no connection meets a server that is stopping.
	// It is not called for a stop: a terminating signal goes on at once.
	Handover func(pid int) <-chan struct{}
}

// Run starts the child with env and supervises it until it exits. It returns
// the child's statusCode when the child exits on its own (it never restarts
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
// With Ready, a child is judged (see phase): the first one that is not
// ready within ReadyTimeout is stopped and Run returns exitNotReady. A
// change is held while the child is not yet ready; the child started for a
// change is verified (Ready, RollbackWindow), and when it fails, Rollback
// starts the last good environment again and never retries the failed one
// (see change). A change to the environment running now is no change.
//
// With Restart Overlap, the new child starts while the old one serves,
// and the old one is stopped once the new one is verified; a new child
// that fails is stopped and the old one serves on (see overlap.go for the
// states, and for who gets which signal meanwhile).
//
// Run returns an error only when a child could not be started, at first or
// on a restart, with ExitCode(err) as the code (126, 127), or when the
// Supervisor is misconfigured (2). When ctx is done before the first start,
// it starts nothing and returns 1 and ctx's error. When Run returns, no
// child of it is running and nothing is left in the last child's process
// group, nor below this process: what a child left outside its group (see
// sweep) got the stop signal and Grace, then SIGKILL.
func (s *Supervisor) Run(ctx context.Context, env []string, changes <-chan Change, sigs <-chan os.Signal) (int, error) {
	if len(s.Argv) == 0 {
		return ExitCode(errNotFound), fmt.Errorf("supervise: empty command: %w", errNotFound)
	}
	if s.OnChange.Kind == Signal && s.OnChange.Signal == 0 {
		return 2, errors.New("supervise: on-change signal without a signal")
	}
	if s.Restart == Overlap && s.Ready == nil {
		return 2, errors.New("supervise: overlap restarts need a readiness check")
	}
	if s.Reap == nil {
		return 2, errors.New("supervise: no reaper")
	}
	if err := ctx.Err(); err != nil {
		return 1, fmt.Errorf("supervise %s: not started: %w", s.Argv[0], err)
	}
	r := &run{
		s:        s,
		log:      s.Log,
		grace:    s.Grace,
		stopSig:  s.StopSignal,
		next:     slices.Clone(env),
		tty:      -1,
		exitCode: -1,
		rejected: make(map[envHash]bool),

		readyTimeout: s.ReadyTimeout,
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
	if r.readyTimeout <= 0 {
		r.readyTimeout = defaultReadyTimeout
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

// phase names the state of a run. Every transition happens on Run's
// goroutine; readiness answers and timers come to it by channel.
type phase int

const (
	// starting: the child is not yet ready, and its failure ends Run: the
	// first child, or the one with the last good environment after a
	// rollback (that environment no longer working is not the change's
	// fault; the orchestrator is better placed to act).
	starting phase = iota
	running        // the child is ready; changes restart it
	// restarting: the old child was asked to stop for a change; the new one
	// starts when it has exited (stop-first). With Handover, the stop
	// signal waits for Handover's channel, at most Grace.
	restarting
	// verifying: the child started for a change is not yet ready, or not
	// yet past RollbackWindow; its failure is a rollback (see Rollback).
	verifying
	// rollingBack: the failed child of a change was asked to stop; the last
	// good environment starts when it has exited.
	rollingBack
	// overlapping (Overlap): the old child (run.old) serves, the new one
	// (run.cur) is not yet verified; its failure is a rollback without a
	// gap: it is stopped and the old one carries on.
	overlapping
	// draining (Overlap): run.cur serves, the new child after the switch,
	// or the old one again after the new one was rejected (the rejected
	// one is then run.old); run.old has the stop signal and Grace. After a
	// switch with Handover, run.old first finishes what was sent to it:
	// its stop signal waits for Handover's channel, at most Grace. Changes
	// are held until run.old has exited.
	draining
	stopping // stop asked; Run returns when every child has exited
)

func (p phase) String() string {
	switch p {
	case starting:
		return "starting"
	case running:
		return "running"
	case restarting:
		return "restarting"
	case verifying:
		return "verifying"
	case rollingBack:
		return "rolling back"
	case overlapping:
		return "overlapping"
	case draining:
		return "draining"
	case stopping:
		return "stopping"
	}
	return fmt.Sprintf("phase(%d)", int(p))
}

// childStopping reports whether the current child was already asked to stop.
func (p phase) childStopping() bool {
	return p == restarting || p == rollingBack || p == stopping
}

// child is the record of one child process. There is one at a time
// (stop-first), or two during an overlap (run.cur and run.old); each answer
// about a child names its generation, so that an answer about another one
// is recognised and dropped.
type child struct {
	gen     int
	pid     int    // also its process group
	tick    uint64 // its start time in clock ticks since boot (/proc), 0 if unknown
	env     []string
	hash    envHash
	started time.Time
	ready   bool // Ready said so (or there is no Ready)
	readyAt time.Time
	lived   bool // past RollbackWindow
	exited  bool // it has been reaped
	status  syscall.WaitStatus
	exitAt  time.Time
	cancel  context.CancelFunc // ends its readiness check; nil if none
	stopAt  time.Time          // when it was asked to stop, if it was
	dropped bool               // the new child of an overlap, rejected
	timer   *time.Timer        // its grace period under way
	graceC  <-chan time.Time   // timer.C while the grace period runs, else nil
	// A child replaced for a change, before its stop signal (see
	// restarting, draining): handedOver is Handover's channel, handoverC
	// ends the wait for it, heldSig is the signal then sent.
	handedOver <-chan struct{}
	handoverT  *time.Timer
	handoverC  <-chan time.Time
	heldSig    syscall.Signal
}

// readyAnswer is what Supervisor.Ready said about the child of gen.
type readyAnswer struct {
	gen int
	err error
}

// run is the state of one Run, owned by its goroutine.
type run struct {
	s            *Supervisor
	log          *slog.Logger
	grace        time.Duration
	stopSig      syscall.Signal
	readyTimeout time.Duration
	io           *stdio
	fork         *forker
	tty          int // the terminal each child gets as foreground, or -1

	ctx      context.Context // ends when Run returns: readiness checks use it
	answers  chan readyAnswer
	quit     chan struct{} // closed when the loop ends: checks stop sending
	checking sync.WaitGroup

	phase      phase
	terminated bool             // a terminating signal was received
	cur        child            // the current child
	old        *child           // the other child during an overlap (see overlapping, draining), else nil
	overlapAt  time.Time        // when the overlap under way began
	gen        int              // the last generation started
	next       []string         // the next child's environment
	good       []string         // the last environment whose child was ready
	rejected   map[envHash]bool // environments whose child failed
	pending    *Change          // a change held until the child is ready
	pendingAt  time.Time        // when the first change of pending came
	reason     string           // why the restart or stop under way
	begun      time.Time        // when the restart under way was asked for
	lastExit   time.Time        // when the previous child exited
	rolledAt   time.Time        // when the rollback under way was decided
	exitCode   int              // when ≥ 0, Run's code instead of the child's
	queued     []syscall.Signal // held for the next child, each once, in order
	windowT    *time.Timer      // RollbackWindow of a verifying child
	windowC    <-chan time.Time // windowT.C, or nil

	stopBy time.Time        // when the grace period of the last stop ends
	left   []leftovers      // earlier generations' leftovers, by deadline
	leftT  *time.Timer      // the first deadline of left
	leftC  <-chan time.Time // leftT.C, or nil
}

func (r *run) loop(ctx context.Context, changes <-chan Change, sigs <-chan os.Signal) (int, error) {
	var cancel context.CancelFunc
	r.ctx, cancel = context.WithCancel(ctx)
	r.answers, r.quit = make(chan readyAnswer), make(chan struct{})
	defer r.checking.Wait()
	defer cancel()
	defer close(r.quit)

	if err := r.launch(r.next, starting); err != nil {
		return ExitCode(err), fmt.Errorf("supervise: %w", err)
	}
	r.emit(Event{Kind: Started, Pid: r.cur.pid})
	r.settle()
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
		case a := <-r.answers:
			r.answered(a)
		case <-r.windowC:
			r.windowC = nil
			if r.phase == verifying || r.phase == overlapping {
				r.cur.lived = true
				r.settle()
			}
		case <-r.cur.graceC:
			r.kill(&r.cur)
		case <-r.oldGrace():
			r.kill(r.old)
		case <-r.cur.handedOver:
			r.handedOver(&r.cur)
		case <-r.cur.handoverC:
			r.handedOver(&r.cur)
		case <-r.oldHandedOver():
			r.handedOver(r.old)
		case <-r.oldHandoverTimeout():
			r.handedOver(r.old)
		case <-tick.C:
			r.reap()
		case <-r.leftC:
			r.killLeftovers()
		}
		if r.old != nil && r.old.exited {
			r.oldExited()
		}
		if !r.cur.exited {
			continue
		}
		code := statusCode(r.cur.status)
		if r.old != nil {
			r.curExitedFirst(code)
			continue
		}
		r.cleanUp(&r.cur, code)
		r.sweep(&r.cur, nil)
		var err error
		switch r.phase {
		case restarting:
			err = r.restart()
		case verifying:
			if !r.s.Rollback {
				break
			}
			r.rollBack(code, fmt.Sprintf("exit code %d", code))
			err = r.launch(r.good, starting)
		case rollingBack:
			err = r.launch(r.good, starting)
		}
		if err != nil {
			return ExitCode(err), fmt.Errorf("restart: %w", err)
		}
		if !r.cur.exited {
			r.settle()
			continue
		}
		if r.exitCode >= 0 {
			code = r.exitCode
		}
		r.finish(sigs, tick.C)
		return code, nil
	}
}

// launch starts a child with env in phase to (starting or verifying),
// with its readiness check and, when verifying, its rollback window.
func (r *run) launch(env []string, to phase) error {
	r.next = env
	if err := r.start(); err != nil {
		return err
	}
	r.phase = to
	for _, sig := range r.queued {
		r.send(sig)
	}
	r.queued = nil
	c := &r.cur
	if r.s.Ready == nil {
		c.ready, c.readyAt = true, c.started
	} else {
		ctx, cancel := context.WithTimeout(r.ctx, r.readyTimeout)
		c.cancel = cancel
		gen, pid := c.gen, c.pid
		r.checking.Go(func() {
			err := r.s.Ready(ctx, pid)
			select {
			case r.answers <- readyAnswer{gen, err}:
			case <-r.quit:
			}
		})
	}
	if (to == verifying || to == overlapping) && r.s.RollbackWindow > 0 {
		r.windowT = time.NewTimer(r.s.RollbackWindow)
		r.windowC = r.windowT.C
	} else {
		c.lived = true
	}
	return nil
}

// answered takes Ready's answer about a child.
func (r *run) answered(a readyAnswer) {
	c := &r.cur
	if a.gen != c.gen || c.exited || c.ready || r.ctx.Err() != nil {
		return // about an earlier child, or Run is ending and cut it short
	}
	if r.phase != starting && r.phase != verifying && r.phase != overlapping {
		return // the child is stopping: its readiness no longer matters
	}
	if a.err == nil {
		c.ready, c.readyAt = true, time.Now()
		r.settle()
		return
	}
	after := time.Since(c.started).Round(time.Millisecond)
	if r.phase == overlapping && r.s.Rollback {
		r.rollBack(-1, "not ready: "+a.err.Error())
		r.dropNew()
		return
	}
	if r.phase == verifying && r.s.Rollback {
		r.rollBack(-1, "not ready: "+a.err.Error())
		r.stop(rollingBack, r.stopSig, "not ready")
		return
	}
	r.log.Error("child not ready in time; stopping it", "pid", c.pid, "after", after, "error", a.err)
	r.exitCode = exitNotReady
	r.stop(stopping, r.stopSig, "not ready within "+r.readyTimeout.String())
}

// settle moves a child that has passed its checks on to running: it
// becomes the last known good, and a change held meanwhile is applied.
func (r *run) settle() {
	c := &r.cur
	if !c.ready || !c.lived {
		return
	}
	readyAfter := c.readyAt.Sub(c.started)
	switch r.phase {
	case starting:
		e := Event{Kind: Ready, Pid: c.pid, ReadyAfter: readyAfter}
		switch {
		case !r.rolledAt.IsZero():
			e.Reason, e.Took = "rolled back", c.readyAt.Sub(r.rolledAt)
			r.log.Info("rollback finished", "pid", c.pid, "took", e.Took, "ready_after", readyAfter)
			r.rolledAt = time.Time{}
		case r.s.Ready != nil:
			r.log.Info("child ready", "pid", c.pid, "ready_after", readyAfter)
		}
		r.emit(e)
	case verifying:
		took, gap := c.readyAt.Sub(r.begun), c.started.Sub(r.lastExit)
		attrs := []any{"pid", c.pid, "reason", r.reason, "took", took, "gap", gap}
		if r.s.Ready != nil {
			attrs = append(attrs, "ready_after", readyAfter)
		}
		if r.s.RollbackWindow > 0 {
			attrs = append(attrs, "lived", r.s.RollbackWindow)
		}
		r.log.Info("restart finished", attrs...)
		r.emit(Event{Kind: Restarted, Pid: c.pid, Took: took, Gap: gap, ReadyAfter: readyAfter, Reason: r.reason})
	case overlapping:
		r.switchOver()
		return
	default:
		return
	}
	r.phase = running
	r.good = c.env
	r.applyPending()
}

// applyPending applies the change held while the child was not ready, or
// while two children lived.
func (r *run) applyPending() {
	if p := r.pending; p != nil {
		r.pending = nil
		r.change(*p)
		// Used as the restart's begun if it restarted; a change dropped
		// (rejected, or no change) must not date the next one.
		r.pendingAt = time.Time{}
	}
}

// rollBack records that the child of a change failed (code: its exit code,
// or -1 when it did not exit by itself): its environment is rejected for
// good, and the last good one is to start next.
func (r *run) rollBack(code int, failure string) {
	c := &r.cur
	names := changedNames(r.good, c.env)
	r.rejected[c.hash] = true
	attrs := []any{"pid", c.pid, "changed", names, "after", time.Since(c.started).Round(time.Millisecond)}
	if code >= 0 {
		attrs = append(attrs, "exit_code", code)
	} else {
		attrs = append(attrs, "not_ready", strings.TrimPrefix(failure, "not ready: "))
	}
	r.log.Error("change rejected; rolling back", attrs...)
	r.rolledAt = time.Now()
	r.emit(Event{Kind: RolledBack, Pid: c.pid, Code: code, Changed: names, Reason: failure})
}

func (r *run) start() error {
	// PrepareEnv's additions (a proxy port) are this start's alone: the
	// child record keeps r.next, so that environments compare by what the
	// sources gave.
	env := r.next
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
	r.gen++
	r.cur = child{gen: r.gen, pid: pid, env: r.next, hash: hashEnv(r.next), started: time.Now()}
	// Unreaped, it is in /proc even if it has exited already.
	if _, tick, _, ok := procStat(pid); ok {
		r.cur.tick = tick
	}
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
	name := signalName(ss)
	if terminates(sig) {
		r.terminate(ss)
		return
	}
	if r.phase == restarting || r.phase == rollingBack {
		// Meant for the program, not for the process on its way out: a
		// SIGHUP to reload would be lost on it.
		if !slices.Contains(r.queued, ss) {
			r.queued = append(r.queued, ss)
		}
		r.log.Debug("holding signal for the new child", "signal", name)
		return
	}
	switch {
	case r.phase == overlapping:
		// The serving child gets it now; the new one when it takes over,
		// ready by then to take a SIGHUP as the program does (a booting
		// process may die of it).
		r.log.Debug("forwarding signal to the serving child; holding it for the new one", "pid", r.old.pid, "signal", name)
		signalPid(r.log, r.old.pid, ss)
		if !slices.Contains(r.queued, ss) {
			r.queued = append(r.queued, ss)
		}
		return
	case r.phase == stopping && r.old != nil:
		signalPid(r.log, r.old.pid, ss)
	}
	// draining: the old child is on its way out, as in restarting.
	r.log.Debug("forwarding signal", "pid", r.cur.pid, "signal", name)
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
	name := signalName(sig)
	if r.terminated {
		r.log.Info("forwarding terminating signal", "pid", r.cur.pid, "signal", name)
		r.send(sig)
		if r.old != nil {
			signalPid(r.log, r.old.pid, sig)
		}
		return
	}
	r.terminated = true
	if !r.phase.childStopping() || r.cur.handedOver != nil {
		r.log.Info("terminating signal received; asking the child to stop", "pid", r.cur.pid, "signal", name, "stop_signal", signalName(r.stopSig))
		r.stop(stopping, r.stopSig, "received "+name)
		return
	}
	r.log.Info("terminating signal received; the child is already stopping", "pid", r.cur.pid, "signal", name)
	r.stop(stopping, 0, "received "+name)
}

func (r *run) change(c Change) {
	restart := r.s.OnChange.Kind == Restart
	switch {
	case r.phase == stopping:
		r.log.Debug("change ignored: the child is stopping", "reason", c.Reason)
		return
	case restart && r.rejected[hashEnv(c.Env)]:
		// Only a different set of values is worth a try: the same one
		// failed already, and would fail the same way on every poll.
		r.log.Info("change ignored: environment was rejected", "reason", c.Reason)
		return
	case r.phase == restarting:
		if r.reject(c) {
			return
		}
		r.next = slices.Clone(c.Env)
		r.addReason(c.Reason)
		r.log.Info("change joins the restart under way", "reason", c.Reason)
		return
	case restart && r.phase != running:
		// The child is not ready yet (or a rollback is under way): what it
		// is to be judged on must not move. The newest change waits.
		if r.pending != nil {
			c.Reason = joinReasons(r.pending.Reason, c.Reason)
		} else {
			r.pendingAt = time.Now()
		}
		r.pending = &Change{Env: slices.Clone(c.Env), Reason: c.Reason}
		r.log.Info("change held until the child is ready", "pid", r.cur.pid, "state", r.phase.String(), "reason", c.Reason)
		return
	case restart && hashEnv(c.Env) == r.cur.hash:
		// A change back to the values running now, after a rollback.
		r.log.Info("no change: the child runs with this environment already", "reason", c.Reason)
		return
	}
	if r.s.OnChange.Kind != Signal && r.reject(c) {
		return
	}
	switch r.s.OnChange.Kind {
	case Restart:
		r.next = slices.Clone(c.Env)
		r.reason, r.begun = "", time.Now()
		if !r.pendingAt.IsZero() {
			r.begun, r.pendingAt = r.pendingAt, time.Time{}
		}
		r.addReason(c.Reason)
		if r.s.Restart == Overlap {
			r.overlap()
			return
		}
		r.stop(restarting, r.stopSig, r.reason)
	case Exit:
		r.stop(stopping, r.stopSig, c.Reason)
	case Signal:
		r.log.Info("signalling child to reload", "pid", r.cur.pid, "signal", signalName(r.s.OnChange.Signal), "reason", c.Reason)
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
	r.log.Error("new environment rejected; the child keeps running with its current one", "pid", r.cur.pid, "reason", c.Reason, "error", err)
	r.emit(Event{Kind: Rejected, Pid: r.cur.pid, Reason: c.Reason + ": " + err.Error()})
	return true
}

func (r *run) addReason(reason string) { r.reason = joinReasons(r.reason, reason) }

func joinReasons(a, b string) string {
	switch {
	case b == "" || strings.Contains(a, b):
		return a
	case a == "":
		return b
	}
	return a + "; " + b
}

// stop moves to phase to (restarting, rollingBack or stopping), sends sig
// unless 0, and starts the grace period. A stop under way is not
// restarted: its grace period keeps running; a restart or rollback under
// way becomes a stop.
func (r *run) stop(to phase, sig syscall.Signal, reason string) {
	switch r.phase {
	case stopping:
		return
	case restarting, rollingBack:
		r.phase, r.reason = stopping, reason
		if len(r.queued) > 0 {
			r.log.Debug("dropping signals held for the new child", "count", len(r.queued))
			r.queued = nil
		}
		r.log.Info(r.phase.String()+" abandoned; stopping", "pid", r.cur.pid, "reason", reason)
		r.emit(Event{Kind: Stopping, Pid: r.cur.pid, Reason: reason})
		if r.cur.handedOver != nil {
			// Still handing over: not asked to stop yet.
			sig := r.cur.heldSig
			r.cur.endHandover()
			r.askToStop(sig)
		}
		return
	case overlapping, draining:
		// Both stop: the serving child as it would have alone, the new
		// one that is to serve nothing now; in draining, the old child if
		// it was not asked already (a handover under way).
		r.queued = nil
		r.stopOld(sig, reason)
	}
	r.phase, r.reason = to, reason
	kind, msg := Stopping, "stopping child"
	switch to {
	case restarting:
		kind, msg = RestartBegun, "restart begun"
	case rollingBack:
		// RolledBack was reported already.
		kind, msg = 0, "stopping the rejected child"
	}
	attrs := []any{"pid", r.cur.pid, "reason", reason}
	if sig != 0 {
		attrs = append(attrs, "signal", signalName(sig))
	}
	r.log.Info(msg, attrs...)
	// Reported before the stop signal: a proxy holds new connections
	// from now on, rather than send them to a child that stops accepting.
	if kind != 0 {
		r.emit(Event{Kind: kind, Pid: r.cur.pid, Reason: reason, Signal: sig})
	}
	if to == restarting && r.holdStop(&r.cur, sig) {
		return
	}
	r.askToStop(sig)
}

// askToStop sends the current child sig, unless 0, and starts its grace
// period.
func (r *run) askToStop(sig syscall.Signal) {
	if sig != 0 {
		r.send(sig)
	}
	r.stopBy = time.Now().Add(max(r.grace, 0))
	r.cur.stopAt = time.Now()
	r.cur.timer = time.NewTimer(max(r.grace, 0))
	r.cur.graceC = r.cur.timer.C
}

// kill ends c's grace period that ran out.
func (r *run) kill(c *child) {
	c.graceC = nil
	r.log.Warn("child still running after the grace period; killing its process group", "pid", c.pid, "grace", max(r.grace, 0))
	killGroup(r.log, c.pid)
	// The child may have left its group (setsid); it is killed all the same.
	signalPid(r.log, c.pid, syscall.SIGKILL)
	r.emit(Event{Kind: Killed, Pid: c.pid})
}

func (r *run) reap() {
	onExit := func(pid int, ws syscall.WaitStatus) {
		c := &r.cur
		if r.old != nil && pid == r.old.pid {
			c = r.old
		}
		if pid != c.pid || c.exited {
			r.log.Debug("reaped orphan", "pid", pid, "code", statusCode(ws))
			return
		}
		c.exited, c.status, c.exitAt = true, ws, time.Now()
	}
	r.s.Reap(onExit)
}

// terminates reports whether sig, once forwarded, shuts the supervisor down:
// SIGTERM (docker stop, systemd, Kubernetes) and SIGINT.
func terminates(sig os.Signal) bool {
	return sig == syscall.SIGTERM || sig == syscall.SIGINT
}

// cleanUp follows the reaping of child c, the current one (and then the
// only one) unless stated otherwise.
func (r *run) cleanUp(c *child, code int) {
	if c.timer != nil {
		c.timer.Stop()
		c.timer, c.graceC = nil, nil
	}
	c.endHandover()
	if c == &r.cur && r.windowT != nil {
		r.windowT.Stop()
		r.windowT, r.windowC = nil, nil
	}
	if c.cancel != nil {
		c.cancel()
	}
	r.lastExit = c.exitAt
	// What the child left in its process group dies with it: restarts must
	// not pile up generations of grandchildren, and nothing should outlive
	// Run. The group id cannot have been reused yet: a pid stays allocated
	// while its group has members.
	killGroup(r.log, c.pid)
	if c != &r.cur {
		attrs := []any{"pid", c.pid, "code", code, "overlap", c.exitAt.Sub(r.overlapAt).Round(time.Millisecond)}
		if !c.stopAt.IsZero() {
			attrs = append(attrs, "drained", c.exitAt.Sub(c.stopAt).Round(time.Millisecond))
		}
		msg := "old child exited"
		if c.dropped {
			msg = "rejected child exited"
		}
		r.log.Info(msg, attrs...)
	} else {
		r.log.Info("child exited", "pid", c.pid, "code", code)
	}
	r.emit(Event{Kind: Exited, Pid: c.pid, Code: code})
}

// sweep follows cleanUp of child ended: what it left outside its process
// group (setsid daemons, double-forked helpers) is found among this
// process's descendants, where a subreaper or PID 1 has them. With no other
// child living (stop-first: the old child gone, no new one started yet),
// every descendant belongs to the generation that just ended. They get the
// stop signal now and SIGKILL after the grace period, while the new child
// runs: a restart replaces the whole generation, long-lived daemons
// included.
//
// With another child living (an overlap), a process that started after
// the living child did may be the living one's (its own descendants, or a
// daemon it left its group for) as well as the ended one's: nothing tells
// them apart, so it is left alone, and swept with the living generation
// when that one ends, or at exit. What started before the living child is
// the ended generation's (or an earlier one's) for sure.
func (r *run) sweep(ended, living *child) {
	procs := descendantsOutside(ended.pid, os.Getpid())
	if living != nil {
		procs = slices.DeleteFunc(procs, func(p proc) bool { return living.tick == 0 || p.start >= living.tick })
		r.log.Debug("sweep with a child living: what started after it is left to its generation", "pid", ended.pid, "living", living.pid)
	}
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
	r.log.Info("stopping what the child left outside its process group", "pids", l.pids(), "signal", signalName(r.stopSig), "grace", grace)
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
			case terminates(sig):
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

// restart starts the child of a change once the old one has exited.
func (r *run) restart() error {
	return r.launch(r.next, verifying)
}

// send signals the current child.
func (r *run) send(sig syscall.Signal) { signalPid(r.log, r.cur.pid, sig) }

func signalPid(log *slog.Logger, pid int, sig syscall.Signal) {
	if pid <= 1 { // kill(0) and kill(-1) mean far more than one child
		return
	}
	if err := syscall.Kill(pid, sig); err != nil && err != syscall.ESRCH {
		log.Warn("cannot signal child", "pid", pid, "signal", signalName(sig), "error", err)
	}
}

func killGroup(log *slog.Logger, pgid int) {
	if pgid <= 1 {
		return
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		log.Warn("cannot kill the child's process group", "pgid", pgid, "error", err)
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

// envHash identifies an environment without keeping its values: rejected
// environments are remembered for the life of Run.
type envHash [sha256.Size]byte

// hashEnv hashes env in sorted order: the same variables in another order
// are the same environment.
func hashEnv(env []string) envHash {
	sorted := slices.Clone(env)
	slices.Sort(sorted)
	h := sha256.New()
	for _, kv := range sorted {
		h.Write([]byte(kv))
		h.Write([]byte{0}) // no variable holds a NUL: an unambiguous separator
	}
	return envHash(h.Sum(nil))
}

// changedNames lists, sorted, the variables that are in one environment and
// not the other, or that differ between them. Names only: the values are
// compared here and go no further.
func changedNames(from, to []string) []string {
	was := make(map[string]string, len(from))
	for _, kv := range from {
		k, v, _ := strings.Cut(kv, "=")
		was[k] = v
	}
	var names []string
	for _, kv := range to {
		k, v, _ := strings.Cut(kv, "=")
		if old, ok := was[k]; !ok || old != v {
			names = append(names, k)
		}
		delete(was, k)
	}
	for k := range was {
		names = append(names, k)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
