package main

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/paramexec/paramexec/exec"
	"github.com/paramexec/paramexec/fetch"
	"github.com/paramexec/paramexec/internal/environ"
	"github.com/paramexec/paramexec/internal/handoff"
	"github.com/paramexec/paramexec/internal/ready"
	"github.com/paramexec/paramexec/internal/sdnotify"
	"github.com/paramexec/paramexec/signals"
)

// fileDebounce folds the burst of events an editor's save makes into one
// change: long enough for write-rename-chmod, short enough to feel instant.
const fileDebounce = 300 * time.Millisecond

// supervise runs the command as paramexec's child and stays its parent:
// forwarding signals, reaping orphans and, when watching, restarting the
// child on change. It returns the exit code for paramexec.
func supervise(startup *startupSignals, cfg *config, inherited []string, sources []fetch.Source, layers []fetch.Layer, sockets *handoff.Handoff, log *slog.Logger) int {
	// Under a systemd Type=notify unit, a supervising paramexec speaks the
	// notify protocol itself; the child must not report readiness for it.
	// Exec-ing in place leaves the socket to the command, which becomes
	// the main PID.
	notifySocket, _ := environ.Lookup(inherited, "NOTIFY_SOCKET")
	inherited = environ.Without(inherited, "NOTIFY_SOCKET")
	env, effective := resolve(inherited, layers, cfg.noOverride, log)
	notes, closeNotes := openNotifier(notifySocket, log)
	defer closeNotes()
	files, env, code := startDelivery(cfg.files, env, effective, log)
	if code != 0 {
		return code
	}
	// The files go last of all, on every way out: after the watcher,
	// which writes them, has stopped.
	defer files.close()

	becomeSubreaper(log)
	sigs := make(chan os.Signal, 128)
	stopSignals, caught := startup.HandOver(sigs)
	defer stopSignals()
	if caught != 0 {
		return 128 + int(caught)
	}

	// --ready notify: the child reports to a socket of paramexec's, which
	// relays its STATUS= lines to systemd and its READY=1 to the check.
	childInherited := inherited
	var relay *notifyRelay
	if slices.ContainsFunc(cfg.ready, func(c ready.Check) bool { return c.Kind() == ready.Notify }) {
		rcv, err := sdnotify.Listen("")
		if err != nil {
			log.Error("--ready notify", "error", err)
			return exitUsage
		}
		relay = newNotifyRelay(rcv, notes, log)
		defer relay.close()
		socket := "NOTIFY_SOCKET=" + rcv.Path()
		env = append(environ.Without(env, "NOTIFY_SOCKET"), socket)
		childInherited = append(slices.Clip(inherited), socket)
	}

	ctx, cancel := context.WithCancel(startup.Context())
	changes, watching := watch(ctx, newWatcher(cfg, sources, childInherited, log), layers, files, log)
	defer watching.Wait()
	defer cancel()

	sup := newSupervisor(cfg, notes, relay, inherited, sockets, log)
	files.attach(ctx, sockets, sup)
	sockets.Serve(ctx)
	// Start-up is over: keep the supervisor small for the long run.
	released, err := releaseStartupPages()
	log.Debug("memory settled", "limit", limitMemory(), "released_binary_bytes", released, "release_error", err)
	code, err = sup.Run(ctx, env, changes, sigs)
	if err != nil {
		log.Error("cannot run command", "command", cfg.argv[0], "error", err)
	}
	return code
}

// openNotifier connects to systemd's notify socket (none: every
// notification is a no-op) and starts the notifier that writes to it;
// closeNotes writes what is pending and closes both.
func openNotifier(socket string, log *slog.Logger) (notes *notifier, closeNotes func()) {
	sd, err := sdnotify.New(socket)
	if err != nil {
		log.Warn("cannot reach systemd's notify socket; readiness will not be reported", "error", err)
		sd = nil // a nil Notifier is a no-op
	}
	notes = newNotifier(sd, log)
	return notes, func() {
		notes.close()
		sd.Close()
	}
}

// becomeSubreaper makes orphaned grandchildren paramexec's to reap. As
// PID 1 the kernel already hands it every orphan.
func becomeSubreaper(log *slog.Logger) {
	if os.Getpid() == 1 {
		return
	}
	if err := signals.SetSubreaper(); err != nil {
		log.Warn("cannot become a child subreaper; orphaned grandchildren will not be reaped", "error", err)
	}
}

// watch runs w, if any, until ctx ends, handing each new environment to
// the supervisor through changes (as files says: see delivery.update) and waiting while the supervisor is
// busy: never two at once. Wait for it with watching.
func watch(ctx context.Context, w *fetch.Watcher, layers []fetch.Layer, files *delivery, log *slog.Logger) (changes chan exec.Change, watching *sync.WaitGroup) {
	changes, watching = make(chan exec.Change), &sync.WaitGroup{}
	if w == nil {
		return changes, watching
	}
	watching.Go(func() {
		err := w.Run(ctx, layers, func(ctx context.Context, u fetch.Update) {
			c, send, err := files.update(u)
			if err != nil {
				log.Error("change not applied: the files keep the last set, the child its values", "changed", u.Changed, "error", err)
			}
			if !send {
				return
			}
			select {
			case changes <- c:
			case <-ctx.Done():
			}
		})
		if err != nil && ctx.Err() == nil {
			log.Error("watching stopped; the child keeps its current environment", "error", err)
		}
	})
	return changes, watching
}

