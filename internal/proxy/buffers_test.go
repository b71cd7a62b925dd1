package proxy

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"testing"
	"time"
)

// Long-lived connections hold no pooled buffer once their first exchange
// is done and the copies splice: 20 idle connections, each after one
// request and answer, leave none lent out. Before, each kept two 16 KiB
// buffers for its whole life. It watches for up to 5 s for the count to
// reach 0, which it does within microseconds of the last answer; the
// connections stay open and idle throughout.
func TestBuffersReturnedOnceSpliced(t *testing.T) {
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					fmt.Fprintf(c, "ok:%s", line)
				}
			}()
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := New(ln, Options{HoldTimeout: time.Minute})
	p.SetTarget(backend.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx) }()
	defer func() { cancel(); <-served }()

	const conns = 20
	for i := range conns {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		fmt.Fprintf(c, "hello %d\n", i)
		if line, err := bufio.NewReader(c).ReadString('\n'); line != fmt.Sprintf("ok:hello %d\n", i) {
			t.Fatalf("connection %d: %q, %v", i, line, err)
		}
	}
	end := time.Now().Add(5 * time.Second)
	for p.bufs.out.Load() != 0 {
		if time.Now().After(end) {
			t.Fatalf("%d buffers lent out to %d idle connections after their first exchange; want 0", p.bufs.out.Load(), conns)
		}
		time.Sleep(time.Millisecond)
	}
}
