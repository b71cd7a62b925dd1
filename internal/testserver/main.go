// Command testserver is the HTTP child of the readiness and zero-downtime
// tests: it boots slowly, takes inherited sockets or binds a port, and notifies.
//
// It is configured by environment only, so that paramexec passes its
// configuration through like any other variable:
//
//	TESTSERVER_BOOT_DELAY   duration before it listens or accepts (default 0)
//	TESTSERVER_PORT_ENV     name of the variable holding the port to bind on
//	                        127.0.0.1 when no socket is inherited (default PORT)
//	TESTSERVER_VALUE_ENV    name of the variable whose value / reports (default VALUE)
//	TESTSERVER_HEALTH_PATH  path that answers 200 once booted (default /up)
//	TESTSERVER_NOTIFY_DELAY duration after booting before READY=1 (default 0);
//	                        sent, with STATUS=serving pid N, when NOTIFY_SOCKET is set;
//	                        SIGUSR1 then sends STATUS=still serving pid N
//	TESTSERVER_CRASH_IF     VAR=VALUE: exit at start when $VAR is VALUE ...
//	TESTSERVER_CRASH_CODE   ... with this code (default 1) ...
//	TESTSERVER_CRASH_AFTER  ... after this long (default 0)
//	TESTSERVER_HANG_IF      VAR=VALUE: when $VAR is VALUE, never boot (no
//	                        accept, no bind, no READY=1) until SIGTERM
//	TESTSERVER_DRAIN        how long SIGTERM waits for open requests (default 30s)
//	TESTSERVER_STOP         "abrupt": SIGTERM exits at once, dropping every
//	                        connection (a server with no graceful stop)
//	TESTSERVER_ANSWER_DELAY how long / takes to answer (default 0): requests
//	                        in flight at any moment, under load
//
// Sockets are inherited as sd_listen_fds(3) takes them: only when
// LISTEN_PID is this process's pid; fds 3 … 3+LISTEN_FDS-1 are made
// close-on-exec, LISTEN_FDNAMES (when set) must have one name per fd, and
// the three variables are unset afterwards. When none are inherited it binds
// the port; with neither, it is misused.
//
// HTTP: / answers {"pid":N,"value":"…"}; /info adds how it listens, the fds
// it inherited (open without close-on-exec at start) and the LISTEN_*
// variables seen; /sleep?d=DURATION sends
// its headers, waits (at most a minute), then the body; /bytes?n=N sends N
// zero bytes (at most 1 GiB), for throughput. On SIGTERM it stops
// accepting, finishes open requests and exits 0. Misuse (a bad variable,
// a port in use) is reported on stderr with exit code 2.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/paramexec/paramexec/internal/sdnotify"
)

const (
	maxSleep = time.Minute
	maxBytes = 1 << 30
)

// Info is what /info answers; the tests decode it.
type Info struct {
	Pid       int               `json:"pid"`
	Value     string            `json:"value"`
	Source    string            `json:"source"`     // "inherited" or "port"
	FdNames   []string          `json:"fd_names"`   // of the inherited fds
	StartFds  []int             `json:"start_fds"`  // fds ≥ 3 inherited through exec
	ListenEnv map[string]string `json:"listen_env"` // LISTEN_* as found at start
	EnvAfter  []string          `json:"env_after"`  // LISTEN_* still set after taking them
}

func main() {
	startFds := inheritedFds() // first: before taking LISTEN_FDS marks them
	code, err := run(startFds)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testserver:", err)
	}
	os.Exit(code)
}

