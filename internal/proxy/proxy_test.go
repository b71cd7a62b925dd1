package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/testenv"

	"github.com/paramexec/paramexec/internal/listen"
	"github.com/paramexec/paramexec/internal/proxy"
	"golang.org/x/sys/unix"
)

// deadline bounds every wait for an event; it is no speed assertion.
const deadline = 30 * time.Second

// backend is a child's server: for each line X it answers "ID:X"; to "bye"
// it answers and half-closes, then keeps reading into got; at the client's
// end it answers "ID:eof" and closes.
type backend struct {
	ln  net.Listener
	id  string
	got chan string
	wg  sync.WaitGroup
}

func startBackend(t *testing.T, id string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{ln: ln, id: id, got: make(chan string, 16)}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				b.serve(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); b.wg.Wait() })
	return b
}

func (b *backend) addr() string { return b.ln.Addr().String() }

func (b *backend) serve(c *net.TCPConn) {
	defer c.Close()
	r := bufio.NewReader(c)
	halfClosed := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if !halfClosed {
				fmt.Fprintf(c, "%s:eof\n", b.id)
			}
			return
		}
		line = strings.TrimSuffix(line, "\n")
		if halfClosed {
			b.got <- line
			continue
		}
		fmt.Fprintf(c, "%s:%s\n", b.id, line)
		if line == "bye" {
			c.CloseWrite()
			halfClosed = true
		}
	}
}

// startProxy serves a Proxy on a loopback port until the test ends.
func startProxy(t *testing.T, opts proxy.Options) (*proxy.Proxy, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if opts.HoldTimeout == 0 {
		opts.HoldTimeout = time.Minute // the caller's, as --ready-timeout is paramexec's
	}
	p := proxy.New(ln, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(deadline):
			t.Errorf("Serve did not return within %v of its context's end", deadline)
		}
	})
	return p, ln.Addr().String()
}

// client is one connection through the proxy.
type client struct {
	t *testing.T
	c *net.TCPConn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, deadline)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(deadline))
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c.(*net.TCPConn), r: bufio.NewReader(c)}
}

// ask sends line and wants the answer want.
func (c *client) ask(line, want string) {
	c.t.Helper()
	if _, err := fmt.Fprintf(c.c, "%s\n", line); err != nil {
		c.t.Fatalf("send %q: %v", line, err)
	}
	c.expect(want)
}

func (c *client) expect(want string) {
	c.t.Helper()
	got, err := c.r.ReadString('\n')
	if got != want+"\n" {
		c.t.Fatalf("got %q, %v; want %q", got, err, want)
	}
}

// expectEOF wants the connection closed (or half-closed) by the far end.
func (c *client) expectEOF() {
	c.t.Helper()
	if b, err := c.r.ReadByte(); err != io.EOF {
		c.t.Fatalf("got %q, %v; want EOF", b, err)
	}
}

