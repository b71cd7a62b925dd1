package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// freePort returns a loopback port nobody listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// sample is one request of the load generator.
type sample struct {
	start, end time.Time
	value      string
	pid        int
	err        error
}

// loadGen sends GET / to url from a few workers, each on a fresh
// connection (a kept-alive one would hide refusals), at most rate a second
// in all, until stopped, at most maxSamples requests or maxLoad long.
type loadGen struct {
	url    string
	client *http.Client
	stopC  chan struct{}
	wg     sync.WaitGroup

	mu      sync.Mutex
	samples []sample
	latest  atomic.Value // string: the value of the last good answer
}

const (
	loadWorkers = 6
	loadEvery   = 20 * time.Millisecond // per worker: 300 requests a second in all
	maxSamples  = 60000
	maxLoad     = 3 * time.Minute
)

func startLoad(url string) *loadGen {
	l := &loadGen{
		url: url,
		client: &http.Client{
			Timeout: 20 * time.Second, // far beyond any boot delay here
			Transport: &http.Transport{
				DisableKeepAlives: true,
				Proxy:             nil,
				DialContext:       (&net.Dialer{Timeout: 20 * time.Second}).DialContext,
			},
		},
		stopC: make(chan struct{}),
	}
	l.latest.Store("")
	deadline := time.Now().Add(maxLoad)
	for range loadWorkers {
		l.wg.Go(func() {
			tick := time.NewTicker(loadEvery)
			defer tick.Stop()
			for time.Now().Before(deadline) {
				l.mu.Lock()
				full := len(l.samples) >= maxSamples
				l.mu.Unlock()
				if full {
					return
				}
				s := l.one()
				l.mu.Lock()
				l.samples = append(l.samples, s)
				l.mu.Unlock()
				select {
				case <-l.stopC:
					return
				case <-tick.C:
				}
			}
		})
	}
	return l
}

func (l *loadGen) one() (s sample) {
	s.start = time.Now()
	defer func() { s.end = time.Now() }()
	resp, err := l.client.Get(l.url)
	if err != nil {
		s.err = err
		return s
	}
	defer resp.Body.Close()
	var body struct {
		Pid   int    `json:"pid"`
		Value string `json:"value"`
	}
	if resp.StatusCode != http.StatusOK {
		s.err = fmt.Errorf("status %s", resp.Status)
		return s
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		s.err = fmt.Errorf("body: %w", err)
		return s
	}
	s.pid, s.value = body.Pid, body.Value
	l.latest.Store(body.Value)
	return s
}

func (l *loadGen) stop() []sample {
	close(l.stopC)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.samples)
}

// tally counts what went wrong: refused connections, and every other
// failure (a reset, a timeout, a bad answer).
type tally struct {
	total, refused, failed int
	firstFailure           error
	pids                   []int
}

func count(samples []sample) tally {
	var c tally
	c.total = len(samples)
	for _, s := range samples {
		switch {
		case s.err == nil:
			if !slices.Contains(c.pids, s.pid) {
				c.pids = append(c.pids, s.pid)
			}
		case errors.Is(s.err, syscall.ECONNREFUSED):
			c.refused++
		default:
			c.failed++
			if c.firstFailure == nil {
				c.firstFailure = fmt.Errorf("%w (sent %s, ended %s)", s.err, s.start.Format("15:04:05.000"), s.end.Format("15:04:05.000"))
			}
		}
	}
	return c
}