func run(startFds []int) (int, error) {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)

	boot, err := duration("TESTSERVER_BOOT_DELAY", 0)
	if err != nil {
		return 2, err
	}
	notifyDelay, err := duration("TESTSERVER_NOTIFY_DELAY", 0)
	if err != nil {
		return 2, err
	}
	drain, err := duration("TESTSERVER_DRAIN", 30*time.Second)
	if err != nil {
		return 2, err
	}
	abrupt := false
	switch v := os.Getenv("TESTSERVER_STOP"); v {
	case "", "graceful":
	case "abrupt":
		abrupt = true
	default:
		return 2, fmt.Errorf("TESTSERVER_STOP=%q: want graceful or abrupt", v)
	}
	answerDelay, err := duration("TESTSERVER_ANSWER_DELAY", 0)
	if err != nil {
		return 2, err
	}
	crashAfter, err := duration("TESTSERVER_CRASH_AFTER", 0)
	if err != nil {
		return 2, err
	}
	notifier, err := sdnotify.New(os.Getenv("NOTIFY_SOCKET"))
	if err != nil {
		return 2, err
	}
	defer notifier.Close()

	crash, err := matches("TESTSERVER_CRASH_IF")
	if err != nil {
		return 2, err
	}
	if crash {
		code := 1
		if s := os.Getenv("TESTSERVER_CRASH_CODE"); s != "" {
			if code, err = strconv.Atoi(s); err != nil || code < 0 || code > 255 {
				return 2, fmt.Errorf("TESTSERVER_CRASH_CODE=%q: want 0-255", s)
			}
		}
		time.Sleep(crashAfter)
		return code, fmt.Errorf("crashing as told by TESTSERVER_CRASH_IF (exit %d)", code)
	}
	hang, err := matches("TESTSERVER_HANG_IF")
	if err != nil {
		return 2, err
	}

	info := Info{Pid: os.Getpid(), StartFds: startFds, ListenEnv: map[string]string{}}
	info.Value = os.Getenv(envOr("TESTSERVER_VALUE_ENV", "VALUE"))
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if v, ok := os.LookupEnv(k); ok {
			info.ListenEnv[k] = v
		}
	}
	files, names, err := listenFds()
	if err != nil {
		return 2, err
	}
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if _, ok := os.LookupEnv(k); ok {
			info.EnvAfter = append(info.EnvAfter, k)
		}
	}
	notifier.Status("booting")

	// Booting: inherited sockets queue connections in their backlog, as a
	// real app's would before it accepts.
	select {
	case <-term:
		return 0, nil
	case <-time.After(boot):
	}
	if hang {
		<-term
		return 0, nil
	}

	var lns []net.Listener
	if len(files) > 0 {
		info.Source, info.FdNames = "inherited", names
		for _, f := range files {
			ln, err := net.FileListener(f)
			f.Close()
			if err != nil {
				return 2, fmt.Errorf("inherited fd %s: %w", f.Name(), err)
			}
			lns = append(lns, ln)
		}
	} else {
		portEnv := envOr("TESTSERVER_PORT_ENV", "PORT")
		port := os.Getenv(portEnv)
		if port == "" {
			return 2, fmt.Errorf("no socket: LISTEN_* gave none (%v) and $%s is empty", info.ListenEnv, portEnv)
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
		if err != nil {
			return 2, err
		}
		info.Source = "port"
		lns = append(lns, ln)
	}

	var busy connCount
	srv := &http.Server{Handler: handler(info, answerDelay), ReadHeaderTimeout: 10 * time.Second, ConnState: busy.track}
	served := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { served <- srv.Serve(ln) }()
	}

	var ready <-chan time.Time
	if notifier.Enabled() {
		ready = time.After(notifyDelay)
	}
	for {
		select {
		case <-ready:
			ready = nil
			if err := notifier.Ready(fmt.Sprintf("serving pid %d", info.Pid)); err != nil {
				return 2, err
			}
		case err := <-served:
			return 2, fmt.Errorf("serve: %w", err)
		case <-usr1:
			if err := notifier.Status(fmt.Sprintf("still serving pid %d", info.Pid)); err != nil {
				return 2, err
			}
		case <-term:
			if abrupt {
				return 0, nil
			}
			ctx, cancel := context.WithTimeout(context.Background(), drain)
			defer cancel()
			// Shutdown alone drops a connection it accepted whose request
			// it reads after Shutdown began (net/http returns from the
			// connection without an answer): a client sees EOF. A graceful
			// server stops accepting first, then answers every connection
			// it has accepted, then shuts down.
			srv.SetKeepAlivesEnabled(false)
			for _, ln := range lns {
				ln.Close()
			}
			// A connection Accept returned a moment ago is counted only
			// when Serve calls ConnState for it, which it does before it
			// returns: so wait for every Serve before counting.
			for range lns {
				select {
				case <-served:
				case <-ctx.Done():
				}
			}
			busy.wait(ctx)
			// Shutdown closes the listeners again unless Serve has
			// returned already: that second close is no failure.
			if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, net.ErrClosed) {
				return 1, fmt.Errorf("drain: %w", err)
			}
			return 0, nil
		}
	}
}