// newSupervisor is the exec.Supervisor of cfg: its events go to systemd
// (and, with --ready notify, name the child whose messages count), and its
// readiness is cfg's checks plus, with --proxy, a connect to the child's
// ports: the proxies send to a child only then, and one that does not
// accept within --ready-timeout is judged as --ready judges (see
// internal/handoff's route).
func newSupervisor(cfg *config, notes *notifier, relay *notifyRelay, inherited []string, sockets *handoff.Handoff, log *slog.Logger) *exec.Supervisor {
	var procs *ready.Procs
	if slices.ContainsFunc(cfg.ready, func(c ready.Check) bool { return c.Kind() == ready.Exec }) {
		procs = ready.NewProcs()
	}
	sup := &exec.Supervisor{
		Argv:       cfg.argv,
		OnChange:   cfg.onChange,
		Grace:      cfg.grace,
		StopSignal: cfg.stopSignal,
		Log:        log,
		Reap:       reaper(procs),
		OnEvent:    notifyEvents(notes, cfg.argv[0]),

		ReadyTimeout:   cfg.readyTimeout,
		RollbackWindow: cfg.rollbackWindow,
		Rollback:       cfg.rollback(),
		Restart:        cfg.restart,
	}
	if relay != nil {
		// Ready names the child that serves: after a rejected overlap the
		// old child again, whose STATUS= lines count again.
		events := sup.OnEvent
		sup.OnEvent = func(e exec.Event) {
			if e.Kind == exec.Ready {
				relay.follow(e.Pid)
			}
			events(e)
		}
	}
	if len(cfg.ready) > 0 || len(cfg.proxy) > 0 {
		sup.Ready = readiness(cfg.ready, relay, procs, inherited, sockets.Ports(), sockets.Taken())
	}
	return sup
}

// newWatcher is the watcher of the sources, nil when nothing is watched
// (no --interval). inherited is what the child inherits, the sources'
// layers merged over it.
func newWatcher(cfg *config, sources []fetch.Source, inherited []string, log *slog.Logger) *fetch.Watcher {
	if cfg.interval <= 0 {
		return nil
	}
	return &fetch.Watcher{
		Sources:       sources,
		Inherited:     inherited,
		NoOverride:    cfg.noOverride,
		Interval:      cfg.interval,
		DiscoverEvery: cfg.discoverEvery,
		Debounce:      fileDebounce,
		Settle:        cfg.settle,
		SettleMax:     cfg.settleMax,
		Splay:         cfg.splay,
		Log:           log,
	}
}

// reaper is signals.Reap with the exec: checks' processes taken out first:
// they are the checks' to collect, not the supervisor's. An exit reaped
// while a check forks waits in procs for that fork's pid (see
// ready.Procs.Release), never the reaper for the fork.
func reaper(procs *ready.Procs) func(func(int, syscall.WaitStatus)) {
	if procs == nil {
		return signals.Reap
	}
	return func(onExit func(int, syscall.WaitStatus)) {
		procs.Release(onExit)
		signals.Reap(func(pid int, ws syscall.WaitStatus) {
			if !procs.Exited(pid, ws) {
				onExit(pid, ws)
			}
		})
		procs.Release(onExit) // what a fork that ended meanwhile did not claim
	}
}

// readiness is the Supervisor's Ready: every --ready check passes for the
// child pid. exec: checks run with the environment paramexec inherited
// (PARAMEXEC_* and NOTIFY_SOCKET aside), not with the fetched values: a
// check judges the child from outside and needs no secret to do it.
//
// ports, when not nil (--proxy), gives the child's ports: the first fills
// in {port}, and a TCP connect to each is a check besides. taken, when not
// nil (--listen), is asked last: a child that closed the sockets it was
// given is not ready, whatever it said.
func readiness(checks []ready.Check, relay *notifyRelay, procs *ready.Procs, env []string, ports func() []int, taken func(pid int) error) func(context.Context, int) error {
	env = environ.Without(env, "NOTIFY_SOCKET")
	return func(ctx context.Context, pid int) error {
		opts := ready.Options{Procs: procs, Env: env}
		if relay != nil {
			opts.Notified = relay.watch(pid)
		}
		if err := ready.Wait(ctx, withPorts(checks, ports), opts); err != nil || taken == nil {
			return err
		}
		// Only now: before it says it is ready, the child (the trampoline
		// first) may not have taken the sockets yet.
		return taken(pid)
	}
}

// withPorts fills in the child's ports (see readiness).
func withPorts(checks []ready.Check, ports func() []int) []ready.Check {
	if ports == nil {
		return checks
	}
	p := ports()
	if len(p) == 0 {
		return checks
	}
	out := make([]ready.Check, 0, len(checks)+len(p))
	for _, c := range checks {
		out = append(out, c.WithPort(p[0]))
	}
	for _, port := range p {
		// A literal loopback address and port: Parse cannot fail.
		if c, err := ready.Parse("tcp:127.0.0.1:" + strconv.Itoa(port)); err == nil {
			out = append(out, c)
		}
	}
	return out
}
