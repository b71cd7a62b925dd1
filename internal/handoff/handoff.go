// Package handoff gives the supervised child what --listen and --proxy add: the sockets paramexec
// binds once and keeps, and proxies that follow the ready child on the supervisor's events (see route).
package handoff

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/paramexec/paramexec/exec"
	"github.com/paramexec/paramexec/internal/environ"
	"github.com/paramexec/paramexec/internal/listen"
	"github.com/paramexec/paramexec/internal/proxy"
)

// Options are the settings Open needs, from paramexec's flags.
type Options struct {
	Supervise     bool // paramexec stays the child's parent
	Print         bool // --print: nothing is bound
	Listen        []listen.Spec
	Proxy         []proxy.Spec
	ProxyProtocol bool
	// Grace bounds the drain of the connections open to a child the
	// proxies leave (--grace).
	Grace time.Duration
	// HoldTimeout bounds how long a proxy holds a connection while no
	// child is ready for it (--ready-timeout); required with Proxy.
	HoldTimeout time.Duration
}

// Handoff is what --listen and --proxy add to supervision. It works with
// both restart modes: on a restart the old child gets the stop signal
// once what the proxies sent it has been answered, and meanwhile
// connections wait (in the kernel's backlog of a --listen socket, or held
// by the proxy) for the new child instead of being refused.
type Handoff struct {
	log     *slog.Logger
	sockets *listen.Set // nil without --listen
	proxies []*proxyRun
	grace   time.Duration

	wg sync.WaitGroup // the proxies, the drains and the handover waits

	// Set and read from the supervisor's goroutine only (its hooks).
	route   route
	ports   []int     // per proxy: the port given to the child started last
	started time.Time // when it was
	// Answered for the targets the last move left, for Handover.
	movedFrom []<-chan struct{}

	portMu    sync.Mutex
	lastPorts []int // ports, for the readiness checks' goroutines
}

// proxyRun is one --proxy.
type proxyRun struct {
	spec proxy.Spec
	ln   net.Listener
	p    *proxy.Proxy
}

// Open sets up what the child gets besides its environment, before
// anything is read, and returns inherited less what it takes over.
//
// A child of a supervising paramexec gets fds 0-2 and its --listen
// sockets, nothing else paramexec inherited, nor LISTEN_* meant for
// paramexec. In place, both pass through: the command is then what
// systemd's socket activation started.
//
// --listen and --proxy bind before anything is read (not with --print): a
// port in use fails at once, and connections that arrive during start-up
// wait. Binding is all or nothing; errors wrap listen.ErrBind.
func Open(ctx context.Context, opts Options, inherited []string, log *slog.Logger) (*Handoff, []string, error) {
	if opts.Supervise {
		inherited = environ.Filter(inherited, func(name string) bool {
			return name != "LISTEN_PID" && name != "LISTEN_FDS" && name != "LISTEN_FDNAMES"
		})
		if err := listen.CloseOnExecFrom(3); err != nil {
			log.Warn("cannot keep inherited descriptors from the child", "error", err)
		}
	}
	if opts.Print {
		return &Handoff{log: log}, inherited, nil
	}
	h, err := bind(ctx, opts, log)
	return h, inherited, err
}

// bind binds every --listen and --proxy address, all or nothing.
func bind(ctx context.Context, opts Options, log *slog.Logger) (*Handoff, error) {
	h := &Handoff{log: log, grace: opts.Grace}
	if len(opts.Listen) > 0 {
		set, err := listen.Bind(ctx, opts.Listen)
		if err != nil {
			return nil, err
		}
		h.sockets = set
		for _, s := range set.Specs() {
			log.Info("listening for the child", "name", s.Name, "address", s.String())
		}
	}
	for _, spec := range opts.Proxy {
		ln, err := proxy.Listen(ctx, spec)
		if err != nil {
			h.Close()
			return nil, err
		}
		p := proxy.New(ln, proxy.Options{ProxyHeader: opts.ProxyProtocol, HoldTimeout: opts.HoldTimeout, Log: log})
		h.proxies = append(h.proxies, &proxyRun{spec: spec, ln: ln, p: p})
		log.Info("proxy listening", "address", ln.Addr().String(), "port_variable", spec.TargetEnv)
	}
	h.ports = make([]int, len(h.proxies))
	return h, nil
}

// Replace execs the command in place of paramexec with the sockets (no
// supervision: --listen without --interval or --init).
func (h *Handoff) Replace(argv, env []string) error {
	if h.sockets == nil {
		return exec.Replace(argv, env)
	}
	return h.sockets.Replace(argv, env)
}

// Serve runs the proxies until ctx ends; wait for them with Close.
func (h *Handoff) Serve(ctx context.Context) {
	for _, px := range h.proxies {
		h.wg.Go(func() {
			if err := px.p.Serve(ctx); err != nil {
				h.log.Error("proxy stopped", "address", px.spec.Listen, "error", err)
			}
		})
	}
}

// Close waits for the proxies (the ctx given to Serve and Attach must have
// ended) and what else they started, then closes the sockets.
func (h *Handoff) Close() {
	h.wg.Wait()
	for _, px := range h.proxies {
		px.ln.Close() // Serve closed it, unless it never ran
	}
	if h.sockets != nil {
		if err := h.sockets.Close(); err != nil {
			h.log.Warn("closing the --listen sockets", "error", err)
		}
	}
}
