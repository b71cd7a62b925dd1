package main

import (
	"errors"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/paramexec/paramexec/exec"
	"github.com/paramexec/paramexec/fetch"
	"github.com/paramexec/paramexec/internal/environ"
	"github.com/paramexec/paramexec/internal/listen"
	"github.com/paramexec/paramexec/internal/proxy"
	"github.com/paramexec/paramexec/internal/ready"
)

// envPrefix starts the environment variable that stands in for each flag.
const envPrefix = "PARAMEXEC_"

// A sourceFlag is one --path, --param, --secret or --env-file, kept in the
// order given, since that order is the precedence.
type sourceFlag struct {
	kind  string // the flag's name
	value string
}

type config struct {
	sources    []sourceFlag // lowest precedence first
	noOverride bool

	interval       time.Duration
	onChange       exec.Action
	grace          time.Duration
	stopSignal     syscall.Signal
	init           bool
	startupTimeout time.Duration
	discoverEvery  int
	// settle, settleMax and splay hold a change before it is acted on; see
	// fetch.Watcher.
	settle, settleMax, splay time.Duration

	// listen and proxy are --listen and --proxy, parsed: see flags.go.
	listen        []listen.Spec
	proxy         []proxy.Spec
	proxyProtocol bool

	print, reveal bool
	format        string
	explain       bool // --explain: see print.go

	// Safe restarts: readiness checks and rollback.
	ready          []ready.Check
	readyTimeout   time.Duration
	rollbackWindow time.Duration
	restart        exec.RestartMode // --restart

	logFormat, logLevel string
	version             bool

	// files is --files-dir, --deliver, --on-change-of and their kin: see
	// filesflags.go.
	files filesConfig

	argv []string
}

// supervise reports whether paramexec stays as the child's parent rather
// than exec-ing in its place. --ready needs a parent: someone must wait
// for the child to be ready, report it, and stop it if it never is; so
// does --proxy, which forwards to the child, and --deliver files, whose
// files someone must remove when the child is done.
func (c *config) supervise() bool {
	return c.interval > 0 || c.init || len(c.ready) > 0 || len(c.proxy) > 0 || c.files.anyFiles()
}

// rollback reports whether a failed change is rolled back: always with
// --ready, with --rollback-window alone, and with --restart overlap (whose
// rejected new child is simply stopped).
func (c *config) rollback() bool {
	return len(c.ready) > 0 || c.rollbackWindow > 0 || c.restart == exec.Overlap
}

// sourceKinds lists the repeatable source flags in the order their
// PARAMEXEC_* variables are applied (lowest precedence first).
var sourceKinds = []string{"env-file", "path", "param", "secret"}

// sourceList collects one kind of source flag into a shared ordered list.
type sourceList struct {
	kind string
	dst  *[]sourceFlag
}

func (s sourceList) String() string { return "" }
func (s sourceList) Set(v string) error {
	if v == "" {
		return fmt.Errorf("empty value")
	}
	*s.dst = append(*s.dst, sourceFlag{kind: s.kind, value: v})
	return nil
}

// parseConfig reads flags from args and, for each flag not on the command
// line, from its PARAMEXEC_* variable. lookup reads the environment.
func parseConfig(args []string, lookup func(string) (string, bool)) (*config, error) {
	cfg := &config{}
	raw := &rawFlags{}
	fs := newFlagSet(cfg, raw)
	if err := fs.Parse(args); err != nil {
		return nil, flagError(fs, err)
	}
	onCommandLine := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	fromEnv, err := fromEnvironment(fs, onCommandLine, lookup, raw)
	if err != nil {
		return nil, err
	}
	// Source flags from the environment go first, so that a command line
	// adds to an image's defaults and wins over them.
	cfg.sources = append(fromEnv, raw.sources...)
	cfg.argv = fs.Args()
	if err := raw.finish(cfg); err != nil {
		return nil, err
	}
	return cfg, cfg.check()
}

