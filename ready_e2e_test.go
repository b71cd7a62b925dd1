package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeSystemd is a real unixgram socket standing in for systemd's
// NOTIFY_SOCKET; it keeps every datagram paramexec sends.
type fakeSystemd struct {
	path string
	mu   sync.Mutex
	msgs []string
}

func listenSystemd(t *testing.T) *fakeSystemd {
	t.Helper()
	sd := &fakeSystemd{path: filepath.Join(t.TempDir(), "notify.sock")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sd.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			sd.mu.Lock()
			sd.msgs = append(sd.msgs, string(buf[:n]))
			sd.mu.Unlock()
		}
	}()
	return sd
}

func (sd *fakeSystemd) received() []string {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	return slices.Clone(sd.msgs)
}

// count is how many datagrams hold the line.
func (sd *fakeSystemd) count(line string) int {
	n := 0
	for _, m := range sd.received() {
		if slices.Contains(strings.Split(m, "\n"), line) {
			n++
		}
	}
	return n
}

// with reports whether some datagram has a line starting with prefix.
func (sd *fakeSystemd) with(prefix string) bool {
	for _, m := range sd.received() {
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, prefix) {
				return true
			}
		}
	}
	return false
}

// served is what the test server's / answers.
type served struct {
	Pid   int    `json:"pid"`
	Value string `json:"value"`
}

// get asks the test server on port who it is; ok is false if nothing answers.
func get(port string) (served, bool) {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://127.0.0.1:" + port + "/")
	if err != nil {
		return served{}, false
	}
	defer resp.Body.Close()
	var s served
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&s) != nil {
		return served{}, false
	}
	return s, true
}

var (
	childStartedRe = regexp.MustCompile(`msg="child started" app=paramexec pid=(\d+)`)
	readyAfterRe   = regexp.MustCompile(`msg="child ready" app=paramexec pid=\d+ ready_after=(\S+)`)
)

// childPids lists the children paramexec's log says it started, in order.
func childPids(log string) []int {
	var out []int
	for _, m := range childStartedRe.FindAllStringSubmatch(log, -1) {
		n, _ := strconv.Atoi(m[1])
		out = append(out, n)
	}
	return out
}

