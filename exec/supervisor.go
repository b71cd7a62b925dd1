package exec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"syscall"
	"time"
)

// exitNotReady is Run's code when a child whose failure ends the run (the
// first one, or the last good one after a rollback) is not ready within
// ReadyTimeout. It is one of paramexec's documented exit codes.
const exitNotReady = 4

// Supervisor runs a command as a child process and stays its parent: it
// forwards signals to it, restarts it with a new environment when asked,
// and stops it with a grace period. Its fields must not change during Run.
// It knows nothing of where the environment comes from: callers hand it
// complete "K=V" lists.
type Supervisor struct {
	Argv     []string
	OnChange Action
	// Grace is how long a child asked to stop has before SIGKILL to its
	// process group. Zero or negative: none (--grace 0). The default is
	// the caller's (paramexec's is in flags.go).
	Grace      time.Duration
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
	// is logged). Run waits for it before returning; a check that has not
	// answered a second after its ctx ended counts as failed. nil: a child
	// is ready when it has started (see docs/signals.md for what that
	// means for the signals held during a restart).
	Ready func(ctx context.Context, pid int) error
	// ReadyTimeout bounds the wait for Ready; required with Ready (Run
	// returns code 2 without it). The default is the caller's.
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
// but SIGCHLD and the first terminating one is forwarded to the child that
// serves once it is ready, and held for a child that is to serve and is
// not ready yet (see held.go; docs/signals.md). changes carry new
// environments: see Action for what each does. Changes arriving during a
// restart are coalesced: the next child gets the newest environment.
// Terminating signals end the restart: no new child starts.
//
// A change whose environment cannot start the command is rejected before
// the child is touched (see reject).
//
// With Ready, a child is judged (see phase.go): the first one that is not
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
	if s.Ready != nil && s.ReadyTimeout <= 0 {
		return 2, errors.New("supervise: a readiness check needs a ready timeout")
	}
	if err := ctx.Err(); err != nil {
		return 1, fmt.Errorf("supervise %s: not started: %w", s.Argv[0], err)
	}
	w := &osWorld{s: s, log: s.Log, tty: -1, readyTimeout: s.ReadyTimeout}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	var err error
	if w.io, err = openStdio(s.Stdin, s.Stdout, s.Stderr); err != nil {
		return ExitCode(err), fmt.Errorf("supervise %s: %w", s.Argv[0], err)
	}
	defer w.io.close()
	if _, isFile := s.Stdin.(*os.File); s.Stdin == nil || isFile {
		if tty, ok := foregroundTTY(int(w.io.files[0].Fd())); ok {
			w.tty = tty
			defer w.restoreTTY()
		}
	}
	w.fork = startForker()
	defer w.fork.close()
	m := newCore(s.config(), w, w.log)
	return w.loop(ctx, m, slices.Clone(env), changes, sigs)
}

// config is what the core takes from s.
func (s *Supervisor) config() config {
	c := config{
		argv:         s.Argv,
		onChange:     s.OnChange,
		grace:        max(s.Grace, 0),
		stopSig:      s.StopSignal,
		readyTimeout: s.ReadyTimeout,
		checked:      s.Ready != nil,
		window:       s.RollbackWindow,
		rollback:     s.Rollback,
		restart:      s.Restart,
	}
	if c.stopSig == 0 {
		c.stopSig = syscall.SIGTERM
	}
	return c
}

func (w *osWorld) restoreTTY() {
	if err := takeForeground(w.tty); err != nil {
		w.log.Warn("cannot take the terminal back", "error", err)
	}
}