// checkOrder asserts that once an answer with the i-th value has come,
// no request sent after it gets an older value: every response after a
// change's switch carries the new value. A request sent within one of
// shared (see sharedWindows) is the exception: there both children accept.
func checkOrder(t *testing.T, samples []sample, values []string, shared []window) {
	t.Helper()
	index := func(v string) int { return slices.Index(values, v) }
	var good []sample
	for _, s := range samples {
		if s.err == nil {
			if index(s.value) < 0 {
				t.Errorf("an answer carries a value the test never set")
				return
			}
			good = append(good, s)
		}
	}
	byEnd := slices.Clone(good)
	sort.Slice(byEnd, func(i, j int) bool { return byEnd[i].end.Before(byEnd[j].end) })
	// prefix[k]: the newest value among the first k answers to end.
	prefix := make([]int, len(byEnd)+1)
	prefix[0] = -1
	for k, s := range byEnd {
		prefix[k+1] = max(prefix[k], index(s.value))
	}
	stale := 0
	for _, s := range good {
		k := sort.Search(len(byEnd), func(i int) bool { return !byEnd[i].end.Before(s.start) })
		if index(s.value) < prefix[k] && !slices.ContainsFunc(shared, s.sentIn) {
			stale++
		}
	}
	if stale > 0 {
		t.Errorf("%d requests sent after an answer with a newer value got an older one", stale)
	}
	for _, v := range values {
		if !slices.ContainsFunc(good, func(s sample) bool { return s.value == v }) {
			t.Errorf("no answer carried value %d of %d", index(v)+1, len(values))
		}
	}
}

// window is a span of time, both ends included.
type window struct{ from, to time.Time }

func (s sample) sentIn(w window) bool { return !s.start.Before(w.from) && !s.start.After(w.to) }

// logTimeRe matches a log line's time and message.
var logTimeRe = regexp.MustCompile(`(?m)^time=(\S+) level=\S+ msg=("[^"]*"|\S+)`)

// sharedWindows are the overlaps of a --listen --restart overlap run, as
// its log has them: from "overlap begun" to the old child's exit (or the
// end of a rollback). With a shared socket the kernel hands each
// connection to whichever child accepts, so until the old child has
// stopped accepting, which paramexec cannot see before its exit, an answer
// may come from either; the README says so. Log times are in whole
// milliseconds: each window ends a millisecond later to cover that.
func sharedWindows(t *testing.T, log string) []window {
	t.Helper()
	if !strings.Contains(log, `msg="listening for the child"`) {
		return nil // --proxy switches at one instant: no window
	}
	var out []window
	var begun time.Time
	for _, m := range logTimeRe.FindAllStringSubmatch(log, -1) {
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			t.Fatalf("log time %q: %v", m[1], err)
		}
		switch m[2] {
		case `"overlap begun"`:
			begun = at
		case `"old child exited"`, `"rollback finished; the old child kept serving"`:
			if !begun.IsZero() {
				out = append(out, window{begun, at.Add(time.Millisecond)})
				begun = time.Time{}
			}
		}
	}
	return out
}