// execCheck writes a check script that passes once flag exists.
func execCheck(t *testing.T, flag string) string {
	t.Helper()
	script := filepath.Join(t.TempDir(), "check.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ntest -e "+flag+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return "exec:" + script
}

// For each kind of check, systemd's READY=1 comes when the child is ready,
// not when it was started: the child boots for 1.5s first.
func TestReadyGatesSystemdReady(t *testing.T) {
	parallelE2E(t)
	const boot = 1500 * time.Millisecond
	for _, kind := range []string{"tcp", "http", "notify", "exec"} {
		t.Run(kind, func(t *testing.T) {
			port := strconv.Itoa(freePort(t))
			sd := listenSystemd(t)
			env := append(baseEnv(""), "NOTIFY_SOCKET="+sd.path, "PORT="+port, "VALUE="+val("v"),
				"TESTSERVER_BOOT_DELAY="+boot.String())
			flag := filepath.Join(t.TempDir(), "pass")
			var check string
			switch kind {
			case "tcp":
				check = "tcp:" + port
			case "http":
				check = "http://127.0.0.1:" + port + "/up"
			case "notify":
				check = "notify"
				env = append(env, "TESTSERVER_NOTIFY_DELAY=500ms")
			case "exec":
				check = execCheck(t, flag)
			}
			pe := startBinary(t, env, "--ready", check, "--", serverBin)
			if kind == "exec" {
				// Serving is not ready: only the check says so. A second
				// of no READY=1 while the child serves shows that nothing
				// else sends it (without --ready it comes at the start).
				waitFor(t, "the child to serve", func() bool { _, ok := get(port); return ok })
				time.Sleep(time.Second)
				if sd.count("READY=1") != 0 {
					t.Fatal("READY=1 before the exec: check passed")
				}
				if err := os.WriteFile(flag, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "READY=1", func() bool { return sd.count("READY=1") > 0 })
			if _, ok := get(port); !ok {
				t.Error("READY=1 arrived while the child did not serve")
			}
			m := readyAfterRe.FindStringSubmatch(pe.stderr.String())
			if m == nil {
				t.Fatalf("no 'child ready' line with ready_after:\n%s", pe.stderr)
			}
			if d, err := time.ParseDuration(m[1]); err != nil || d < boot {
				t.Errorf("ready_after=%s: want at least the child's boot of %v", m[1], boot)
			}
			if kind == "notify" {
				// The child's own STATUS= goes on to systemd.
				waitFor(t, "the child's STATUS relayed", func() bool { return sd.with("STATUS=serving pid ") })
			}
			pe.signal(syscall.SIGTERM)
			if code := pe.wait(); code != 0 {
				t.Errorf("exit %d after SIGTERM; stderr:\n%s", code, pe.stderr)
			}
			if sd.count("READY=1") != 1 {
				t.Errorf("%d READY=1 for one start", sd.count("READY=1"))
			}
		})
	}
}

// For each kind of check, a first child that never gets ready is stopped
// and paramexec exits 4.
func TestNeverReadyExitsNotReady(t *testing.T) {
	parallelE2E(t)
	for _, kind := range []string{"tcp", "http", "notify", "exec"} {
		t.Run(kind, func(t *testing.T) {
			port := strconv.Itoa(freePort(t))
			sd := listenSystemd(t)
			env := append(baseEnv(""), "NOTIFY_SOCKET="+sd.path, "PORT="+port, "VALUE="+val("hang"),
				"TESTSERVER_HANG_IF=VALUE="+val("hang"))
			check := map[string]string{
				"tcp":    "tcp:127.0.0.1:" + port,
				"http":   "http://127.0.0.1:" + port + "/up",
				"notify": "notify",
				"exec":   execCheck(t, filepath.Join(t.TempDir(), "never")),
			}[kind]
			pe := startBinary(t, env, "--ready", check, "--ready-timeout", "2s", "--grace", "2s", "--", serverBin)
			code := pe.wait()
			log := pe.stderr.String()
			if code != 4 {
				t.Fatalf("exit %d, want 4 (not ready); stderr:\n%s", code, log)
			}
			pids := childPids(log)
			if len(pids) != 1 {
				t.Fatalf("children started: %v, want one", pids)
			}
			if !gone(pids[0]) {
				t.Errorf("the child %d outlived paramexec", pids[0])
			}
			if !strings.Contains(log, "child not ready in time") || !strings.Contains(log, check) {
				t.Errorf("the log does not say which check failed:\n%s", log)
			}
			if sd.count("READY=1") != 0 {
				t.Error("READY=1 for a child that never got ready")
			}
		})
	}
}

func TestReadyUsageErrors(t *testing.T) {
	parallelE2E(t)
	for _, tc := range []struct {
		env  []string
		args []string
		says string
	}{
		{nil, []string{"--ready", "bogus", "true"}, "--ready"},
		{nil, []string{"--ready", "tcp:0", "true"}, "--ready"},
		{nil, []string{"--ready", "http://127.0.0.1:{port}/", "true"}, "--proxy"},
		{nil, []string{"--ready", "exec:paramexec-no-such-check", "true"}, "--ready"},
		{nil, []string{"--ready", "tcp:80", "--ready-timeout", "0s", "true"}, "--ready-timeout"},
		{nil, []string{"--rollback-window", "-1s", "true"}, "--rollback-window"},
		{[]string{"PARAMEXEC_READY=tcp:80,bogus"}, []string{"true"}, "bogus"},
		{[]string{"PARAMEXEC_READY_TIMEOUT=soon"}, []string{"true"}, "PARAMEXEC_READY_TIMEOUT"},
		{[]string{"PARAMEXEC_ROLLBACK_WINDOW=-3s"}, []string{"true"}, "--rollback-window"},
	} {
		r := runBinary(t, append(baseEnv(""), tc.env...), tc.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.says) {
			t.Errorf("%v %v: exit %d, want %d with %q; stderr:\n%s", tc.env, tc.args, r.code, exitUsage, tc.says, r.stderr)
		}
	}
}

func TestSplitChecks(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"tcp:8080", []string{"tcp:8080"}},
		{"tcp:8080, notify ,http://h:1/up", []string{"tcp:8080", "notify", "http://h:1/up"}},
		{"exec:/bin/check a,b,tcp:1", []string{"exec:/bin/check a,b", "tcp:1"}},
		{"http://h:1/up?x=1,2", []string{"http://h:1/up?x=1,2"}},
		{"bogus,tcp:1", []string{"bogus", "tcp:1"}},
	} {
		if got := splitChecks(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("splitChecks(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
