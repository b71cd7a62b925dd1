package zerodowntime

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/harness"
)

// With --listen, stop-first: during each restart the socket stays open in
// paramexec and connections wait in its backlog for the new child's 1 s
// boot. None is refused, none fails, and answers move to each new value.
func TestZeroDowntimeListenStopFirst(t *testing.T) {
	harness.E2E(t)
	port := harness.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	pe, c, samples, values := harness.ZeroScenario(t, url, "", harness.ZeroChanges, "--listen", fmt.Sprintf("web=tcp://127.0.0.1:%d", port))
	harness.CheckNothingLost(t, pe, c, samples, values, harness.ZeroChanges+1)
	harness.StopAndCheckChildren(t, pe, c.Pids)
}

// With --proxy: the proxy holds new connections from the old child's stop
// signal until the new child, on a new port, accepts. The port reaches
// the child in APP_PORT, a name of the user's choice.
func TestZeroDowntimeProxy(t *testing.T) {
	harness.E2E(t)
	port := harness.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	pe, c, samples, values := harness.ZeroScenario(t, url, "TESTSERVER_PORT_ENV=APP_PORT\n", harness.ZeroChanges, "--proxy", fmt.Sprintf("127.0.0.1:%d=APP_PORT", port))
	harness.CheckNothingLost(t, pe, c, samples, values, harness.ZeroChanges+1)
	log := pe.Stderr.String()
	if n := strings.Count(log, "msg=switched"); n != harness.ZeroChanges+1 {
		t.Errorf("%d switched lines, want %d:\n%s", n, harness.ZeroChanges+1, log)
	}
	if n := strings.Count(log, `msg="old child draining"`); n != harness.ZeroChanges {
		t.Errorf("%d old child draining lines, want %d:\n%s", n, harness.ZeroChanges, log)
	}
	harness.StopAndCheckChildren(t, pe, c.Pids)
}

// The same load and changes against today's default, the child binding its
// own port: while the new child boots (1 s) connections are refused. This
// proves that the load above would have seen them.
func TestStopFirstWithoutHandoffRefuses(t *testing.T) {
	harness.E2E(t)
	port := harness.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	pe, c, _, _ := harness.ZeroScenario(t, url, fmt.Sprintf("PORT=%d\n", port), 2)
	t.Logf("%d requests, %d refused, %d failed", c.Total, c.Refused, c.Failed)
	// 300 requests a second for 2 boots of 1 s: hundreds refused; one is
	// enough to show that the measure measures.
	if c.Refused == 0 {
		t.Errorf("no connection refused in %d requests across 2 restarts of a child that boots in 1 s", c.Total)
	}
	harness.StopAndCheckChildren(t, pe, c.Pids)
}

// leakyStart gives paramexec an fd 3 without close-on-exec (a pipe) and
// LISTEN_* variables meant for it, as a careless parent or systemd would:
// neither may reach the child.
func leakyStart(t *testing.T, args ...string) *harness.Running {
	t.Helper()
	r, w, err := os.Pipe()
	harness.MustDo(t, err)
	t.Cleanup(func() { r.Close(); w.Close() })
	env := append(harness.BaseEnv(""), "LISTEN_PID=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=inherited")
	return harness.StartCommandWith(t, env, func(cmd *osexec.Cmd) { cmd.ExtraFiles = []*os.File{r} }, harness.BinPath, args...)
}

// The socket-activation protocol, as sd_listen_fds(3) reads it: LISTEN_PID
// is the child's own pid, LISTEN_FDS the count, LISTEN_FDNAMES the names
// in fd order, the sockets on fds 3 and 4, and no other fd inherited (fd 3
// of paramexec's own, LISTEN_* of its own, stay behind). Supervised (through
// the trampoline) and in place (paramexec's pid is the command's).
func TestListenProtocol(t *testing.T) {
	harness.ParallelE2E(t)
	for _, mode := range []string{"supervised", "in place"} {
		t.Run(mode, func(t *testing.T) {
			port := harness.FreePort(t)
			sock := filepath.Join(t.TempDir(), "app.sock")
			args := []string{"--listen", fmt.Sprintf("web=tcp://127.0.0.1:%d", port), "--listen", "unix://" + sock}
			if mode == "supervised" {
				args = append(args, "--init")
			}
			pe := leakyStart(t, append(args, "--", harness.ServerBin)...)
			tcp := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			got := harness.GetInfo(t, tcp, fmt.Sprintf("http://127.0.0.1:%d/info", port))

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
			if mode == "in place" && got.Pid != pe.Cmd.Process.Pid {
				t.Errorf("in place the command has pid %d, want paramexec's %d", got.Pid, pe.Cmd.Process.Pid)
			}
			if mode == "supervised" && got.Pid == pe.Cmd.Process.Pid {
				t.Errorf("supervised, the child has paramexec's pid")
			}

			// The unix socket serves the same child, and its file is 0660.
			unixClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
				DisableKeepAlives: true,
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, "unix", sock)
				},
			}}
			if viaUnix := harness.GetInfo(t, unixClient, "http://unix/info"); viaUnix.Pid != got.Pid {
				t.Errorf("the unix socket reached pid %d, the tcp one %d", viaUnix.Pid, got.Pid)
			}
			fi, err := os.Stat(sock)
			harness.MustDo(t, err)
			if perm := fi.Mode().Perm(); perm != 0o660 {
				t.Errorf("socket file mode %v, want 0660", perm)
			}

			pe.Signal(syscall.SIGTERM)
			pe.Wait()
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
	harness.ParallelE2E(t)
	port := harness.FreePort(t)
	pe := leakyStart(t, "--proxy", fmt.Sprintf("127.0.0.1:%d=PORT", port), "--", harness.ServerBin)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	got := harness.GetInfo(t, client, fmt.Sprintf("http://127.0.0.1:%d/info", port))
	if len(got.StartFds) != 0 || len(got.ListenEnv) != 0 || got.Source != "port" {
		t.Errorf("the child inherited fds %v and %v, bound %q; want none, none, its port", got.StartFds, got.ListenEnv, got.Source)
	}
	pe.Signal(syscall.SIGTERM)
	pe.Wait()
}