func handler(info Info, answerDelay time.Duration) http.Handler {
	mux := http.NewServeMux()
	health := envOr("TESTSERVER_HEALTH_PATH", "/up")
	mux.HandleFunc(health, func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "up")
	})
	mux.HandleFunc("/info", func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(info)
	})
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil || d < 0 || d > maxSleep {
			http.Error(w, "want d=DURATION up to 1m", http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		time.Sleep(d)
		fmt.Fprintf(w, "slept %v pid %d\n", d, info.Pid)
	})
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 || n > maxBytes {
			http.Error(w, "want n=COUNT up to 1 GiB", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		buf := make([]byte, 256<<10)
		for n > 0 {
			k := min(n, int64(len(buf)))
			if _, err := w.Write(buf[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		time.Sleep(answerDelay)
		json.NewEncoder(w).Encode(struct {
			Pid   int    `json:"pid"`
			Value string `json:"value"`
		}{info.Pid, info.Value})
	})
	return mux
}

// listenFds is sd_listen_fds(3) with unset_environment: the fds are this
// process's only if LISTEN_PID names it; the variables go in every case.
func listenFds() ([]*os.File, []string, error) {
	pidS, fdsS, namesS := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")
	_, hasNames := os.LookupEnv("LISTEN_FDNAMES")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	if pidS == "" {
		return nil, nil, nil
	}
	pid, err := strconv.Atoi(pidS)
	if err != nil || pid <= 0 {
		return nil, nil, fmt.Errorf("LISTEN_PID=%q is not a pid", pidS)
	}
	if pid != os.Getpid() {
		return nil, nil, nil // meant for another process
	}
	n, err := strconv.Atoi(fdsS)
	if err != nil || n < 0 {
		return nil, nil, fmt.Errorf("LISTEN_FDS=%q is not a count", fdsS)
	}
	names := make([]string, n)
	if hasNames {
		got := strings.Split(namesS, ":")
		if len(got) != n {
			return nil, nil, fmt.Errorf("LISTEN_FDNAMES has %d names for LISTEN_FDS=%d", len(got), n)
		}
		copy(names, got)
	} else {
		for i := range names {
			names[i] = "unknown"
		}
	}
	var files []*os.File
	for i := range n {
		fd := 3 + i
		if _, err := fcntl(fd, syscall.F_SETFD, syscall.FD_CLOEXEC); err != nil {
			return nil, nil, fmt.Errorf("LISTEN_FDS=%d: fd %d: %w", n, fd, err)
		}
		files = append(files, os.NewFile(uintptr(fd), names[i]))
	}
	return files, names, nil
}

// inheritedFds lists the descriptors from 3 up that came through exec:
// those open without close-on-exec. The Go runtime opens some of its own
// before main (cgroup CPU limits), always close-on-exec.
func inheritedFds() []int {
	var fds []int
	for fd := 3; fd < 1024; fd++ {
		if flags, err := fcntl(fd, syscall.F_GETFD, 0); err == nil && flags&syscall.FD_CLOEXEC == 0 {
			fds = append(fds, fd)
		}
	}
	return fds
}

func fcntl(fd, cmd, arg int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), uintptr(cmd), uintptr(arg))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func duration(name string, def time.Duration) (time.Duration, error) {
	s := os.Getenv(name)
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s=%q: want a duration ≥ 0", name, s)
	}
	return d, nil
}

// matches reads a VAR=VALUE condition from name.
func matches(name string) (bool, error) {
	s := os.Getenv(name)
	if s == "" {
		return false, nil
	}
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return false, errors.New(name + ": want VAR=VALUE")
	}
	got, set := os.LookupEnv(k)
	return set && got == v, nil
}

func envOr(name, def string) string {
	if s := os.Getenv(name); s != "" {
		return s
	}
	return def
}

// connCount counts the connections accepted and not yet answered (new or
// active), through http.Server.ConnState.
type connCount struct {
	mu    sync.Mutex
	state map[net.Conn]http.ConnState
}

func (c *connCount) track(conn net.Conn, st http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == nil {
		c.state = make(map[net.Conn]http.ConnState)
	}
	switch st {
	case http.StateNew, http.StateActive:
		c.state[conn] = st
	default:
		delete(c.state, conn)
	}
}

// wait returns when no connection is new or active, or when ctx ends. A
// new connection that sends nothing is bounded by ReadHeaderTimeout.
func (c *connCount) wait(ctx context.Context) {
	for {
		c.mu.Lock()
		n := len(c.state)
		c.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}
