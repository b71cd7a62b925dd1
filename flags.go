package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/paramexec/paramexec/exec"
	"github.com/paramexec/paramexec/internal/handoff"
	"github.com/paramexec/paramexec/internal/listen"
	"github.com/paramexec/paramexec/internal/proxy"
	"github.com/paramexec/paramexec/internal/ready"
)

// listFlag is a repeatable flag whose PARAMEXEC_* variable, like every
// repeatable flag's, is a comma-separated list: so a value holds no comma.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*l = append(*l, item)
		}
	}
	if strings.TrimSpace(v) == "" {
		return errors.New("empty value")
	}
	return nil
}

// parseHandoff parses the --listen and --proxy values.
func parseHandoff(listens, proxies []string) ([]listen.Spec, []proxy.Spec, error) {
	ls, err := listen.ParseAll(listens)
	if err != nil {
		return nil, nil, err
	}
	var ps []proxy.Spec
	for _, v := range proxies {
		p, err := proxy.ParseSpec(v)
		if err != nil {
			return nil, nil, err
		}
		ps = append(ps, p)
	}
	return ls, ps, nil
}

// checkHandoff refuses --listen and --proxy settings that cannot work.
func (c *config) checkHandoff() error {
	seen := map[string]bool{}
	for _, p := range c.proxy {
		if seen[p.TargetEnv] {
			return fmt.Errorf("--proxy: two proxies give the child its port in %s", p.TargetEnv)
		}
		seen[p.TargetEnv] = true
	}
	if c.proxyProtocol && len(c.proxy) == 0 {
		return errors.New("--proxy-protocol only goes with --proxy")
	}
	return nil
}

// handoff is what internal/handoff needs of the flags. --ready-timeout
// also bounds how long a proxy holds a connection for a child that is not
// ready yet.
func (c *config) handoff() handoff.Options {
	return handoff.Options{
		Supervise:     c.supervise(),
		Print:         c.print,
		Listen:        c.listen,
		Proxy:         c.proxy,
		ProxyProtocol: c.proxyProtocol,
		Grace:         c.grace,
		HoldTimeout:   c.readyTimeout,
	}
}

// rawFlags are the flags as given, before finish turns them into cfg's.
type rawFlags struct {
	sources           []sourceFlag // from the command line, in its order
	onChange, stopSig string
	listens, proxies  listFlag
	ready             []string
	files             filesFlags
}

// newFlagSet is paramexec's flags, with their defaults (the one place
// each default lives), set into cfg or raw.
func newFlagSet(cfg *config, raw *rawFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("paramexec", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned and printed once, by run
	fs.Usage = func() {}
	for _, kind := range sourceKinds {
		fs.Var(sourceList{kind: kind, dst: &raw.sources}, kind, "")
	}
	fs.BoolVar(&cfg.noOverride, "no-override", false, "")
	fs.DurationVar(&cfg.interval, "interval", 0, "")
	fs.StringVar(&raw.onChange, "on-change", "restart", "")
	fs.DurationVar(&cfg.grace, "grace", 10*time.Second, "")
	fs.StringVar(&raw.stopSig, "stop-signal", "TERM", "")
	fs.BoolVar(&cfg.init, "init", false, "")
	fs.DurationVar(&cfg.startupTimeout, "startup-timeout", 30*time.Second, "")
	fs.IntVar(&cfg.discoverEvery, "discover-every", 10, "")
	fs.DurationVar(&cfg.settle, "settle", 0, "")
	fs.DurationVar(&cfg.settleMax, "settle-max", 0, "")
	fs.DurationVar(&cfg.splay, "splay", 0, "")
	fs.Var(&raw.listens, "listen", "")
	fs.Var(&raw.proxies, "proxy", "")
	fs.BoolVar(&cfg.proxyProtocol, "proxy-protocol", false, "")
	raw.files.register(fs)
	fs.BoolVar(&cfg.print, "print", false, "")
	fs.BoolVar(&cfg.reveal, "reveal", false, "")
	fs.BoolVar(&cfg.explain, "explain", false, "")
	fs.StringVar(&cfg.format, "format", "dotenv", "")
	fs.StringVar(&cfg.logFormat, "log-format", "text", "")
	fs.StringVar(&cfg.logLevel, "log-level", "info", "")
	fs.BoolVar(&cfg.version, "version", false, "")
	fs.Func("ready", "", func(v string) error {
		if v == "" {
			return errors.New("empty value")
		}
		raw.ready = append(raw.ready, v)
		return nil
	})
	// --ready-timeout also bounds the proxies' hold of a connection (see
	// config.handoff): one default for both.
	fs.DurationVar(&cfg.readyTimeout, "ready-timeout", 60*time.Second, "")
	fs.DurationVar(&cfg.rollbackWindow, "rollback-window", 0, "")
	fs.Func("restart", "", func(v string) error {
		switch v {
		case "stop-first":
			cfg.restart = exec.StopFirst
		case "overlap":
			cfg.restart = exec.Overlap
		default:
			return errors.New("want stop-first or overlap")
		}
		return nil
	})
	return fs
}

// finish parses what the flag package keeps as text into cfg.
func (raw *rawFlags) finish(cfg *config) error {
	var err error
	if cfg.onChange, err = exec.ParseAction(raw.onChange); err != nil {
		// exec's error names the setting already, as on-change "x": …
		return fmt.Errorf("--on-change %q: %s", raw.onChange, strings.TrimPrefix(err.Error(), fmt.Sprintf("on-change %q: ", raw.onChange)))
	}
	if cfg.stopSignal, err = exec.ParseSignal(raw.stopSig); err != nil {
		return fmt.Errorf("--stop-signal: %w", err)
	}
	for _, spec := range raw.ready {
		c, err := ready.Parse(spec)
		if err != nil {
			return err
		}
		cfg.ready = append(cfg.ready, c)
	}
	if cfg.listen, cfg.proxy, err = parseHandoff(raw.listens, raw.proxies); err != nil {
		return err
	}
	if cfg.files, err = raw.files.finish(cfg.sources); err != nil {
		return err
	}
	for _, c := range cfg.ready {
		if c.UsesPort() && len(cfg.proxy) == 0 {
			return fmt.Errorf("--ready %q: {port} stands for the child's port, in --proxy mode only", c.String())
		}
	}
	return nil
}
