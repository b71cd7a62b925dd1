package main

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/paramexec/paramexec/exec"
	"github.com/paramexec/paramexec/fetch"
	"github.com/paramexec/paramexec/signals"
)

// fileDebounce folds the burst of events an editor's save makes into one
// change: long enough for write-rename-chmod, short enough to feel instant.
const fileDebounce = 300 * time.Millisecond

// supervise runs the command as paramexec's child and stays its parent:
// forwarding signals, reaping orphans and, when watching, restarting the
// child on change. It returns the exit code for paramexec.
func supervise(ctx context.Context, cfg *config, env []string, w *fetch.Watcher, layers []fetch.Layer, stopStartup func() syscall.Signal, log *slog.Logger) int {
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
		Grace:      cfg.grace,
		StopSignal: cfg.stopSignal,
		Log:        log,
		Reap:       signals.Reap,
	}
	code, err := sup.Run(ctx, env, changes, sigs)
	if err != nil {
		log.Error("cannot run command", "command", cfg.argv[0], "error", err)
	}
	return code
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
