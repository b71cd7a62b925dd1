package proxy_test

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/proxy"
)

// A server that accepts, reads the first part of a request (the headers
// of an upload), acts on it, then resets the connection must never see
// it again: the proxy does not replay a connection whose server accepted
// it, even when the target changes at once (as when the reset came from a
// child being replaced). The client sees the reset.
func TestNoReplayAfterTheServerRead(t *testing.T) {
	actor, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer actor.Close()
	var logs syncLog
	p, addr := startProxy(t, proxy.Options{Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	p.SetTarget(actor.Addr().String())
	b := startBackend(t, "B")
	acted := make(chan string, 1)
	go func() {
		c, err := actor.Accept()
		if err != nil {
			return
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		acted <- line
		// The target moves on, as the reset of a child being replaced
		// would have it, then the reset: unread bytes and no linger.
		p.SetTarget(b.addr())
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}()
	c := dial(t, addr)
	fmt.Fprintf(c.c, "PUT /upload\n%s\n", strings.Repeat("x", 10<<10))
	select {
	case line := <-acted:
		if line != "PUT /upload\n" {
			t.Fatalf("the server read %q", line)
		}
	case <-time.After(deadline):
		t.Fatal("the server never read the request")
	}
	got, err := c.r.ReadString('\n')
	if err == nil {
		t.Fatalf("the client got %q: the request was replayed to the new target", got)
	}
	if strings.Contains(logs.String(), "replaying") {
		t.Errorf("the log says a replay:\n%s", logs.String())
	}
}
