// Command gofilelistener is the smallest Go HTTP service that serves on the
// socket paramexec --listen passes it, so that a restart refuses nothing.
//
// paramexec binds the address once and hands it to every child by systemd's
// socket-activation protocol: the socket is fd 3, LISTEN_FDS=1 and
// LISTEN_PID is the child's own pid. The service takes it with
// net.FileListener instead of binding a port of its own:
//
//	paramexec --env-file app.env --interval 1m --listen tcp://127.0.0.1:8080 \
//	    --restart overlap --ready notify -- ./gofilelistener
//
// It answers every request with its pid and $GREETING. With --ready notify
// it sends READY=1 to $NOTIFY_SOCKET once it accepts, which is what lets
// --restart overlap judge the new child and not the old one, which still
// accepts on the same socket. On SIGTERM it stops accepting, answers what
// it accepted, and exits 0: the next child takes the queued connections.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// drainTimeout bounds the answers to requests already accepted at SIGTERM;
// keep it below paramexec's --grace.
const drainTimeout = 5 * time.Second

func main() {
	if err := run(); err != nil {
		log.Fatalf("gofilelistener: %v", err)
	}
}

func run() error {
	// Catch SIGTERM before READY=1: paramexec may stop a child as soon as it
	// is ready, and the default action would kill it mid-request (exit 143).
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ln, err := inherited()
	if err != nil {
		return err
	}
	greeting := os.Getenv("GREETING")
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "pid %d: %s\n", os.Getpid(), greeting)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if err := notifyReady(); err != nil {
		return err
	}

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	// Stop accepting first and let Serve return, so that every connection
	// it accepted is tracked; then answer them. Shutdown alone can drop a
	// connection accepted at the moment it begins.
	srv.SetKeepAlivesEnabled(false)
	ln.Close()
	if err := <-served; !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	drain, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	return srv.Shutdown(drain)
}

// inherited is the listener on fd 3, when LISTEN_PID names this process as
// the protocol requires; the variables are unset so that no program this
// one starts takes the socket for its own.
func inherited() (net.Listener, error) {
	pid, _ := strconv.Atoi(os.Getenv("LISTEN_PID"))
	if pid != os.Getpid() || os.Getenv("LISTEN_FDS") != "1" {
		return nil, fmt.Errorf("no socket passed (LISTEN_PID=%q, LISTEN_FDS=%q): run me under paramexec --listen",
			os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"))
	}
	for _, name := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(name)
	}
	f := os.NewFile(3, "listen0")
	defer f.Close() // FileListener keeps a duplicate
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("fd 3: %w", err)
	}
	return ln, nil
}

// notifyReady sends READY=1 to $NOTIFY_SOCKET, if there is one: the
// listener accepts from here on.
func notifyReady() error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("READY=1")); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}
