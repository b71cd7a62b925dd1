package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/paramexec/paramexec/exec"
	"github.com/paramexec/paramexec/internal/environ"
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

// acceptTimeout bounds how long a child started in --proxy mode has to
// accept on its port before paramexec stops waiting for it (and says so):
// the default --ready-timeout. Until then connections are held.
const acceptTimeout = 60 * time.Second

// handoff is what --listen and --proxy add to supervision: the sockets
// paramexec binds once and keeps, and the proxies that follow the current
// child. It works with the stop-first supervisor: on a restart the old
// child gets the stop signal, and meanwhile connections wait (in the
// kernel's backlog of a --listen socket, or held by the proxy) for the new
// child instead of being refused.
type handoff struct {
	log     *slog.Logger
	sockets *listen.Set // nil without --listen
	proxies []*proxyRun
	grace   time.Duration

	wg sync.WaitGroup // the proxies, the accept waits and the drains

	// Set and read from the supervisor's goroutine only (its hooks).
	ports   []int     // per proxy: the port given to the child being started
	started time.Time // when it was
	overlap bool      // --restart overlap: Restarted means the new child is ready
	current int       // overlap: the pid the proxies follow
	// Answered for the targets the last switch (overlap) or hold
	// (stop-first) moved away from, for Handover.
	movedFrom []<-chan struct{}

	portMu    sync.Mutex
	lastPorts []int // ports, for the readiness checks' goroutines

	mu      sync.Mutex
	gen     int                // bumped when the current child stops: a wait for an older one is stale
	stopGen context.CancelFunc // ends the accept wait of the current generation
}

// proxyRun is one --proxy.
type proxyRun struct {
	spec proxy.Spec
	ln   net.Listener
	p    *proxy.Proxy
}

// openHandoff sets up what the child gets besides its environment, before
// anything is read, and returns inherited less what it takes over.
//
// A child of a supervising paramexec gets fds 0-2 and its --listen
// sockets, nothing else paramexec inherited, nor LISTEN_* meant for
// paramexec. In place, both pass through: the command is then what
// systemd's socket activation started.
//
// --listen and --proxy bind before anything is read (not with --print): a
// port in use fails at once, and connections that arrive during start-up
// wait. Binding is all or nothing; errors wrap listen.ErrBind (exit 3).
func openHandoff(ctx context.Context, cfg *config, inherited []string, log *slog.Logger) (*handoff, []string, error) {
	if cfg.supervise() {
		inherited = environ.Filter(inherited, func(name string) bool {
			return name != "LISTEN_PID" && name != "LISTEN_FDS" && name != "LISTEN_FDNAMES"
		})
		if err := listen.CloseOnExecFrom(3); err != nil {
			log.Warn("cannot keep inherited descriptors from the child", "error", err)
		}
	}
	if cfg.print {
		return &handoff{log: log}, inherited, nil
	}
	h, err := bind(ctx, cfg, log)
	return h, inherited, err
}

// bind binds every --listen and --proxy address, all or nothing.
func bind(ctx context.Context, cfg *config, log *slog.Logger) (*handoff, error) {
	h := &handoff{log: log, grace: cfg.grace}
	if len(cfg.listen) > 0 {
		set, err := listen.Bind(ctx, cfg.listen)
		if err != nil {
			return nil, err
		}
		h.sockets = set
		for _, s := range set.Specs() {
			log.Info("listening for the child", "name", s.Name, "address", s.String())
		}
	}
	for _, spec := range cfg.proxy {
		ln, err := proxy.Listen(ctx, spec)
		if err != nil {
			h.close()
			return nil, err
		}
		p := proxy.New(ln, proxy.Options{ProxyHeader: cfg.proxyProtocol, Log: log})
		h.proxies = append(h.proxies, &proxyRun{spec: spec, ln: ln, p: p})
		log.Info("proxy listening", "address", ln.Addr().String(), "port_variable", spec.TargetEnv)
	}
	h.ports = make([]int, len(h.proxies))
	return h, nil
}

// replace execs the command in place of paramexec with the sockets (no
// supervision: --listen without --interval or --init).
func (h *handoff) replace(argv, env []string) error {
	if h.sockets == nil {
		return exec.Replace(argv, env)
	}
	return h.sockets.Replace(argv, env)
}

// serve runs the proxies until ctx ends; wait for them with close.
func (h *handoff) serve(ctx context.Context) {
	for _, px := range h.proxies {
		h.wg.Go(func() {
			if err := px.p.Serve(ctx); err != nil {
				h.log.Error("proxy stopped", "address", px.spec.Listen, "error", err)
			}
		})
	}
}

