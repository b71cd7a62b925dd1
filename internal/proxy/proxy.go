// Package proxy forwards TCP connections from paramexec's --proxy listener to
// the current child's loopback port, switching children without dropping any.
//
// It is TCP, not HTTP: bytes pass unchanged (spliced by the kernel on Linux),
// and the child sees every connection come from 127.0.0.1, unless the
// PROXY protocol v1 header is asked for.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Options tunes a Proxy. HoldTimeout has no default here: it is the
// user's --ready-timeout, whose default lives with the flag.
type Options struct {
	// DialTimeout bounds a connect to the target; default 5s.
	DialTimeout time.Duration
	// HoldTimeout bounds how long a connection accepted while there is no
	// target waits for one before it is closed; required (New panics
	// without it). See Serve for the rest of the holding rule.
	HoldTimeout time.Duration
	// ProxyHeader sends a PROXY protocol v1 line with the client's address
	// to the target before any byte of the client's.
	ProxyHeader bool
	// Log receives failures to reach a target (never connection data);
	// nil discards them.
	Log *slog.Logger
}

// Proxy accepts on one listener and forwards each connection to the target
// current when it arrived, for as long as both ends keep it open.
type Proxy struct {
	ln   net.Listener
	opts Options

	mu      sync.Mutex
	target  string
	changed chan struct{} // closed, and replaced, by each SetTarget
	groups  map[string]*group
	closing bool // set by Serve's end: no connection may join a group

	wg sync.WaitGroup // one per connection goroutine

	// bufs hold the first bytes a target answers, read by the proxy to
	// see that it answered (Answered); after them the copies splice.
	bufs bufPool
}

// bufPool lends buffers for first reads and counts those lent: each is
// back before its connection's copies begin, so a long-lived connection
// holds none.
type bufPool struct {
	pool sync.Pool
	out  atomic.Int64
}

func (b *bufPool) get() *[]byte {
	b.out.Add(1)
	return b.pool.Get().(*[]byte)
}

func (b *bufPool) put(buf *[]byte) {
	b.out.Add(-1)
	b.pool.Put(buf)
}

// group is the connections to one target.
type group struct {
	conns map[*pair]bool // true once the target sent its first byte, or its end
	idle  chan struct{}  // made by Drain, closed when conns becomes empty
	// unanswered counts the conns still false; settled is made by
	// Answered and closed when unanswered reaches 0.
	unanswered int
	settled    chan struct{}
}

// answeredOne notes that one connection of g no longer waits for its
// target's first byte.
func (g *group) answeredOne() {
	g.unanswered--
	if g.unanswered == 0 && g.settled != nil {
		close(g.settled)
		g.settled = nil
	}
}

// New returns a Proxy on ln with no target; Serve starts it.
func New(ln net.Listener, opts Options) *Proxy {
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.HoldTimeout <= 0 {
		panic("proxy: New without a HoldTimeout")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{ln: ln, opts: opts, changed: make(chan struct{}), groups: make(map[string]*group)}
	p.bufs.pool.New = func() any { b := make([]byte, 16<<10); return &b }
	return p
}

// SetTarget sends connections that arrive from now on to addr (HOST:PORT),
// or holds them if addr is "". Connections already open stay with the
// target they have. It returns the previous target.
func (p *Proxy) SetTarget(addr string) (previous string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	previous, p.target = p.target, addr
	close(p.changed)
	p.changed = make(chan struct{})
	return previous
}

// Active returns how many connections are open to target, for logs.
func (p *Proxy) Active(target string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if g := p.groups[target]; g != nil {
		return len(g.conns)
	}
	return 0
}

// Answered returns a channel that is closed once no connection to target
// waits for its first byte from it (or its end): every connection sent to
// target has been taken up by the server there. Call it once target is no
// longer current, so that nothing joins it; a supervisor that waits for it
// before it stops the old child spares that child's server the race
// between accepting and stopping, in which a server drops a connection it
// accepted at the moment it was told to stop.
func (p *Proxy) Answered(target string) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	g := p.groups[target]
	if g == nil || g.unanswered == 0 {
		done := make(chan struct{})
		close(done)
		return done
	}
	if g.settled == nil {
		g.settled = make(chan struct{})
	}
	return g.settled
}

