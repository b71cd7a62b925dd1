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
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/paramexec/paramexec/internal/listen"
)

// Spec is one parsed --proxy LISTEN=TARGET_ENV value.
type Spec struct {
	// Listen is the HOST:PORT paramexec listens on (HOST empty: all).
	Listen string
	// TargetEnv is the variable that tells each child its port.
	TargetEnv string
}

// ParseSpec parses LISTEN=TARGET_ENV, where LISTEN is tcp://HOST:PORT,
// HOST:PORT or :PORT and TARGET_ENV a variable name ([A-Za-z_][A-Za-z0-9_]*).
// Errors wrap listen.ErrUsage.
func ParseSpec(value string) (Spec, error) {
	eq := strings.LastIndexByte(value, '=')
	if eq < 0 {
		return Spec{}, fmt.Errorf("--proxy %q: want LISTEN=TARGET_ENV, e.g. :8080=PORT: %w", value, listen.ErrUsage)
	}
	addr, env := value[:eq], value[eq+1:]
	if !validEnvName(env) {
		return Spec{}, fmt.Errorf("--proxy %q: %q is not a variable name: %w", value, env, listen.ErrUsage)
	}
	if strings.Contains(addr, "=") {
		return Spec{}, fmt.Errorf("--proxy %q: LISTEN takes no name: %w", value, listen.ErrUsage)
	}
	ls, err := listen.Parse(addr, 0)
	if err != nil {
		return Spec{}, fmt.Errorf("--proxy %q: %w", value, err)
	}
	if ls.Network != "tcp" {
		return Spec{}, fmt.Errorf("--proxy %q: LISTEN must be TCP: %w", value, listen.ErrUsage)
	}
	return Spec{Listen: ls.Address, TargetEnv: env}, nil
}

func validEnvName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '_' && (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return s != ""
}

// Listen binds spec's address. Errors wrap listen.ErrBind (exit 3), as a
// --listen address the machine refuses.
func Listen(ctx context.Context, spec Spec) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", spec.Listen)
	if err != nil {
		return nil, fmt.Errorf("--proxy %s: %w: %w", spec.Listen, listen.ErrBind, err)
	}
	return ln, nil
}