// fromEnvironment sets each flag not on the command line from its
// PARAMEXEC_* variable, and returns the source flags the variables give,
// in a fixed kind order.
func fromEnvironment(fs *flag.FlagSet, onCommandLine map[string]bool, lookup func(string) (string, bool), raw *rawFlags) ([]sourceFlag, error) {
	var fromEnv []sourceFlag
	for _, kind := range sourceKinds {
		if onCommandLine[kind] {
			continue
		}
		if v, ok := lookup(envName(kind)); ok && v != "" {
			for _, item := range strings.Split(v, ",") {
				if item = strings.TrimSpace(item); item != "" {
					fromEnv = append(fromEnv, sourceFlag{kind: kind, value: item})
				}
			}
		}
	}
	if v, ok := lookup(envName("ready")); ok && v != "" && !onCommandLine["ready"] {
		raw.ready = splitChecks(v)
	}
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if onCommandLine[f.Name] || isSourceKind(f.Name) || f.Name == "ready" {
			return
		}
		if v, ok := lookup(envName(f.Name)); ok && v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = errors.Join(envErr, fmt.Errorf("%s=%q: %w", envName(f.Name), v, valueError(f, err)))
			}
		}
	})
	return fromEnv, envErr
}

// check refuses settings that cannot work together.
func (c *config) check() error {
	switch {
	case c.version:
		return nil
	case c.interval < 0:
		return fmt.Errorf("--interval %s: must not be negative", c.interval)
	case c.interval > 0 && c.interval < time.Second:
		return fmt.Errorf("--interval %s: at least 1s; polling faster only spends the account's API quota", c.interval)
	case c.grace < 0:
		return fmt.Errorf("--grace %s: must not be negative", c.grace)
	case c.startupTimeout < 0:
		return fmt.Errorf("--startup-timeout %s: must not be negative", c.startupTimeout)
	case c.readyTimeout <= 0:
		return fmt.Errorf("--ready-timeout %s: must be more than 0", c.readyTimeout)
	case c.rollbackWindow < 0:
		return fmt.Errorf("--rollback-window %s: must not be negative", c.rollbackWindow)
	case c.discoverEvery < 1:
		return fmt.Errorf("--discover-every %d: at least 1", c.discoverEvery)
	case c.format != "dotenv" && c.format != "json" && c.format != "shell":
		return fmt.Errorf("--format %q: want dotenv, json or shell", c.format)
	case c.reveal && !c.print:
		return fmt.Errorf("--reveal only goes with --print")
	case c.explain && !c.print:
		return fmt.Errorf("--explain only goes with --print")
	case c.format != "dotenv" && !c.print:
		return fmt.Errorf("--format only goes with --print")
	case slices.ContainsFunc(c.sources, func(s sourceFlag) bool {
		return s.kind == "path" && !strings.HasPrefix(s.value, "/") && !strings.HasPrefix(s.value, "arn:")
	}):
		return fmt.Errorf("--path: a path starts with /, as in /myapp/prod, or is a parameter ARN of another account's path")
	case !c.print && len(c.argv) == 0:
		return fmt.Errorf("no command given: paramexec [flags] [--] COMMAND [ARGS...]")
	}
	if err := c.checkHold(); err != nil {
		return err
	}
	if err := c.checkRestart(); err != nil {
		return err
	}
	if err := c.checkFiles(); err != nil {
		return err
	}
	return c.checkHandoff()
}

// checkRestart checks --restart overlap: the old child is stopped only
// once the new one is ready, so something must say when it is; and only a
// restart on change overlaps anything.
func (c *config) checkRestart() error {
	if c.restart != exec.Overlap || c.print {
		return nil
	}
	switch {
	case len(c.ready) == 0 && len(c.proxy) == 0:
		return errors.New("--restart overlap: needs --ready (or --proxy, whose connect to the child's port is the default check), which says when the new child may take over")
	case c.interval == 0:
		return errors.New("--restart overlap: only applies when watching; give --interval too")
	case c.onChange.Kind != exec.Restart:
		return errors.New("--restart overlap: only goes with --on-change restart")
	}
	return nil
}