// answered notes that target sent c its first byte, or its end.
func (p *Proxy) answered(target string, c *pair) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if g := p.groups[target]; g != nil {
		if done, ok := g.conns[c]; ok && !done {
			g.conns[c] = true
			g.answeredOne()
		}
	}
}

// closeWait bounds how long Drain and Serve wait for connections they
// closed to finish: a closed socket ends its copies at once, so this is only
// a bound, never waited out in practice.
const closeWait = 5 * time.Second

// Drain waits until every connection to target has closed, or until ctx
// ends (the --grace deadline), then closes the ones left and returns their
// number. Call it once target is no longer current: while it is, new
// connections keep joining it.
func (p *Proxy) Drain(ctx context.Context, target string) (closed int) {
	p.mu.Lock()
	g := p.groups[target]
	if g == nil {
		p.mu.Unlock()
		return 0
	}
	if g.idle == nil {
		g.idle = make(chan struct{})
	}
	idle := g.idle
	p.mu.Unlock()
	select {
	case <-idle:
		return 0
	case <-ctx.Done():
	}
	p.mu.Lock()
	left := make([]*pair, 0, len(g.conns))
	for c := range g.conns {
		left = append(left, c)
	}
	p.mu.Unlock()
	for _, c := range left {
		c.close()
	}
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
		p.opts.Log.Warn("proxy: connections still open after close", "target", target, "connections", p.Active(target))
	}
	return len(left)
}

// Serve accepts connections until ctx ends, which closes the listener, or
// until Accept fails for good; it returns nil on ctx's end. Before it
// returns it closes every connection still open and waits for each one's
// goroutines: nothing it started outlives it.
//
// Holding: while there is no target, Serve does not accept, and new
// connections wait in the kernel's accept queue (the listen backlog,
// net.core.somaxconn; past it the kernel drops SYNs, which clients
// retransmit: a delay, never a refusal) for as long as there is no target.
// Only one connection, accepted just before the target went, waits in this
// process, for at most HoldTimeout, then is closed.
func (p *Proxy) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { p.ln.Close() })
	defer stop()
	defer p.closeAll()
	var backoff time.Duration
	for {
		if !p.waitTarget(ctx) {
			return nil
		}
		c, err := p.ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("proxy accept: %w", err)
			}
			// Out of fds or memory: wait for connections to end, as
			// net/http does, rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.opts.Log.Warn("proxy accept", "error", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil
			}
			continue
		}
		backoff = 0
		p.wg.Add(1)
		go p.handle(ctx, c)
	}
}

// waitTarget waits until there is a target or ctx ends.
func (p *Proxy) waitTarget(ctx context.Context) bool {
	for {
		p.mu.Lock()
		target, changed := p.target, p.changed
		p.mu.Unlock()
		if target != "" {
			return true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}

func (p *Proxy) closeAll() {
	p.mu.Lock()
	p.closing = true
	var all []*pair
	for _, g := range p.groups {
		for c := range g.conns {
			all = append(all, c)
		}
	}
	p.mu.Unlock()
	for _, c := range all {
		c.close()
	}
	p.wg.Wait()
}

// register adds c to the current target's group, waiting up to
// HoldTimeout for a target if there is none.
func (p *Proxy) register(ctx context.Context, c *pair) (string, bool) {
	var hold <-chan time.Time
	for {
		p.mu.Lock()
		target, changed := p.target, p.changed
		if p.closing {
			p.mu.Unlock()
			return "", false
		}
		if target != "" {
			g := p.groups[target]
			if g == nil {
				g = &group{conns: make(map[*pair]bool)}
				p.groups[target] = g
			}
			g.conns[c] = false
			g.unanswered++
			p.mu.Unlock()
			return target, true
		}
		p.mu.Unlock()
		if hold == nil {
			t := time.NewTimer(p.opts.HoldTimeout)
			defer t.Stop()
			hold = t.C
		}
		select {
		case <-changed:
		case <-hold:
			return "", false
		case <-ctx.Done():
			return "", false
		}
	}
}

func (p *Proxy) unregister(target string, c *pair) {
	p.mu.Lock()
	defer p.mu.Unlock()
	g := p.groups[target]
	if done, ok := g.conns[c]; ok && !done {
		g.answeredOne()
	}
	delete(g.conns, c)
	if len(g.conns) == 0 {
		if g.idle != nil {
			close(g.idle)
		}
		delete(p.groups, target)
	}
}
