package harness

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
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

// FreePort returns a loopback port nobody listens on now.
func FreePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Sample is one request of the load generator.
type Sample struct {
	start, end time.Time
	value      string
	pid        int
	err        error
}

// LoadGen sends GET / to url from a few workers, each on a fresh
// connection (a kept-alive one would hide refusals), at most rate a second
// in all, until stopped, at most maxSamples requests or maxLoad long.
type LoadGen struct {
	url    string
	client *http.Client
	stopC  chan struct{}
	wg     sync.WaitGroup

	mu      sync.Mutex
	samples []Sample
	Latest  atomic.Value // string: the value of the last good answer
}

const (
	loadWorkers = 6
	loadEvery   = 20 * time.Millisecond // per worker: 300 requests a second in all
	maxSamples  = 60000
	maxLoad     = 3 * time.Minute
)

func StartLoad(url string) *LoadGen {
	l := &LoadGen{
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
	l.Latest.Store("")
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

func (l *LoadGen) one() (s Sample) {
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
	l.Latest.Store(body.Value)
	return s
}

func (l *LoadGen) Stop() []Sample {
	close(l.stopC)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.samples)
}

// Tally counts what went wrong: refused connections, and every other
// failure (a reset, a timeout, a bad answer).
type Tally struct {
	Total, Refused, Failed int
	FirstFailure           error
	Pids                   []int
}

func Count(samples []Sample) Tally {
	var c Tally
	c.Total = len(samples)
	for _, s := range samples {
		switch {
		case s.err == nil:
			if !slices.Contains(c.Pids, s.pid) {
				c.Pids = append(c.Pids, s.pid)
			}
		case errors.Is(s.err, syscall.ECONNREFUSED):
			c.Refused++
		default:
			c.Failed++
			if c.FirstFailure == nil {
				c.FirstFailure = fmt.Errorf("%w (sent %s, ended %s)", s.err, s.start.Format("15:04:05.000"), s.end.Format("15:04:05.000"))
			}
		}
	}
	return c
}

// CheckOrder asserts that once an answer with the i-th value has come,
// no request sent after it gets an older value: every response after a
// change's switch carries the new value. A request sent within one of
// shared (see SharedWindows) is the exception: there both children accept.
func CheckOrder(t *testing.T, samples []Sample, values []string, shared []Window) {
	t.Helper()
	index := func(v string) int { return slices.Index(values, v) }
	var good []Sample
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
		if !slices.ContainsFunc(good, func(s Sample) bool { return s.value == v }) {
			t.Errorf("no answer carried value %d of %d", index(v)+1, len(values))
		}
	}
}

// Window is a span of time, both ends included.
type Window struct{ from, to time.Time }

func (s Sample) sentIn(w Window) bool { return !s.start.Before(w.from) && !s.start.After(w.to) }

// logTimeRe matches a log line's time and message.
var logTimeRe = regexp.MustCompile(`(?m)^time=(\S+) level=\S+ msg=("[^"]*"|\S+)`)

// SharedWindows are the overlaps of a --listen --restart overlap run, as
// its log has them: from "overlap begun" to the old child's exit (or the
// end of a rollback). With a shared socket the kernel hands each
// connection to whichever child accepts, so until the old child has
// stopped accepting, which paramexec cannot see before its exit, an answer
// may come from either; the README says so. Log times are in whole
// milliseconds: each window ends a millisecond later to cover that.
func SharedWindows(t *testing.T, log string) []Window {
	t.Helper()
	if !strings.Contains(log, `msg="listening for the child"`) {
		return nil // --proxy switches at one instant: no window
	}
	var out []Window
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
				out = append(out, Window{begun, at.Add(time.Millisecond)})
				begun = time.Time{}
			}
		}
	}
	return out
}

// ZeroScenario runs the testserver under paramexec with args, changes its
// VALUE changes times by editing the env file while the load runs, and
// returns what the load saw and the values in order.
func ZeroScenario(t *testing.T, url string, extraEnv string, changes int, args ...string) (*Running, Tally, []Sample, []string) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "app.env")
	values := []string{Val("v0")}
	write := func(v string) {
		MustDo(t, os.WriteFile(file, []byte("VALUE="+v+"\nTESTSERVER_BOOT_DELAY=1s\n"+extraEnv), 0o600))
	}
	write(values[0])
	all := append([]string{"--env-file", file, "--interval", "1h"}, args...)
	pe := StartBinary(t, BaseEnv(""), append(all, "--", ServerBin)...)

	WaitFor(t, "the first child to answer", func() bool {
		c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	load := StartLoad(url)
	time.Sleep(300 * time.Millisecond) // the load at its pace before the first change
	for i := 1; i <= changes; i++ {
		v := Val("v" + strconv.Itoa(i))
		values = append(values, v)
		write(v)
		WaitFor(t, fmt.Sprintf("change %d to be served", i), func() bool { return load.Latest.Load() == v })
		time.Sleep(300 * time.Millisecond)
	}
	samples := load.Stop()
	return pe, Count(samples), samples, values
}

// CheckNothingLost asserts what every zero-downtime scenario promises: no
// request refused or failed, every child (one per change, plus the first)
// answered, and no answer older than one already served.
func CheckNothingLost(t *testing.T, pe *Running, c Tally, samples []Sample, values []string, children int) {
	t.Helper()
	t.Logf("%d requests, %d refused, %d failed, %d children answered", c.Total, c.Refused, c.Failed, len(c.Pids))
	if c.Refused != 0 || c.Failed != 0 {
		t.Errorf("%d refused, %d failed of %d requests, want none (first failure: %v); log:\n%s", c.Refused, c.Failed, c.Total, c.FirstFailure, pe.Stderr.String())
	}
	if len(c.Pids) != children {
		t.Errorf("%d children answered, want %d", len(c.Pids), children)
	}
	CheckOrder(t, samples, values, SharedWindows(t, pe.Stderr.String()))
}

// StopAndCheckChildren stops paramexec and asserts that no child that
// answered outlives it.
func StopAndCheckChildren(t *testing.T, pe *Running, pids []int) {
	t.Helper()
	pe.Signal(syscall.SIGTERM)
	if code := pe.Wait(); code != 0 {
		t.Errorf("paramexec exited %d, want 0; log:\n%s", code, pe.Stderr.String())
	}
	// paramexec returns once its last child is reaped, and kills what is
	// left below it first: a pid still alive now is a child left behind.
	for _, pid := range pids {
		if IsAlive(pid) {
			t.Errorf("child %d outlived paramexec", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

const ZeroChanges = 6

// Info is the testserver's /info.
type Info struct {
	Pid       int               `json:"pid"`
	Value     string            `json:"value"`
	Source    string            `json:"source"`
	FdNames   []string          `json:"fd_names"`
	StartFds  []int             `json:"start_fds"`
	ListenEnv map[string]string `json:"listen_env"`
	EnvAfter  []string          `json:"env_after"`
}

func GetInfo(t *testing.T, client *http.Client, url string) Info {
	t.Helper()
	var got Info
	WaitFor(t, "the child to answer /info", func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&got) == nil
	})
	return got
}
