package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/paramexec/paramexec/exec"
	"github.com/paramexec/paramexec/fetch"
	"github.com/paramexec/paramexec/internal/sdnotify"
	"github.com/paramexec/paramexec/signals"
)

// fileDebounce folds the burst of events an editor's save makes into one
// change: long enough for write-rename-chmod, short enough to feel instant.
const fileDebounce = 300 * time.Millisecond

// supervise runs the command as paramexec's child and stays its parent:
// forwarding signals, reaping orphans and, when watching, restarting the
// child on change. It returns the exit code for paramexec.
func supervise(ctx context.Context, cfg *config, env []string, w *fetch.Watcher, layers []fetch.Layer, notifySocket string, stopStartup func() syscall.Signal, handoff *handoff, log *slog.Logger) int {
	notify, err := sdnotify.New(notifySocket)
	if err != nil {
		log.Warn("cannot reach systemd's notify socket; readiness will not be reported", "error", err)
		notify = nil // a nil Notifier is a no-op
	}
	defer notify.Close()

	if os.Getpid() != 1 {
		// As PID 1 the kernel already hands us every orphan; elsewhere we
		// ask for them, so grandchildren left by the child are reaped here.
		if err := signals.SetSubreaper(); err != nil {
			log.Warn("cannot become a child subreaper; orphaned grandchildren will not be reaped", "error", err)
		}
	}
	// Take over the signals before releasing the start-up handler, so no
	// SIGTERM falls between the two.
	sigs := make(chan os.Signal, 128)
	stopSignals := signals.Notify(sigs)
	defer stopSignals()
	if sig := stopStartup(); sig != 0 {
		return 128 + int(sig)
	}

	ctx, cancel := context.WithCancel(ctx)
	changes := make(chan exec.Change)
	var watching sync.WaitGroup
	if cfg.interval > 0 {
		watching.Go(func() {
			// The watcher hands each new environment to the supervisor,
			// waiting while the supervisor is busy: never two at once.
			err := w.Run(ctx, layers, func(ctx context.Context, u fetch.Update) {
				select {
				case changes <- exec.Change{Env: u.Env, Reason: u.Reason()}:
				case <-ctx.Done():
				}
			})
			if err != nil && ctx.Err() == nil {
				log.Error("watching stopped; the child keeps its current environment", "error", err)
			}
		})
	}
	defer watching.Wait()
	defer cancel()

	sup := &exec.Supervisor{
		Argv:       cfg.argv,
		OnChange:   cfg.onChange,
		Grace:      grace(cfg.grace),
		StopSignal: cfg.stopSignal,
		Log:        log,
		Reap:       signals.Reap,
		OnEvent:    notifyEvents(notify, cfg.argv[0], log),
	}
	handoff.attach(ctx, sup)
	handoff.serve(ctx)
	// Start-up is over: keep the supervisor small for the long run.
	released, err := releaseStartupPages()
	log.Debug("memory settled", "limit", limitMemory(), "released_binary_bytes", released, "release_error", err)
	code, err := sup.Run(ctx, env, changes, sigs)
	if err != nil {
		log.Error("cannot run command", "command", cfg.argv[0], "error", err)
	}
	return code
}

// grace maps --grace to the supervisor's: --grace 0 is read as "no grace",
// SIGKILL right after the stop signal, where exec's zero means its default.
func grace(d time.Duration) time.Duration {
	if d == 0 {
		return exec.NoGrace
	}
	return d
}

// notifyEvents reports the child's lifecycle to systemd (a no-op without
// NOTIFY_SOCKET). The texts, shown by systemctl status, carry the command,
// pids, exit codes and the names that changed: never a value.
func notifyEvents(n *sdnotify.Notifier, command string, log *slog.Logger) func(exec.Event) {
	name := filepath.Base(command)
	return func(e exec.Event) {
		var err error
		switch e.Kind {
		case exec.Started:
			err = n.Ready(fmt.Sprintf("%s running (pid %d)", name, e.Pid))
		case exec.RestartBegun:
			err = n.Reloading(fmt.Sprintf("restarting %s: %s", name, e.Reason))
		case exec.Restarted:
			err = n.Ready(fmt.Sprintf("%s running (pid %d), restarted in %s at %s: %s",
				name, e.Pid, e.Took.Round(time.Millisecond), time.Now().Format(time.TimeOnly), e.Reason))
		case exec.Stopping:
			err = n.Stopping(fmt.Sprintf("stopping %s (pid %d): %s", name, e.Pid, e.Reason))
		case exec.Killed:
			err = n.Status(fmt.Sprintf("%s (pid %d) outlived --grace; its process group was killed", name, e.Pid))
		case exec.Rejected:
			err = n.Status(fmt.Sprintf("%s (pid %d) keeps running: new environment rejected: %s", name, e.Pid, e.Reason))
		case exec.Exited:
			err = n.Status(fmt.Sprintf("%s (pid %d) exited with status %d", name, e.Pid, e.Code))
		}
		if err != nil {
			log.Debug("systemd notification failed", "event", e.Kind.String(), "error", err)
		}
	}
}

// envFiles lists the --env-file paths, to be watched for edits.
func envFiles(cfg *config) []string {
	var out []string
	for _, sf := range cfg.sources {
		if sf.kind == "env-file" {
			out = append(out, sf.value)
		}
	}
	return out
}