// FreePort returns a loopback TCP port nobody listens on, for a child to
// bind: it binds 127.0.0.1:0, reads the port the kernel chose and closes.
//
// The port is free when FreePort returns; between then and the child's bind
// any other process may take it. Linux (4.6 and later) gives bind(0) ports
// of the parity that connect(2) avoids, so outgoing connections, including
// the proxy's own, seldom do. Readiness covers the rest: a child that cannot
// bind exits or never becomes ready, and is a failed start; but a TCP-connect
// readiness check cannot tell the child's listener from a stranger's, so
// the caller should prefer a check that only the app answers (an HTTP path).
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free loopback port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Options tunes a Proxy; the zero value is usable.
type Options struct {
	// DialTimeout bounds a connect to the target; default 5s.
	DialTimeout time.Duration
	// HoldTimeout bounds how long a connection accepted while there is no
	// target waits for one before it is closed; default 60s, the default
	// --ready-timeout. See Serve for the rest of the holding rule.
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
		opts.HoldTimeout = 60 * time.Second
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

// dialAttempts bounds the tries of one connection: a target that refuses
// is retried only if the target changed meanwhile (the child it named died
// and a new one took over).
const dialAttempts = 3

func (p *Proxy) handle(ctx context.Context, client net.Conn) {
	defer p.wg.Done()
	c := &pair{client: client}
	defer c.close()
	for try := 1; ; try++ {
		target, backend := p.connect(ctx, c)
		if backend == nil {
			return
		}
		again := p.exchange(c, target, backend)
		if !again || try == dialAttempts || !p.waitChange(ctx, target) {
			p.unregister(target, c)
			return
		}
		p.unregister(target, c)
		p.opts.Log.Debug("proxy: the old target reset a connection its server never accepted; replaying it to the new one (no byte of it had been sent)", "target", target)
	}
}

// connect registers c with the current target and dials it, and returns
// both, or a nil backend when it cannot (c is then unregistered).
func (p *Proxy) connect(ctx context.Context, c *pair) (string, net.Conn) {
	for attempt := 1; ; attempt++ {
		target, ok := p.register(ctx, c)
		if !ok {
			if ctx.Err() == nil {
				p.opts.Log.Warn("proxy: no target in time, closing connection", "hold", p.opts.HoldTimeout)
			}
			return "", nil
		}
		d := net.Dialer{Timeout: p.opts.DialTimeout}
		b, err := d.DialContext(ctx, "tcp", target)
		if err == nil {
			if !c.setBackend(b) {
				p.unregister(target, c)
				return "", nil
			}
			return target, b
		}
		p.unregister(target, c)
		// A refused dial means nothing listens on the target's port: its
		// child got the stop signal (and closed its listener) a moment
		// before the supervisor moved the target away, or died. Its
		// replacement comes as a new target within a few milliseconds of
		// a stop; wait for that, as for a reset (see waitChange), rather
		// than fail a connection that a moment later would be served.
		if attempt == dialAttempts || !p.waitChange(ctx, target) {
			p.opts.Log.Warn("proxy: cannot reach target, closing connection", "target", target, "error", err)
			return "", nil
		}
	}
}

// changeWait bounds how long a connection reset by a target waits for the
// target to change before it is given up: the stop of a child and the
// SetTarget that follows it are a few milliseconds apart.
const changeWait = 2 * time.Second

// waitChange reports whether the target moves away from old within
// changeWait.
func (p *Proxy) waitChange(ctx context.Context, old string) bool {
	t := time.NewTimer(changeWait)
	defer t.Stop()
	for {
		p.mu.Lock()
		target, changed := p.target, p.changed
		p.mu.Unlock()
		if target != old {
			return true
		}
		select {
		case <-changed:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// exchange forwards c between its client and backend until both
// directions end. It returns again when the backend reset the connection
// before its server accepted it: the kernel resets the connections left
// in a listener's accept queue when it closes, which is what a child
// stopped for a restart does to those the proxy dialled just before its
// stop signal. The client's bytes wait until the server has accepted the
// connection (gate), so such a connection carried none of them, and the
// caller sends it to the next target: no server ever sees a byte of it
// twice, and the client loses nothing. A reset after the server accepted
// is final, answered or not: answering is not acting, and a server may act
// on the first part of a request (the headers of an upload), then reset.
func (p *Proxy) exchange(c *pair, target string, backend net.Conn) (again bool) {
	g := newGate()
	up := make(chan struct{})
	go func() {
		defer close(up)
		if !g.await(backend) {
			return
		}
		if p.opts.ProxyHeader {
			if _, err := io.WriteString(backend, proxyHeader(c.client)); err != nil {
				c.close()
				return
			}
		}
		c.forward(backend, c.client)
	}()
	bp := p.bufs.get()
	n, err := backend.Read(*bp)
	if n > 0 || errors.Is(err, io.EOF) {
		// Only a server that accepted a connection can answer on it.
		g.open()
		p.answered(target, c)
		var werr error
		if n > 0 {
			_, werr = c.client.Write((*bp)[:n])
		}
		// Back before the copies, which splice and need no buffer.
		p.bufs.put(bp)
		switch {
		case werr != nil:
			c.close()
		case err == nil:
			c.forward(c.client, backend)
		case errors.Is(err, io.EOF):
			if cw, ok := c.client.(interface{ CloseWrite() error }); !ok || cw.CloseWrite() != nil {
				c.close()
			}
		default:
			c.close()
		}
		<-up
		return false
	}
	p.bufs.put(bp)
	if errors.Is(err, syscall.ECONNRESET) && g.shut() && c.dropBackend(backend) {
		<-up
		return true
	}
	g.shut()
	c.close()
	<-up
	return false
}

// pair is one client connection and, once dialled, its backend.
type pair struct {
	client net.Conn

	mu      sync.Mutex
	backend net.Conn
	closed  bool
}

// setBackend attaches b, or closes it if the pair was closed meanwhile.
func (c *pair) setBackend(b net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		b.Close()
		return false
	}
	c.backend = b
	return true
}

// dropBackend closes b, the backend that failed, unless the pair was
// closed meanwhile; a later setBackend attaches the next one.
func (c *pair) dropBackend(b net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	b.Close()
	if c.closed {
		return false
	}
	c.backend = nil
	return true
}

func (c *pair) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	c.client.Close()
	if c.backend != nil {
		c.backend.Close()
	}
}

// forward copies src to dst until src's end, which it passes on as a
// half-close of dst; the other direction goes on. An error in either
// direction (a reset, a Drain) closes both ends, which ends the other copy.
// Between two *net.TCPConn, io.Copy splices on Linux.
func (c *pair) forward(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			err = cw.CloseWrite()
		} else {
			err = errors.ErrUnsupported
		}
	}
	if err != nil {
		c.close()
	}
}

// proxyHeader is the PROXY protocol v1 line for client: its address, then
// the address it connected to.
func proxyHeader(client net.Conn) string {
	src, ok1 := client.RemoteAddr().(*net.TCPAddr)
	dst, ok2 := client.LocalAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return "PROXY UNKNOWN\r\n"
	}
	family := "TCP6"
	sip, dip := src.IP.String(), dst.IP.String()
	if s4, d4 := src.IP.To4(), dst.IP.To4(); s4 != nil && d4 != nil {
		family, sip, dip = "TCP4", s4.String(), d4.String()
	}
	return "PROXY " + family + " " + sip + " " + dip + " " + strconv.Itoa(src.Port) + " " + strconv.Itoa(dst.Port) + "\r\n"
}