// attach sets the supervisor's hooks: the sockets on fds 3, 4, … through
// the trampoline, the proxies' ports in the environment, and the events
// that move the proxies' targets. ctx bounds the waits and drains.
func (h *handoff) attach(ctx context.Context, sup *exec.Supervisor) {
	if h.sockets != nil {
		sup.ExtraFiles = h.sockets.Files
		sup.Wrap = func(_ string, argv []string) (string, []string) { return h.sockets.Command(argv) }
	}
	if len(h.proxies) == 0 {
		return
	}
	sup.PrepareEnv = h.prepareEnv
	next := sup.OnEvent
	sup.Handover = func(int) <-chan struct{} { return h.handover(ctx) }
	if sup.Restart == exec.Overlap {
		h.overlap = true
		sup.OnEvent = func(e exec.Event) {
			h.overlapEvent(ctx, e)
			if next != nil {
				next(e)
			}
		}
		return
	}
	sup.OnEvent = func(e exec.Event) {
		switch e.Kind {
		case exec.Ready, exec.Restarted:
			// Ready comes for the first child and for one restored by a
			// rollback; Restarted for the child of a change. Without
			// --ready each comes when the child has started.
			h.follow(ctx, e.Pid)
		case exec.RestartBegun:
			h.movedFrom = h.unfollow(ctx, e.Pid, "old child")
		case exec.Stopping:
			h.unfollow(ctx, e.Pid, "child")
		case exec.Exited:
			h.endWait()
		}
		if next != nil {
			next(e)
		}
	}
}

// prepareEnv gives the child about to start a free loopback port per proxy.
func (h *handoff) prepareEnv(env []string) ([]string, error) {
	out := env
	for i, px := range h.proxies {
		port, err := proxy.FreePort()
		if err != nil {
			return nil, err
		}
		h.ports[i] = port
		out = withVar(out, px.spec.TargetEnv, strconv.Itoa(port))
	}
	h.started = time.Now()
	h.portMu.Lock()
	h.lastPorts = slices.Clone(h.ports)
	h.portMu.Unlock()
	return out, nil
}

// portsFunc is childPorts for the readiness checks, nil without --proxy.
func (h *handoff) portsFunc() func() []int {
	if len(h.proxies) == 0 {
		return nil
	}
	return h.childPorts
}

// childPorts are the proxies' ports given to the child started last:
// the one a readiness check started now is about, as at most one child
// is not ready at a time.
func (h *handoff) childPorts() []int {
	h.portMu.Lock()
	defer h.portMu.Unlock()
	return slices.Clone(h.lastPorts)
}

// overlapEvent moves the proxies with --restart overlap. The new child of
// a change is ready when Restarted comes (its checks, a connect to its
// port at least, passed): so the targets switch at once, here, not after
// a wait of their own. The old child gets its stop signal once what was
// sent to it has been answered (see handover), and the connections open
// to it get --grace from the switch to finish.
// A rejected new child was never a target: nothing moves.
func (h *handoff) overlapEvent(ctx context.Context, e exec.Event) {
	switch e.Kind {
	case exec.Ready:
		// The first child, or one a stop-first rollback restored (the old
		// child exited during the overlap); not the old child that served
		// on after a rejected overlap, which is followed already.
		if e.Pid != h.current {
			h.current = e.Pid
			h.follow(ctx, e.Pid)
		}
	case exec.Restarted:
		if e.Pid == h.current {
			return
		}
		old := h.current
		h.current = e.Pid
		h.endWait()
		h.movedFrom = nil
		for i, px := range h.proxies {
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(h.ports[i]))
			prev := px.p.SetTarget(addr)
			h.log.Info("proxy switched", "proxy", px.spec.Listen, "pid", e.Pid, "port", h.ports[i], "after", time.Since(h.started).Round(time.Millisecond))
			if prev != "" {
				h.movedFrom = append(h.movedFrom, h.leave(ctx, px, prev, old, "old child"))
			}
		}
	case exec.Stopping:
		// Whichever child the stop names, the proxies follow the serving
		// one (the old child, when the stop comes during an overlap):
		// hold new connections from now on, drain the open ones.
		h.unfollow(ctx, h.current, "child")
	case exec.Exited:
		if e.Pid == h.current {
			// The serving child is gone: after its stop (the proxies hold
			// already), or on its own during an overlap, when the new child
			// is not ready yet. Hold new connections for the next child
			// rather than send them to a dead port.
			h.unfollow(ctx, e.Pid, "exited child")
		}
	}
}