// zeroScenario runs the testserver under paramexec with args, changes its
// VALUE changes times by editing the env file while the load runs, and
// returns what the load saw and the values in order.
func zeroScenario(t *testing.T, url string, extraEnv string, changes int, args ...string) (*running, tally, []sample, []string) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "app.env")
	values := []string{val("v0")}
	write := func(v string) {
		mustDo(t, os.WriteFile(file, []byte("VALUE="+v+"\nTESTSERVER_BOOT_DELAY=1s\n"+extraEnv), 0o600))
	}
	write(values[0])
	all := append([]string{"--env-file", file, "--interval", "1h"}, args...)
	pe := startBinary(t, baseEnv(""), append(all, "--", serverBin)...)

	waitFor(t, "the first child to answer", func() bool {
		c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	load := startLoad(url)
	time.Sleep(300 * time.Millisecond) // the load at its pace before the first change
	for i := 1; i <= changes; i++ {
		v := val("v" + strconv.Itoa(i))
		values = append(values, v)
		write(v)
		waitFor(t, fmt.Sprintf("change %d to be served", i), func() bool { return load.latest.Load() == v })
		time.Sleep(300 * time.Millisecond)
	}
	samples := load.stop()
	return pe, count(samples), samples, values
}

// checkNothingLost asserts what every zero-downtime scenario promises: no
// request refused or failed, every child (one per change, plus the first)
// answered, and no answer older than one already served.
func checkNothingLost(t *testing.T, pe *running, c tally, samples []sample, values []string, children int) {
	t.Helper()
	t.Logf("%d requests, %d refused, %d failed, %d children answered", c.total, c.refused, c.failed, len(c.pids))
	if c.refused != 0 || c.failed != 0 {
		t.Errorf("%d refused, %d failed of %d requests, want none (first failure: %v); log:\n%s", c.refused, c.failed, c.total, c.firstFailure, pe.stderr.String())
	}
	if len(c.pids) != children {
		t.Errorf("%d children answered, want %d", len(c.pids), children)
	}
	checkOrder(t, samples, values, sharedWindows(t, pe.stderr.String()))
}

// stopAndCheckChildren stops paramexec and asserts that no child that
// answered outlives it.
func stopAndCheckChildren(t *testing.T, pe *running, pids []int) {
	t.Helper()
	pe.signal(syscall.SIGTERM)
	if code := pe.wait(); code != 0 {
		t.Errorf("paramexec exited %d, want 0; log:\n%s", code, pe.stderr.String())
	}
	// paramexec returns once its last child is reaped, and kills what is
	// left below it first: a pid still alive now is a child left behind.
	for _, pid := range pids {
		if isAlive(pid) {
			t.Errorf("child %d outlived paramexec", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

const zeroChanges = 6

// With --listen, stop-first: during each restart the socket stays open in
// paramexec and connections wait in its backlog for the new child's 1 s
// boot. None is refused, none fails, and answers move to each new value.
func TestZeroDowntimeListenStopFirst(t *testing.T) {
	e2e(t)
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	pe, c, samples, values := zeroScenario(t, url, "", zeroChanges, "--listen", fmt.Sprintf("web=tcp://127.0.0.1:%d", port))
	checkNothingLost(t, pe, c, samples, values, zeroChanges+1)
	stopAndCheckChildren(t, pe, c.pids)
}

// With --proxy: the proxy holds new connections from the old child's stop
// signal until the new child, on a new port, accepts. The port reaches
// the child in APP_PORT, a name of the user's choice.
func TestZeroDowntimeProxy(t *testing.T) {
	e2e(t)
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	pe, c, samples, values := zeroScenario(t, url, "TESTSERVER_PORT_ENV=APP_PORT\n", zeroChanges, "--proxy", fmt.Sprintf("127.0.0.1:%d=APP_PORT", port))
	checkNothingLost(t, pe, c, samples, values, zeroChanges+1)
	log := pe.stderr.String()
	if n := strings.Count(log, "msg=switched"); n != zeroChanges+1 {
		t.Errorf("%d switched lines, want %d:\n%s", n, zeroChanges+1, log)
	}
	if n := strings.Count(log, `msg="old child draining"`); n != zeroChanges {
		t.Errorf("%d old child draining lines, want %d:\n%s", n, zeroChanges, log)
	}
	stopAndCheckChildren(t, pe, c.pids)
}

// The same load and changes against today's default, the child binding its
// own port: while the new child boots (1 s) connections are refused. This
// proves that the load above would have seen them.
func TestStopFirstWithoutHandoffRefuses(t *testing.T) {
	e2e(t)
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	pe, c, _, _ := zeroScenario(t, url, fmt.Sprintf("PORT=%d\n", port), 2)
	t.Logf("%d requests, %d refused, %d failed", c.total, c.refused, c.failed)
	// 300 requests a second for 2 boots of 1 s: hundreds refused; one is
	// enough to show that the measure measures.
	if c.refused == 0 {
		t.Errorf("no connection refused in %d requests across 2 restarts of a child that boots in 1 s", c.total)
	}
	stopAndCheckChildren(t, pe, c.pids)
}

// info is the testserver's /info.
type info struct {
	Pid       int               `json:"pid"`
	Value     string            `json:"value"`
	Source    string            `json:"source"`
	FdNames   []string          `json:"fd_names"`
	StartFds  []int             `json:"start_fds"`
	ListenEnv map[string]string `json:"listen_env"`
	EnvAfter  []string          `json:"env_after"`
}

func getInfo(t *testing.T, client *http.Client, url string) info {
	t.Helper()
	var got info
	waitFor(t, "the child to answer /info", func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&got) == nil
	})
	return got
}

// leakyStart gives paramexec an fd 3 without close-on-exec (a pipe) and
// LISTEN_* variables meant for it, as a careless parent or systemd would:
// neither may reach the child.
func leakyStart(t *testing.T, args ...string) *running {
	t.Helper()
	r, w, err := os.Pipe()
	mustDo(t, err)
	t.Cleanup(func() { r.Close(); w.Close() })
	env := append(baseEnv(""), "LISTEN_PID=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=inherited")
	return startCommandWith(t, env, func(cmd *osexec.Cmd) { cmd.ExtraFiles = []*os.File{r} }, binPath, args...)
}

// The socket-activation protocol, as sd_listen_fds(3) reads it: LISTEN_PID
// is the child's own pid, LISTEN_FDS the count, LISTEN_FDNAMES the names
// in fd order, the sockets on fds 3 and 4, and no other fd inherited (fd 3
// of paramexec's own, LISTEN_* of its own, stay behind). Supervised (through
// the trampoline) and in place (paramexec's pid is the command's).
func TestListenProtocol(t *testing.T) {
	parallelE2E(t)
	for _, mode := range []string{"supervised", "in place"} {
		t.Run(mode, func(t *testing.T) {
			port := freePort(t)
			sock := filepath.Join(t.TempDir(), "app.sock")
			args := []string{"--listen", fmt.Sprintf("web=tcp://127.0.0.1:%d", port), "--listen", "unix://" + sock}
			if mode == "supervised" {
				args = append(args, "--init")
			}
			pe := leakyStart(t, append(args, "--", serverBin)...)
			tcp := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			got := getInfo(t, tcp, fmt.Sprintf("http://127.0.0.1:%d/info", port))

			want := map[string]string{"LISTEN_PID": strconv.Itoa(got.Pid), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:listen1"}
			if fmt.Sprint(got.ListenEnv) != fmt.Sprint(want) {
				t.Errorf("the child saw %v, want %v", got.ListenEnv, want)
			}
			if !slices.Equal(got.StartFds, []int{3, 4}) {
				t.Errorf("the child inherited fds %v, want exactly [3 4]", got.StartFds)
			}
			if got.Source != "inherited" || !slices.Equal(got.FdNames, []string{"web", "listen1"}) {
				t.Errorf("the child took %q sockets named %v, want inherited [web listen1]", got.Source, got.FdNames)
			}
			if mode == "in place" && got.Pid != pe.cmd.Process.Pid {
				t.Errorf("in place the command has pid %d, want paramexec's %d", got.Pid, pe.cmd.Process.Pid)
			}
			if mode == "supervised" && got.Pid == pe.cmd.Process.Pid {
				t.Errorf("supervised, the child has paramexec's pid")
			}

			// The unix socket serves the same child, and its file is 0660.
			unixClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
				DisableKeepAlives: true,
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, "unix", sock)
				},
			}}
			if viaUnix := getInfo(t, unixClient, "http://unix/info"); viaUnix.Pid != got.Pid {
				t.Errorf("the unix socket reached pid %d, the tcp one %d", viaUnix.Pid, got.Pid)
			}
			fi, err := os.Stat(sock)
			mustDo(t, err)
			if perm := fi.Mode().Perm(); perm != 0o660 {
				t.Errorf("socket file mode %v, want 0660", perm)
			}

			pe.signal(syscall.SIGTERM)
			pe.wait()
			if mode == "supervised" {
				if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the socket file is still there after paramexec exited: %v", err)
				}
			}
		})
	}
}