func TestParseSpec(t *testing.T) {
	for in, want := range map[string]proxy.Spec{
		":8080=PORT":                     {Listen: ":8080", TargetEnv: "PORT"},
		"tcp://127.0.0.1:80=SERVER_PORT": {Listen: "127.0.0.1:80", TargetEnv: "SERVER_PORT"},
		"[::]:8080=_p1":                  {Listen: "[::]:8080", TargetEnv: "_p1"},
	} {
		if got, err := proxy.ParseSpec(in); err != nil || got != want {
			t.Errorf("ParseSpec(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", ":8080", ":8080=", ":8080=1PORT", ":8080=PO-RT", "unix:///a=PORT", "a=:80=PORT", ":x=PORT"} {
		if got, err := proxy.ParseSpec(in); !errors.Is(err, listen.ErrUsage) {
			t.Errorf("ParseSpec(%q) = %+v, %v; want ErrUsage", in, got, err)
		}
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if _, err := proxy.Listen(context.Background(), proxy.Spec{Listen: taken.Addr().String()}); !errors.Is(err, listen.ErrBind) {
		t.Errorf("Listen on a port in use: %v; want ErrBind", err)
	}
}

func TestFreePort(t *testing.T) {
	port, err := proxy.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("the free port %d cannot be bound: %v", port, err)
	}
	ln.Close()
}

// TestSwitchAndDrain: a connection opened before a switch keeps its target
// and keeps working, during the drain too, until the drain's grace ends;
// new ones go to the new target; a drain whose connections all close ends
// without closing any.
func TestSwitchAndDrain(t *testing.T) {
	a, b := startBackend(t, "A"), startBackend(t, "B")
	p, addr := startProxy(t, proxy.Options{})
	p.SetTarget(a.addr())
	c1 := dial(t, addr)
	c1.ask("1", "A:1")
	if prev := p.SetTarget(b.addr()); prev != a.addr() {
		t.Errorf("SetTarget returned %q; want the previous target %q", prev, a.addr())
	}
	c2 := dial(t, addr)
	c2.ask("2", "B:2")
	c1.ask("3", "A:3")
	if n := p.Active(a.addr()); n != 1 {
		t.Errorf("Active(A) = %d; want 1", n)
	}

	grace, endGrace := context.WithCancel(context.Background())
	drained := make(chan int, 1)
	go func() { drained <- p.Drain(grace, a.addr()) }()
	c1.ask("4", "A:4") // still served while draining
	endGrace()
	select {
	case n := <-drained:
		if n != 1 {
			t.Errorf("Drain closed %d connections; want 1", n)
		}
	case <-time.After(deadline):
		t.Fatal("Drain did not return after its grace ended")
	}
	c1.expectEOF()

	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	go func() { drained <- p.Drain(ctx, b.addr()) }()
	c2.ask("5", "B:5")
	c2.c.Close()
	select {
	case n := <-drained:
		if n != 0 || ctx.Err() != nil {
			t.Errorf("Drain closed %d connections (context %v); want 0 before the grace", n, ctx.Err())
		}
	case <-time.After(deadline):
		t.Fatal("Drain did not return once the last connection closed")
	}
}

// TestHalfClose: each side's end of writing reaches the other as EOF while
// the other direction goes on.
func TestHalfClose(t *testing.T) {
	a := startBackend(t, "A")
	p, addr := startProxy(t, proxy.Options{})
	p.SetTarget(a.addr())

	c := dial(t, addr)
	fmt.Fprintf(c.c, "x\n")
	if err := c.c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.expect("A:x")
	c.expect("A:eof") // the backend saw our EOF and could still answer
	c.expectEOF()

	c = dial(t, addr)
	c.ask("bye", "A:bye")
	c.expectEOF() // the backend's half-close
	fmt.Fprintf(c.c, "after\n")
	select {
	case got := <-a.got:
		if got != "after" {
			t.Errorf("backend got %q after its half-close; want %q", got, "after")
		}
	case <-time.After(deadline):
		t.Fatal("a line sent after the backend's half-close did not reach it")
	}
}

// waitInAccept waits until Serve is blocked in Accept, which it only is
// with a target.
func waitInAccept(t *testing.T) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for end := time.Now().Add(deadline); time.Now().Before(end); time.Sleep(time.Millisecond) {
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "(*TCPListener).Accept") && strings.Contains(g, "proxy.(*Proxy).Serve") {
				return
			}
		}
	}
	t.Fatal("Serve never blocked in Accept")
}

// TestHoldWithoutTarget: with no target, a connection is not refused: it
// waits in the accept queue and is served once a target is set. The one
// accepted as the target went waits HoldTimeout, then is closed.
func TestHoldWithoutTarget(t *testing.T) {
	a := startBackend(t, "A")
	p, addr := startProxy(t, proxy.Options{HoldTimeout: 50 * time.Millisecond})
	c := dial(t, addr) // accepted by the kernel, not by the proxy
	fmt.Fprintf(c.c, "1\n")
	p.SetTarget(a.addr())
	c.expect("A:1")

	waitInAccept(t)
	p.SetTarget("")
	held := dial(t, addr) // accepted by the blocked Accept, then held
	held.expectEOF()
	queued := dial(t, addr) // the proxy no longer accepts
	fmt.Fprintf(queued.c, "2\n")
	p.SetTarget(a.addr())
	queued.expect("A:2")
}

