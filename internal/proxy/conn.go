package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"
)

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