// In --proxy mode the child inherits nothing beyond fds 0-2, and no
// LISTEN_* paramexec was given.
func TestProxyChildInheritsNothing(t *testing.T) {
	parallelE2E(t)
	port := freePort(t)
	pe := leakyStart(t, "--proxy", fmt.Sprintf("127.0.0.1:%d=PORT", port), "--", serverBin)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	got := getInfo(t, client, fmt.Sprintf("http://127.0.0.1:%d/info", port))
	if len(got.StartFds) != 0 || len(got.ListenEnv) != 0 || got.Source != "port" {
		t.Errorf("the child inherited fds %v and %v, bound %q; want none, none, its port", got.StartFds, got.ListenEnv, got.Source)
	}
	pe.signal(syscall.SIGTERM)
	pe.wait()
}

// proxyStart runs the testserver behind --proxy with an env file the test
// edits, and waits until it answers.
func proxyStart(t *testing.T, extra ...string) (pe *running, port int, change func(v string)) {
	t.Helper()
	port = freePort(t)
	file := filepath.Join(t.TempDir(), "app.env")
	change = func(v string) { mustDo(t, os.WriteFile(file, []byte("VALUE="+v+"\n"), 0o600)) }
	change(val("v0"))
	args := append([]string{"--env-file", file, "--interval", "1h", "--proxy", fmt.Sprintf("127.0.0.1:%d=PORT", port)}, extra...)
	pe = startBinary(t, baseEnv(""), append(args, "--", serverBin)...)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	getInfo(t, client, fmt.Sprintf("http://127.0.0.1:%d/info", port))
	return pe, port, change
}

