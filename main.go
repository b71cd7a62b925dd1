// Command paramexec is a container entrypoint: it reads configuration and
// secrets from AWS Parameter Store, Secrets Manager or dotenv files into the
// environment, then runs a command with it, in its own place or supervised
// and restarted when a value changes.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/paramexec/paramexec/exec"
	"github.com/paramexec/paramexec/fetch"
	"github.com/paramexec/paramexec/internal/environ"
	"github.com/paramexec/paramexec/internal/handoff"
	"github.com/paramexec/paramexec/internal/listen"
	"github.com/paramexec/paramexec/internal/logsink"
	"github.com/paramexec/paramexec/signals"
)

// release/build.sh stamps these with -ldflags "-X main.version=v1.2.3 -X
// main.commit=... -X main.buildDate=...". A build without them (go build,
// go install) reports what the Go toolchain recorded instead.
var version, commit, buildDate string

func main() {
	// paramexec re-executed as --listen's trampoline: set LISTEN_PID to
	// its own pid and exec the command (see listen.Set.Command).
	if ok, code := listen.Trampoline(os.Args); ok {
		os.Exit(code)
	}
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

// run is paramexec without the process around it, so tests can drive it.
func run(args, osEnv []string, stdout, stderr io.Writer) int {
	cfg, err := configure(args, osEnv)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return 0
	case err != nil:
		return usageError(stderr, err)
	case cfg.version:
		fmt.Fprintf(stdout, "paramexec %s\n", buildVersion())
		return 0
	}
	if cfg.supervise() {
		// Deferred first so that it ends last, after the final flush: a
		// supervisor must outlive a broken stderr (see CatchSIGPIPE). In
		// place, there is no child to orphan yet, and not starting the
		// signal machinery keeps start-up quick (see startupSignals).
		defer logsink.CatchSIGPIPE()()
	}
	log, logs, err := newLogger(cfg.logFormat, cfg.logLevel, stderr)
	if err != nil {
		return usageError(stderr, err)
	}
	defer logs.Close(logFlushTimeout)

	startup := newStartupSignals(cfg.supervise() || os.Getpid() == 1)
	defer startup.Stop()
	sockets, inherited, err := handoff.Open(startup.Context(), cfg.handoff(), childEnviron(osEnv), log)
	if err != nil {
		log.Error("cannot listen", "error", err)
		return exitSource
	}
	defer sockets.Close()
	sources, layers, code := load(startup, cfg, inherited, log)
	switch {
	case code != 0:
		return code
	case cfg.print:
		_, effective := resolve(inherited, layers, cfg.noOverride, log)
		if err := printVars(stdout, effective, cfg.format, cfg.reveal, cfg.explain); err != nil {
			log.Error("print", "error", err)
			return 1
		}
		return 0
	case cfg.supervise():
		// supervise merges the layers itself: the child it starts does
		// not inherit NOTIFY_SOCKET (see there).
		return supervise(startup, cfg, inherited, sources, layers, sockets, log)
	}
	// Nothing watched: the command takes paramexec's place.
	env, _ := resolve(inherited, layers, cfg.noOverride, log)
	startup.Stop()
	logs.Flush(logFlushTimeout)
	err = sockets.Replace(cfg.argv, env)
	log.Error("cannot run command", "command", cfg.argv[0], "error", err)
	return exec.ExitCode(err)
}

// configure reads the flags and their PARAMEXEC_* variables, and checks
// the sources' syntax: every usage error but the log's settings.
func configure(args, osEnv []string) (*config, error) {
	cfg, err := parseConfig(args, envLookup(osEnv))
	if err == nil && !cfg.version {
		err = fetch.CheckSpecs(cfg.specs())
	}
	return cfg, err
}

// load builds the sources and reads them. --startup-timeout is a deadline
// on the whole start-up: the AWS configuration (the Region from instance
// metadata), credentials and every read. The clients keep no part of this
// context. The int is paramexec's exit code when load fails, else 0.
func load(startup *startupSignals, cfg *config, inherited []string, log *slog.Logger) ([]fetch.Source, []fetch.Layer, int) {
	ctx, cancel := startup.Context(), context.CancelFunc(func() {})
	if cfg.startupTimeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, cfg.startupTimeout)
	}
	defer cancel()
	sources, err := fetch.Build(ctx, cfg.specs(), inherited, log)
	if err != nil {
		log.Error("configuration", "error", err)
		return nil, nil, exitUsage
	}
	layers, err := fetch.LoadWithRetry(ctx, sources, cfg.startupTimeout, log)
	if err != nil {
		if sig := startup.Stop(); sig != 0 {
			log.Info("stopped by signal during start-up", "signal", sig.String())
			return nil, nil, 128 + int(sig)
		}
		log.Error("cannot read configuration", "error", err)
		if errors.Is(err, fetch.ErrNotShared) {
			return nil, nil, exitUsage // --path names a share that does not exist
		}
		return nil, nil, exitSource
	}
	return sources, layers, 0
}

// resolve merges the layers over the inherited environment (see
// fetch.Merge) and logs the names that took effect.
func resolve(inherited []string, layers []fetch.Layer, noOverride bool, log *slog.Logger) (env []string, effective []fetch.Var) {
	env, effective = fetch.Merge(inherited, layers, noOverride)
	log.Debug("environment resolved", "variables", len(effective), "names", names(effective))
	return env, effective
}