// proxyStart runs the testserver behind --proxy with an env file the test
// edits, and waits until it answers.
func proxyStart(t *testing.T, extra ...string) (pe *harness.Running, port int, change func(v string)) {
	t.Helper()
	port = harness.FreePort(t)
	file := filepath.Join(t.TempDir(), "app.env")
	change = func(v string) { harness.MustDo(t, os.WriteFile(file, []byte("VALUE="+v+"\n"), 0o600)) }
	change(harness.Val("v0"))
	args := append([]string{"--env-file", file, "--interval", "1h", "--proxy", fmt.Sprintf("127.0.0.1:%d=PORT", port)}, extra...)
	pe = harness.StartBinary(t, harness.BaseEnv(""), append(args, "--", harness.ServerBin)...)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	harness.GetInfo(t, client, fmt.Sprintf("http://127.0.0.1:%d/info", port))
	return pe, port, change
}

// sleepRequest sends GET /sleep?d=D on a raw connection through the proxy
// and returns once the headers have come (the child is serving it).
func sleepRequest(t *testing.T, port int, d time.Duration) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	harness.MustDo(t, err)
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
	harness.E2E(t)
	t.Run("finishes", func(t *testing.T) {
		pe, port, change := proxyStart(t, "--grace", "20s")
		c, br := sleepRequest(t, port, 3*time.Second)
		change(harness.Val("v1"))
		harness.WaitFor(t, "the restart to begin", func() bool { return strings.Contains(pe.Stderr.String(), `msg="old child draining"`) })
		if !strings.Contains(pe.Stderr.String(), "connections=1") {
			t.Errorf("the draining line does not count the open connection:\n%s", pe.Stderr.String())
		}
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		body, err := io.ReadAll(br)
		if err != nil || !strings.Contains(string(body), "slept 3s") {
			t.Errorf("the long request ended with %q, %v; want its whole answer", body, err)
		}
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		harness.WaitFor(t, "the new child to serve", func() bool {
			return harness.GetInfo(t, client, fmt.Sprintf("http://127.0.0.1:%d/info", port)).Value == harness.Val("v1")
		})
		pe.Signal(syscall.SIGTERM)
		pe.Wait()
	})
	t.Run("outlasts grace", func(t *testing.T) {
		pe, port, change := proxyStart(t, "--grace", "1s")
		c, br := sleepRequest(t, port, 50*time.Second)
		change(harness.Val("v1"))
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
		harness.WaitFor(t, "the drain to end", func() bool { return strings.Contains(pe.Stderr.String(), `msg="old child drained"`) })
		pe.Signal(syscall.SIGTERM)
		pe.Wait()
	})
}

// fdCount is how many descriptors pid has open.
func fdCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	harness.MustDo(t, err)
	return len(ents)
}

// 1,000 connections open at once through the real binary, each with a
// request answered, then closed: paramexec holds two fds per connection
// while they are open and none of them afterwards.
func TestProxyThousandConnections(t *testing.T) {
	harness.E2E(t)
	pe, port, _ := proxyStart(t)
	pid := pe.Cmd.Process.Pid
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
		harness.MustDo(t, err)
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
	harness.WaitFor(t, "paramexec's fds to return to where they were", func() bool { return fdCount(t, pid) <= before })
	pe.Signal(syscall.SIGTERM)
	pe.Wait()
}

// Bad --listen and --proxy values are usage errors (2); addresses the
// machine refuses are start-up errors (3), before any child runs.
func TestListenAndProxyErrors(t *testing.T) {
	harness.ParallelE2E(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	harness.MustDo(t, err)
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
		r := harness.RunBinary(t, harness.BaseEnv(""), append(tc.args, "--", harness.ChildBin)...)
		if r.Code != tc.code || !strings.Contains(r.Stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, r.Code, r.Stderr, tc.code, tc.want)
		}
	}
	// PARAMEXEC_LISTEN is a comma-separated list, as every repeatable flag's.
	p1, p2 := harness.FreePort(t), harness.FreePort(t)
	env := append(harness.BaseEnv(""), fmt.Sprintf("PARAMEXEC_LISTEN=a=tcp://127.0.0.1:%d,b=tcp://127.0.0.1:%d", p1, p2), "PARAMEXEC_INIT=true")
	pe := harness.StartCommandWith(t, env, nil, harness.BinPath, "--", harness.ServerBin)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	got := harness.GetInfo(t, client, fmt.Sprintf("http://127.0.0.1:%d/info", p2))
	if got.ListenEnv["LISTEN_FDNAMES"] != "a:b" {
		t.Errorf("PARAMEXEC_LISTEN gave the child %v, want names a:b", got.ListenEnv)
	}
	pe.Signal(syscall.SIGTERM)
	pe.Wait()
}