// sleepRequest sends GET /sleep?d=D on a raw connection through the proxy
// and returns once the headers have come (the child is serving it).
func sleepRequest(t *testing.T, port int, d time.Duration) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	mustDo(t, err)
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /sleep?d=%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", d)
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := br.ReadString('\n')
	if err != nil || !strings.Contains(line, "200") {
		t.Fatalf("sleep request: %q, %v", line, err)
	}
	for line != "\r\n" { // the rest of the headers
		if line, err = br.ReadString('\n'); err != nil {
			t.Fatalf("sleep request headers: %v", err)
		}
	}
	return c, br
}

// A connection opened before a change keeps working through the restart
// until it ends; one that outlasts --grace is closed when it ends.
func TestProxyLongLivedConnection(t *testing.T) {
	e2e(t)
	t.Run("finishes", func(t *testing.T) {
		pe, port, change := proxyStart(t, "--grace", "20s")
		c, br := sleepRequest(t, port, 3*time.Second)
		change(val("v1"))
		waitFor(t, "the restart to begin", func() bool { return strings.Contains(pe.stderr.String(), `msg="old child draining"`) })
		if !strings.Contains(pe.stderr.String(), "connections=1") {
			t.Errorf("the draining line does not count the open connection:\n%s", pe.stderr.String())
		}
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		body, err := io.ReadAll(br)
		if err != nil || !strings.Contains(string(body), "slept 3s") {
			t.Errorf("the long request ended with %q, %v; want its whole answer", body, err)
		}
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		waitFor(t, "the new child to serve", func() bool {
			return getInfo(t, client, fmt.Sprintf("http://127.0.0.1:%d/info", port)).Value == val("v1")
		})
		pe.signal(syscall.SIGTERM)
		pe.wait()
	})
	t.Run("outlasts grace", func(t *testing.T) {
		pe, port, change := proxyStart(t, "--grace", "1s")
		c, br := sleepRequest(t, port, 50*time.Second)
		change(val("v1"))
		// The answer would take 50 s; --grace 1s ends it much sooner.
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		body, err := io.ReadAll(br)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the connection outlived --grace 1s by 30 s")
		}
		if strings.Contains(string(body), "slept") {
			t.Errorf("the request completed; want it cut at --grace")
		}
		waitFor(t, "the drain to end", func() bool { return strings.Contains(pe.stderr.String(), `msg="old child drained"`) })
		pe.signal(syscall.SIGTERM)
		pe.wait()
	})
}

// fdCount is how many descriptors pid has open.
func fdCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	mustDo(t, err)
	return len(ents)
}