// handover returns a channel closed once every connection the proxies
// sent the child being replaced, up to the switch (overlap) or the hold
// (stop-first), has had its first answer (or has ended), or ctx has ended:
// the supervisor holds that child's stop signal until then. A server told
// to stop while it accepts a connection may drop it unanswered (net/http's
// Shutdown does, between Accept and its ConnState hook); once every
// connection has been answered, the old child has none at that step, and
// the proxy sends it no new one. The proxies' drains close what is still
// open at --grace, which bounds the wait; the supervisor's own bound is
// the same.
func (h *handoff) handover(ctx context.Context) <-chan struct{} {
	waits := h.movedFrom
	h.movedFrom = nil
	done := make(chan struct{})
	h.wg.Go(func() {
		defer close(done)
		for _, answered := range waits {
			select {
			case <-answered:
			case <-ctx.Done():
				return
			}
		}
	})
	return done
}

// withVar is env with name set to value, replacing any it had.
func withVar(env []string, name, value string) []string {
	out := environ.Without(env, name)
	return append(out, name+"="+value)
}

// follow waits, for each proxy, until the child that just started accepts
// on its port, then sends the proxy's new connections to it. A TCP
// connect is the readiness check: it stands in for --ready until the
// supervisor has one.
func (h *handoff) follow(ctx context.Context, pid int) {
	h.mu.Lock()
	gen := h.gen
	wctx, cancel := context.WithTimeout(ctx, acceptTimeout)
	h.stopGen = cancel
	h.mu.Unlock()
	started := h.started
	for i, px := range h.proxies {
		port := h.ports[i] // the next start rewrites h.ports
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		check, err := ready.Parse("tcp:" + addr)
		if err != nil { // cannot be: the address is made above
			h.log.Error("proxy: no readiness check for the child", "error", err)
			continue
		}
		h.wg.Go(func() {
			err := ready.Wait(wctx, []ready.Check{check}, ready.Options{})
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.gen != gen || ctx.Err() != nil {
				return // the child stopped first
			}
			if err != nil {
				h.log.Error("child does not accept on its port; connections are held", "pid", pid, "port", port, "waited", time.Since(started).Round(time.Millisecond))
				return
			}
			px.p.SetTarget(addr)
			msg := "switched"
			if h.overlap {
				msg = "proxy switched" // exec logs the child's own "switched"
			}
			h.log.Info(msg, "proxy", px.spec.Listen, "pid", pid, "port", port, "after", time.Since(started).Round(time.Millisecond))
		})
	}
}

// endWait ends the current child's accept waits, if any.
func (h *handoff) endWait() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gen++
	if h.stopGen != nil {
		h.stopGen()
		h.stopGen = nil
	}
}

// unfollow holds the proxies' new connections, as the current child is
// about to get the stop signal, and lets the connections open to it
// finish within --grace; those left then are closed. It returns, for
// handover, the proxies' Answered for the targets left.
func (h *handoff) unfollow(ctx context.Context, pid int, which string) []<-chan struct{} {
	h.endWait()
	var answered []<-chan struct{}
	for _, px := range h.proxies {
		old := px.p.SetTarget("")
		if old == "" {
			continue
		}
		answered = append(answered, h.leave(ctx, px, old, pid, which))
	}
	return answered
}

// leave drains target, which px no longer sends new connections to, and
// returns what closes once every connection sent to it has been answered
// (see handover).
func (h *handoff) leave(ctx context.Context, px *proxyRun, target string, pid int, which string) <-chan struct{} {
	h.drain(ctx, px, target, pid, which)
	return px.p.Answered(target)
}

// drain lets the connections open to target finish within --grace; those
// left then are closed.
func (h *handoff) drain(ctx context.Context, px *proxyRun, target string, pid int, which string) {
	open := px.p.Active(target)
	msg := which + " draining"
	if h.overlap {
		msg = "proxy: " + msg // exec logs the child's own "old child draining"
	}
	h.log.Info(msg, "proxy", px.spec.Listen, "pid", pid, "connections", open, "grace", h.grace)
	h.wg.Go(func() {
		begun := time.Now()
		dctx, cancel := context.WithTimeout(ctx, h.grace)
		defer cancel()
		closed := px.p.Drain(dctx, target)
		msg := which + " drained"
		if h.overlap {
			msg = "proxy: " + msg
		}
		h.log.Info(msg, "proxy", px.spec.Listen, "pid", pid, "took", time.Since(begun).Round(time.Millisecond), "closed_at_grace", closed)
	})
}

// close waits for the proxies (their ctx must have ended) and what else it
// started, then closes the sockets.
func (h *handoff) close() {
	h.endWait()
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