func TestProxyHeader(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p, addr := startProxy(t, proxy.Options{ProxyHeader: true})
	p.SetTarget(ln.Addr().String())
	c := dial(t, addr)
	fmt.Fprintf(c.c, "hello\n")
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(deadline))
	r := bufio.NewReader(s)
	header, _ := r.ReadString('\n')
	first, _ := r.ReadString('\n')
	cl := c.c.LocalAddr().(*net.TCPAddr)
	pr := c.c.RemoteAddr().(*net.TCPAddr)
	if want := fmt.Sprintf("PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n", cl.Port, pr.Port); header != want || first != "hello\n" {
		t.Errorf("backend got %q then %q; want %q then %q", header, first, want, "hello\n")
	}
}

// TestDeadTarget: a target nobody listens on closes the client's
// connection rather than leaving it open.
func TestDeadTarget(t *testing.T) {
	port, err := proxy.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p, addr := startProxy(t, proxy.Options{})
	p.SetTarget("127.0.0.1:" + strconv.Itoa(port))
	dial(t, addr).expectEOF()
}

// TestThousandConnections opens 1,000 connections at once, half ended by a
// full close and half by a half-close, and wants goroutines and fds back to
// where they were: the proxy and the backend own every goroutine they start.
func TestThousandConnections(t *testing.T) {
	const n = 1000
	// A net.Conn's finalizer closes its fd: with the collector running, a
	// leaked connection could be closed behind the test's back.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	a := startBackend(t, "A")
	p, addr := startProxy(t, proxy.Options{})
	p.SetTarget(a.addr())
	warm := dial(t, addr)
	warm.ask("warm", "A:warm")
	warm.c.Close()
	waitFor(t, "the warm-up connection's end", func() bool { return p.Active(a.addr()) == 0 })
	goroutines, sockets, fds := runtime.NumGoroutine(), countFds(t, "socket:"), countFds(t, "")

	clients := make([]*client, n)
	for i := range clients {
		clients[i] = dial(t, addr)
		fmt.Fprintf(clients[i].c, "%d\n", i)
	}
	for i, c := range clients {
		c.expect("A:" + strconv.Itoa(i))
	}
	if got := p.Active(a.addr()); got != n {
		t.Errorf("Active = %d with every connection open; want %d", got, n)
	}
	for i, c := range clients {
		if i%2 == 0 {
			c.c.Close()
			continue
		}
		c.c.CloseWrite()
		c.expect("A:eof")
		c.expectEOF()
		c.c.Close()
	}
	waitFor(t, "every connection's end", func() bool { return p.Active(a.addr()) == 0 })
	waitFor(t, fmt.Sprintf("goroutines back to %d", goroutines), func() bool { return runtime.NumGoroutine() <= goroutines })
	waitFor(t, fmt.Sprintf("sockets back to %d", sockets), func() bool { return countFds(t, "socket:") <= sockets })
	// The rest are the pipes Go's splice keeps in a sync.Pool, closed by
	// their finalizers once the collector empties the pool.
	waitFor(t, fmt.Sprintf("fds back to %d after collection", fds), func() bool {
		runtime.GC()
		return countFds(t, "") <= fds
	})
}

// countFds counts this process's fds whose /proc link starts with prefix.
func countFds(t *testing.T, prefix string) int {
	t.Helper()
	d, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range d {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// waitFor polls cond until it holds, for at most deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(deadline); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("no %s within %v", what, deadline)
		}
	}
}

// syncLog is a log destination the test reads while the proxy writes.
type syncLog = testenv.Buffer