// 1,000 connections open at once through the real binary, each with a
// request answered, then closed: paramexec holds two fds per connection
// while they are open and none of them afterwards.
func TestProxyThousandConnections(t *testing.T) {
	e2e(t)
	pe, port, _ := proxyStart(t)
	pid := pe.cmd.Process.Pid
	before := fdCount(t, pid)
	const n = 1000
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		mustDo(t, err)
		conns = append(conns, c)
	}
	var wg sync.WaitGroup
	var bad atomic.Int32
	for _, c := range conns {
		wg.Go(func() {
			c.SetDeadline(time.Now().Add(60 * time.Second))
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != 200 {
				bad.Add(1)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	wg.Wait()
	if bad.Load() > 0 {
		t.Fatalf("%d of %d requests failed", bad.Load(), n)
	}
	if during := fdCount(t, pid); during < before+2*n {
		t.Errorf("paramexec has %d fds with %d connections open, %d before; want 2 per connection", during, n, before)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	waitFor(t, "paramexec's fds to return to where they were", func() bool { return fdCount(t, pid) <= before })
	pe.signal(syscall.SIGTERM)
	pe.wait()
}

// Bad --listen and --proxy values are usage errors (2); addresses the
// machine refuses are start-up errors (3), before any child runs.
func TestListenAndProxyErrors(t *testing.T) {
	parallelE2E(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	mustDo(t, err)
	defer busy.Close()
	inUse := busy.Addr().String()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--listen", "udp://:53"}, 2, "unknown scheme"},
		{[]string{"--listen", "tcp://127.0.0.1"}, 2, "want tcp://HOST:PORT"},
		{[]string{"--proxy", ":8080"}, 2, "want LISTEN=TARGET_ENV"},
		{[]string{"--proxy", ":8080=1PORT"}, 2, "not a variable name"},
		{[]string{"--proxy-protocol"}, 2, "only goes with --proxy"},
		{[]string{"--listen", "tcp://" + inUse}, 3, "another process listens there"},
		{[]string{"--proxy", inUse + "=PORT"}, 3, "address already in use"},
	} {
		r := runBinary(t, baseEnv(""), append(tc.args, "--", childBin)...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
	// PARAMEXEC_LISTEN is a comma-separated list, as every repeatable flag's.
	p1, p2 := freePort(t), freePort(t)
	env := append(baseEnv(""), fmt.Sprintf("PARAMEXEC_LISTEN=a=tcp://127.0.0.1:%d,b=tcp://127.0.0.1:%d", p1, p2), "PARAMEXEC_INIT=true")
	pe := startCommandWith(t, env, nil, binPath, "--", serverBin)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	got := getInfo(t, client, fmt.Sprintf("http://127.0.0.1:%d/info", p2))
	if got.ListenEnv["LISTEN_FDNAMES"] != "a:b" {
		t.Errorf("PARAMEXEC_LISTEN gave the child %v, want names a:b", got.ListenEnv)
	}
	pe.signal(syscall.SIGTERM)
	pe.wait()
}

// sharedWindows reads the overlaps of a --listen log, a rejected one
// ending at its rollback, and none from a --proxy log.
func TestSharedWindows(t *testing.T) {
	lines := []string{
		`time=2026-12-02T03:39:24.417Z level=INFO msg="listening for the child" app=paramexec name=web address=tcp://127.0.0.1:1`,
		`time=2026-12-02T03:39:26.290Z level=INFO msg="overlap begun" app=paramexec pid=2 old_pid=1 reason="VALUE changed"`,
		`time=2026-12-02T03:39:27.545Z level=INFO msg=switched app=paramexec pid=2 old_pid=1`,
		`time=2026-12-02T03:39:27.549Z level=INFO msg="old child exited" app=paramexec pid=1 code=0`,
		`time=2026-12-02T03:39:28.160Z level=INFO msg="overlap begun" app=paramexec pid=3 old_pid=2 reason="VALUE changed"`,
		`time=2026-12-02T03:39:28.700Z level=INFO msg="rollback finished; the old child kept serving" app=paramexec pid=2 took=1ms`,
	}
	at := func(s string) time.Time { v, _ := time.Parse(time.RFC3339Nano, "2026-12-02T03:39:"+s+"Z"); return v }
	want := []window{{at("26.290"), at("27.550")}, {at("28.160"), at("28.701")}}
	if got := sharedWindows(t, strings.Join(lines, "\n")+"\n"); !slices.Equal(got, want) {
		t.Errorf("sharedWindows = %v; want %v", got, want)
	}
	if got := sharedWindows(t, strings.Join(lines[1:], "\n")); got != nil {
		t.Errorf("without --listen: %v; want none", got)
	}
}