// checkHold checks --settle, --settle-max and --splay. Without --interval
// nothing is watched, so they would silently do nothing: that is refused
// rather than ignored, as --reveal without --print is.
func (c *config) checkHold() error {
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--settle", c.settle}, {"--settle-max", c.settleMax}, {"--splay", c.splay}} {
		switch {
		case d.v < 0:
			return fmt.Errorf("%s %s: must not be negative", d.flag, d.v)
		case d.v > 0 && c.interval == 0 && !c.print:
			return fmt.Errorf("%s %s: only applies when watching; give --interval too", d.flag, d.v)
		}
	}
	switch {
	case c.settleMax > 0 && c.settle == 0:
		return fmt.Errorf("--settle-max %s: bounds --settle, which is not given", c.settleMax)
	case c.settleMax > 0 && c.settleMax < c.settle:
		return fmt.Errorf("--settle-max %s: below --settle %s; the wait could never be quiet for --settle", c.settleMax, c.settle)
	}
	return nil
}

// flagError rewrites the flag package's errors in the shape of every other
// usage error, --flag "value": what is wanted, since its own say "parse
// error" and name flags with one dash.
func flagError(fs *flag.FlagSet, err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return fmt.Errorf("unknown flag --%s", strings.TrimPrefix(name, "-"))
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return fmt.Errorf("--%s needs a value", strings.TrimPrefix(name, "-"))
	}
	var value, name string
	if rest, ok := strings.CutPrefix(msg, "invalid value "); ok {
		if q, err := strconv.QuotedPrefix(rest); err == nil {
			value, _ = strconv.Unquote(q)
			name, _, _ = strings.Cut(strings.TrimPrefix(rest[len(q):], " for flag -"), ":")
		}
	}
	f := fs.Lookup(name)
	if f == nil {
		return err
	}
	_, why, _ := strings.Cut(msg, name+": ")
	return fmt.Errorf("--%s %q: %w", name, value, valueError(f, errors.New(why)))
}

// valueError says what a flag's value should look like, for the flag
// package's bare "parse error".
func valueError(f *flag.Flag, err error) error {
	if g, ok := f.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case time.Duration:
			return errors.New("want a duration such as 30s, 5m, 1h")
		case int:
			return errors.New("want a whole number such as 10")
		case bool:
			return errors.New("want true or false")
		}
	}
	return err
}

// splitChecks reads PARAMEXEC_READY, a comma-separated list of checks. A
// comma splits only where a check kind starts after it, so that a comma
// inside an exec: command or an http:// query stays where it is:
// "tcp:8080,exec:/bin/check a,b" is two checks.
func splitChecks(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		spec := strings.TrimSpace(item)
		starts := spec == "notify" || slices.ContainsFunc([]string{"tcp:", "http://", "https://", "https+insecure://", "exec:"},
			func(p string) bool { return strings.HasPrefix(spec, p) })
		switch {
		case starts:
			out = append(out, spec)
		case len(out) > 0:
			out[len(out)-1] += "," + item
		case spec != "":
			out = append(out, spec) // not a check: Parse says so
		}
	}
	for i := range out {
		out[i] = strings.TrimSpace(out[i])
	}
	return out
}

func isSourceKind(name string) bool { return slices.Contains(sourceKinds, name) }

// envName is the variable that stands in for a flag: --log-level is
// PARAMEXEC_LOG_LEVEL.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// envLookup looks names up in an environment list rather than the process's
// own, so tests can run many configurations side by side.
func envLookup(list []string) func(string) (string, bool) {
	return func(name string) (string, bool) { return environ.Lookup(list, name) }
}

// specs are the source flags as fetch.Build takes them.
func (c *config) specs() []fetch.Spec {
	out := make([]fetch.Spec, len(c.sources))
	for i, s := range c.sources {
		out[i] = fetch.Spec{Kind: s.kind, Value: s.value, Whole: c.files.policy(i).how == deliverDocument}
	}
	return out
}
