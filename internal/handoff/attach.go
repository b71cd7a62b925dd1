package handoff

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/paramexec/paramexec/exec"
	"github.com/paramexec/paramexec/internal/environ"
	"github.com/paramexec/paramexec/internal/listen"
	"github.com/paramexec/paramexec/internal/proxy"
)

// Attach sets the supervisor's hooks: the sockets on fds 3, 4, … through
// the trampoline, the proxies' ports in the environment, and the events
// that move the proxies (see route). ctx bounds the drains and the
// handover waits. With --proxy, sup.Ready must include a connect to each
// of Ports (see route): the proxies send to a child once it is ready.
func (h *Handoff) Attach(ctx context.Context, sup *exec.Supervisor) {
	if h.sockets != nil {
		sup.ExtraFiles = h.sockets.Files
		sup.Wrap = func(_ string, argv []string) (string, []string) { return h.sockets.Command(argv) }
	}
	if len(h.proxies) == 0 {
		return
	}
	h.route = route{overlap: sup.Restart == exec.Overlap}
	sup.PrepareEnv = h.prepareEnv
	sup.Handover = func(int) <-chan struct{} { return h.handover(ctx) }
	next := sup.OnEvent
	sup.OnEvent = func(e exec.Event) {
		if m, ok := h.route.next(e); ok {
			h.apply(ctx, m)
		}
		if next != nil {
			next(e)
		}
	}
}

// Ports returns the proxies' ports given to the child started last, the
// one a readiness check started now is about (at most one child is not
// ready at a time); nil without --proxy.
func (h *Handoff) Ports() func() []int {
	if len(h.proxies) == 0 {
		return nil
	}
	return func() []int {
		h.portMu.Lock()
		defer h.portMu.Unlock()
		return slices.Clone(h.lastPorts)
	}
}

// Taken returns the check that a child declared ready holds --listen's
// sockets (see listen.Set.Taken); nil without --listen. Where /proc cannot
// tell (listen.ErrCannotTell), the other checks decide alone.
func (h *Handoff) Taken() func(pid int) error {
	if h.sockets == nil {
		return nil
	}
	return func(pid int) error {
		if err := h.sockets.Taken(pid); err != nil && !errors.Is(err, listen.ErrCannotTell) {
			return err
		}
		return nil
	}
}

// prepareEnv gives the child about to start a free loopback port per proxy.
func (h *Handoff) prepareEnv(env []string) ([]string, error) {
	out := env
	for i, px := range h.proxies {
		port, err := proxy.FreePort()
		if err != nil {
			return nil, err
		}
		h.ports[i] = port
		out = append(environ.Without(out, px.spec.TargetEnv), px.spec.TargetEnv+"="+strconv.Itoa(port))
	}
	h.started = time.Now()
	h.portMu.Lock()
	h.lastPorts = slices.Clone(h.ports)
	h.portMu.Unlock()
	return out, nil
}

// apply makes move m: each proxy sends new connections to m.to's ports
// (the child started last), or holds them; the connections open to what
// it sent to before drain.
func (h *Handoff) apply(ctx context.Context, m move) {
	var answered []<-chan struct{}
	for i, px := range h.proxies {
		target := ""
		if m.to != 0 {
			target = net.JoinHostPort("127.0.0.1", strconv.Itoa(h.ports[i]))
		}
		prev := px.p.SetTarget(target)
		if target != "" {
			h.log.Info(h.msg("switched", "proxy switched"), "proxy", px.spec.Listen, "pid", m.to, "port", h.ports[i], "after", time.Since(h.started).Round(time.Millisecond))
		}
		if prev != "" && prev != target {
			answered = append(answered, h.leave(ctx, px, prev, m.left, m.which))
		}
	}
	if m.handover {
		h.movedFrom = answered
	}
}

// msg is the log message for stop-first or for overlap, where exec logs
// the child's own "switched" and "old child draining".
func (h *Handoff) msg(stopFirst, overlap string) string {
	if h.route.overlap {
		return overlap
	}
	return stopFirst
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
func (h *Handoff) handover(ctx context.Context) <-chan struct{} {
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

// leave drains target, which px no longer sends new connections to, and
// returns what closes once every connection sent to it has been answered
// (see handover). The connections open to it have --grace to finish;
// those left then are closed.
func (h *Handoff) leave(ctx context.Context, px *proxyRun, target string, pid int, which string) <-chan struct{} {
	open := px.p.Active(target)
	h.log.Info(h.msg(which+" draining", "proxy: "+which+" draining"), "proxy", px.spec.Listen, "pid", pid, "connections", open, "grace", h.grace)
	h.wg.Go(func() {
		begun := time.Now()
		dctx, cancel := context.WithTimeout(ctx, h.grace)
		defer cancel()
		closed := px.p.Drain(dctx, target)
		h.log.Info(h.msg(which+" drained", "proxy: "+which+" drained"), "proxy", px.spec.Listen, "pid", pid, "took", time.Since(begun).Round(time.Millisecond), "closed_at_grace", closed)
	})
	return px.p.Answered(target)
}