// A child stopped for a restart closes its listening socket, and the
// kernel resets the connections still in its accept queue, among them one
// the proxy had dialled and sent the client's bytes. The proxy replays
// them to the next target: the client gets one answer, from it.
func TestReplayAfterResetInAcceptQueue(t *testing.T) {
	queued, err := net.Listen("tcp", "127.0.0.1:0") // never accepts
	if err != nil {
		t.Fatal(err)
	}
	defer queued.Close()
	b := startBackend(t, "B")
	var logs syncLog
	p, addr := startProxy(t, proxy.Options{Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	p.SetTarget(queued.Addr().String())
	c := dial(t, addr)
	fmt.Fprintf(c.c, "hello\n")
	// The proxy's connection waits in the accept queue: for a listening
	// socket, TCP_INFO's unacked is the queue's length.
	rc, err := queued.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	inQueue := func() bool {
		var n uint32
		rc.Control(func(fd uintptr) {
			if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
				n = info.Unacked
			}
		})
		return n == 1
	}
	for end := time.Now().Add(deadline); !inQueue(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the proxy's connection never reached the accept queue")
		}
	}
	// And its bytes have gone out: they are what must be replayed.
	for end := time.Now().Add(deadline); p.Active(queued.Addr().String()) != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the connection is not counted against the queued target")
		}
	}
	// Give the proxy time to send "hello", were it to send it to a
	// server that has not accepted (it must not: see exchange).
	time.Sleep(50 * time.Millisecond)
	p.SetTarget(b.addr())
	queued.Close()
	c.expect("B:hello")
	c.ask("again", "B:again")
	if !strings.Contains(logs.String(), "replaying") {
		t.Errorf("the log does not say the connection was replayed:\n%s", logs.String())
	}
}

// A child that got its stop signal closes its listener a moment before the
// supervisor moves the target away: a connection dialled in between is
// refused by the old target. It waits for the new target instead of
// failing, as the stop-first restart under load showed it must.
func TestRefusedDialWaitsForTheNextTarget(t *testing.T) {
	port, err := proxy.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p, addr := startProxy(t, proxy.Options{})
	p.SetTarget("127.0.0.1:" + strconv.Itoa(port)) // nothing listens there
	c := dial(t, addr)
	if _, err := fmt.Fprintf(c.c, "hello\n"); err != nil {
		t.Fatal(err)
	}
	// Let the proxy dial the dead target and be refused before the next
	// one is set; the client must not have been closed meanwhile.
	time.Sleep(200 * time.Millisecond)
	p.SetTarget(startBackend(t, "new").addr())
	c.expect("new:hello")
	c.c.Close() // before the backend's cleanup waits for its connections
}

// Answered holds while a connection sent to the old target waits for its
// first byte, whatever other connections to it do, and is closed by that
// byte: a supervisor waits for it before it stops the old child.
func TestAnsweredWaitsForTheFirstByte(t *testing.T) {
	old, err := net.Listen("tcp", "127.0.0.1:0") // its connections are the test's to answer
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	p, addr := startProxy(t, proxy.Options{})
	p.SetTarget(old.Addr().String())
	accept := func(c *client, line string) net.Conn {
		t.Helper()
		if _, err := fmt.Fprintf(c.c, "%s\n", line); err != nil {
			t.Fatal(err)
		}
		s, err := old.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		s.SetDeadline(time.Now().Add(deadline))
		if got, err := bufio.NewReader(s).ReadString('\n'); got != line+"\n" {
			t.Fatalf("the old target read %q, %v; want %q", got, err, line)
		}
		return s
	}
	kept := dial(t, addr) // answered before the switch, then idle: it holds nothing
	fmt.Fprintf(accept(kept, "first"), "answered\n")
	kept.expect("answered")
	waiting := dial(t, addr)
	s := accept(waiting, "second")

	p.SetTarget(startBackend(t, "new").addr())
	answered := p.Answered(old.Addr().String())
	// Nothing but the test's answer below can close it: 200 ms is ample
	// for a wrong count to show.
	select {
	case <-answered:
		t.Fatal("Answered is closed while a connection waits for its first byte")
	case <-time.After(200 * time.Millisecond):
	}
	fmt.Fprintf(s, "late\n")
	waiting.expect("late")
	select {
	case <-answered:
	case <-time.After(deadline):
		t.Fatal("Answered is not closed after the first byte")
	}
	select {
	case <-p.Answered("127.0.0.1:1"):
	default:
		t.Error("Answered of a target with no connection is not closed")
	}
	kept.c.Close()
	waiting.c.Close()
}