// usageError prints a usage error in the one shape they all have, before
// any logger exists, followed by the --help hint.
func usageError(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "paramexec: %v\nRun 'paramexec --help' for usage.\n", err)
	return exitUsage
}

// Exit codes of paramexec's own, beside the child's (see README).
const (
	exitUsage  = 2
	exitSource = 3
)

// startupSignals stops paramexec on SIGTERM or SIGINT until the child
// runs: even as PID 1, where the kernel drops signals that have no handler.
// Elsewhere, when paramexec is to exec in place, the default action already
// does that, and not starting the runtime's signal machinery keeps start-up
// as quick as the bare SDK's: then it intercepts nothing.
type startupSignals struct {
	ctx    context.Context
	sigs   chan os.Signal
	done   chan struct{}       // closed by Stop
	result chan syscall.Signal // the signal caught, or 0
	once   sync.Once
	caught syscall.Signal
}

func newStartupSignals(intercept bool) *startupSignals {
	s := &startupSignals{ctx: context.Background()}
	if !intercept {
		return s
	}
	ctx, cancel := context.WithCancel(s.ctx)
	s.ctx, s.sigs = ctx, make(chan os.Signal, 1)
	s.done, s.result = make(chan struct{}), make(chan syscall.Signal, 1)
	signal.Notify(s.sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		var got syscall.Signal
		select {
		case sig := <-s.sigs:
			got = sig.(syscall.Signal)
			cancel()
		case <-s.done:
		}
		s.result <- got
	}()
	return s
}

// Context is cancelled by the first SIGTERM or SIGINT caught.
func (s *startupSignals) Context() context.Context { return s.ctx }

// Stop ends the interception and waits for its goroutine. It reports the
// signal that cancelled Context, if any; every call reports the same.
func (s *startupSignals) Stop() syscall.Signal {
	if s.sigs == nil {
		return 0
	}
	s.once.Do(func() {
		signal.Stop(s.sigs)
		close(s.done)
		s.caught = <-s.result
	})
	return s.caught
}

// HandOver relays the supervisor's signals to sigs (see signals.Notify)
// before it stops the start-up interception, so that no SIGTERM falls
// between the two. stop restores the signals' handling; caught is the
// signal that came during start-up, if any.
func (s *startupSignals) HandOver(sigs chan<- os.Signal) (stop func(), caught syscall.Signal) {
	stop = signals.Notify(sigs)
	return stop, s.Stop()
}

// childEnviron is the environment the child inherits: paramexec's own
// settings are not passed on, so that a paramexec nested in the child does
// not read them a second time.
func childEnviron(list []string) []string {
	return environ.Filter(list, func(name string) bool { return !strings.HasPrefix(name, envPrefix) })
}

func names(vars []fetch.Var) []string {
	out := make([]string, len(vars))
	for i, v := range vars {
		out[i] = v.Name
	}
	return out
}

// newLogger logs to w through a logsink.Sink: a log call never waits on w,
// so a stalled reader of paramexec's stderr cannot stall supervision. Lines
// that do not fit the queue are counted and reported, once w takes lines
// again, as "N log lines dropped". The caller must Close the sink.
func newLogger(format, level string, w io.Writer) (*slog.Logger, *logsink.Sink, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var handler func(io.Writer) slog.Handler
	switch format {
	case "text":
		handler = func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, opts) }
	case "json":
		handler = func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, opts) }
	default:
		return nil, nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
	sink := logsink.New(w, logQueueBytes, func(n int) []byte {
		var b bytes.Buffer
		slog.New(handler(&b)).Warn(fmt.Sprintf("%d log lines dropped", n), "app", "paramexec", "dropped", n,
			"why", "stderr was not taking lines (a stalled or gone reader)")
		return b.Bytes()
	})
	return slog.New(handler(sink)).With("app", "paramexec"), sink, nil
}

// logQueueBytes bounds the log lines waiting for stderr: some hundreds of
// lines, far more than paramexec writes in a burst (a restart is a handful).
// logFlushTimeout bounds the wait for them at exit: a stalled reader must
// not keep paramexec, and with it a container, from ending.
const (
	logQueueBytes   = 64 << 10
	logFlushTimeout = 2 * time.Second
)

// buildVersion is what --version prints after "paramexec ": for a release
// build "VERSION (commit COMMIT, built DATE)"; otherwise versionOf's best
// guess, which already names the commit and its time when Go recorded them.
func buildVersion() string {
	info, _ := debug.ReadBuildInfo()
	v := versionOf(version, info)
	if commit == "" && buildDate == "" {
		return v
	}
	return fmt.Sprintf("%s (commit %s, built %s)", v, orUnknown(commit), orUnknown(buildDate))
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// versionOf picks the most telling version a build carries: one stamped
// with -ldflags, the module's (a tagged "go install …@v1.2.3", or the
// pseudo-version Go derives from the commit), or else the commit and its
// time, which a build made with -buildvcs=false lacks too.
func versionOf(stamped string, info *debug.BuildInfo) string {
	if stamped != "" {
		return stamped
	}
	if info == nil {
		return "(devel)"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, at, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev == "" {
		return "(devel)"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	return strings.TrimSpace(fmt.Sprintf("(devel) %s%s %s", rev, dirty, at))
}
