package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/paramexec/paramexec/bench/internal/kit"
)

// ZeroRow is one restart mode under steady load: what the load saw across
// its changes.
type ZeroRow struct {
	Mode     string        // "stop-first", "--listen, stop-first", "--proxy", "--listen, overlap", "--proxy, overlap"
	Boot     time.Duration // the child's boot delay
	Changes  int
	Requests int
	Refused  int // connections refused
	Failed   int // every other failure: resets, timeouts, bad answers
	// Slowest is the longest request, which in the zero-downtime modes is
	// one that waited for a new child.
	Slowest time.Duration
}

// ProxyCost is --proxy against a direct connection to the same child,
// measured side by side (interleaved) in one run.
type ProxyCost struct {
	Rounds                 int // small requests per side, interleaved, on kept-alive connections
	DirectP50, DirectP99   time.Duration
	ProxyP50, ProxyP99     time.Duration
	TransferBytes          int64
	DirectMBps, ProxyMBps  []float64 // one per transfer, interleaved
	CPURequests            int       // requests through the proxy, each on a new connection
	CPU                    time.Duration
	CPUPer10k              time.Duration
	FdsBefore, FdsAfter    int // paramexec's descriptors around the CPU run
	RequestsFailedAnywhere int
}

// ZeroResult is the zerodowntime phase.
type ZeroResult struct {
	Rate int // requests a second of the load
	Rows []ZeroRow
	Cost ProxyCost
}

const (
	zeroWorkers = 6
	zeroEvery   = 20 * time.Millisecond // per worker: 300 requests a second
)

func (b *bench) zeroDowntime(ctx context.Context) (*ZeroResult, error) {
	res := &ZeroResult{Rate: int(zeroWorkers * time.Second / zeroEvery)}
	type mode struct {
		name string
		boot time.Duration
	}
	var modes []mode
	for _, d := range b.opt.zdBoots {
		modes = append(modes, mode{"stop-first", d})
	}
	modes = append(modes, mode{"--listen, stop-first", time.Second}, mode{"--proxy", time.Second},
		mode{"--listen, overlap", time.Second}, mode{"--proxy, overlap", time.Second},
		mode{abruptPrefix + "--proxy", time.Second}, mode{abruptPrefix + "--proxy, overlap", time.Second})
	for _, m := range modes {
		b.logf("zerodowntime: %s, child boots in %s, %d changes", m.name, m.boot, b.opt.zdChanges)
		row, err := b.zeroRow(ctx, m.name, m.boot)
		res.Rows = append(res.Rows, row)
		if err != nil {
			return res, fmt.Errorf("%s boot %s: %w", m.name, m.boot, err)
		}
	}
	b.logf("zerodowntime: proxy cost against direct")
	cost, err := b.proxyCost(ctx)
	res.Cost = cost
	return res, err
}

// abruptPrefix names the rows whose app exits at once on SIGTERM and
// takes 20 ms to answer.
const abruptPrefix = "app with no graceful stop, "

func freeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startServer runs paramexec FLAGS -- testserver with its log in dir.
func (b *bench) startServer(dir string, flags ...string) (*exec.Cmd, string, error) {
	logPath := filepath.Join(dir, "paramexec.log")
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	args := append(append([]string{"--log-format", "json"}, flags...), "--", b.bin.Testserver)
	cmd := exec.Command(b.bin.Paramexec, args...)
	cmd.Env = kit.ChildEnv("")
	cmd.SysProcAttr = kit.Managed()
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start paramexec: %w", err)
	}
	return cmd, logPath, nil
}

func (b *bench) zeroRow(ctx context.Context, name string, boot time.Duration) (ZeroRow, error) {
	row := ZeroRow{Mode: name, Boot: boot, Changes: b.opt.zdChanges}
	dir := filepath.Join(b.work, fmt.Sprintf("zero-%d-%s", len(name), boot))
	if err := mkdir(dir); err != nil {
		return row, err
	}
	port, err := freeLoopbackPort()
	if err != nil {
		return row, err
	}
	file := filepath.Join(dir, "app.env")
	extra := ""
	flags := []string{"--env-file", file, "--interval", "1h"}
	mode, abrupt := strings.CutPrefix(name, abruptPrefix)
	if abrupt {
		// No graceful stop at all, and requests in flight at every
		// restart: what is not answered before the stop signal is lost.
		extra = "TESTSERVER_STOP=abrupt\nTESTSERVER_ANSWER_DELAY=20ms\n"
	}
	switch mode {
	case "stop-first":
		extra += fmt.Sprintf("PORT=%d\n", port)
	case "--listen, stop-first":
		flags = append(flags, "--listen", fmt.Sprintf("tcp://127.0.0.1:%d", port))
	case "--proxy":
		flags = append(flags, "--proxy", fmt.Sprintf("127.0.0.1:%d=PORT", port))
	case "--listen, overlap":
		// READY=1, not a check on the shared socket, which the old child
		// would answer.
		extra += "TESTSERVER_NOTIFY_DELAY=1ms\n"
		flags = append(flags, "--listen", fmt.Sprintf("tcp://127.0.0.1:%d", port), "--restart", "overlap", "--ready", "notify")
	case "--proxy, overlap":
		flags = append(flags, "--proxy", fmt.Sprintf("127.0.0.1:%d=PORT", port), "--restart", "overlap", "--ready", "http://127.0.0.1:{port}/up")
	}
	write := func(v int) error {
		return os.WriteFile(file, []byte(fmt.Sprintf("VALUE=v%d\nTESTSERVER_BOOT_DELAY=%s\n%s", v, boot, extra)), 0o600)
	}
	if err := write(0); err != nil {
		return row, err
	}
	cmd, _, err := b.startServer(dir, flags...)
	if err != nil {
		return row, err
	}
	defer kit.Stop(cmd, 30*time.Second)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	if err := waitServing(ctx, url, "v0", boot+time.Minute); err != nil {
		return row, err
	}
	load := startZeroLoad(url)
	_ = kit.Sleep(ctx, 500*time.Millisecond)
	for i := 1; i <= b.opt.zdChanges; i++ {
		if err := write(i); err != nil {
			load.stop()
			return row, err
		}
		if err := load.waitValue(ctx, "v"+strconv.Itoa(i), boot+time.Minute); err != nil {
			load.stop()
			return row, fmt.Errorf("change %d: %w", i, err)
		}
		_ = kit.Sleep(ctx, 500*time.Millisecond)
	}
	samples := load.stop()
	row.Requests = len(samples)
	for _, s := range samples {
		row.Slowest = max(row.Slowest, s.took)
		switch {
		case s.err == nil:
		case errors.Is(s.err, syscall.ECONNREFUSED):
			row.Refused++
		default:
			row.Failed++
		}
	}
	return row, kit.Stop(cmd, 30*time.Second)
}

// waitServing polls url until it answers with value, at most limit.
func waitServing(ctx context.Context, url, value string, limit time.Duration) error {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if v, _, err := getValue(c, url); err == nil && v == value {
			return nil
		}
		_ = kit.Sleep(ctx, 50*time.Millisecond)
	}
	return fmt.Errorf("%s did not answer with %s within %s", url, value, limit)
}

func getValue(c *http.Client, url string) (string, int, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("status %s", resp.Status)
	}
	var body struct {
		Pid   int    `json:"pid"`
		Value string `json:"value"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return "", 0, err
	}
	return body.Value, body.Pid, nil
}

type zeroSample struct {
	took time.Duration
	err  error
}

// zeroLoad is a steady load of GET / on fresh connections.
type zeroLoad struct {
	stopC chan struct{}
	wg    sync.WaitGroup

	mu      sync.Mutex
	samples []zeroSample
	latest  string
}

func startZeroLoad(url string) *zeroLoad {
	l := &zeroLoad{stopC: make(chan struct{})}
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext:       (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
	}}
	// Bounded: at most 10 minutes or 200,000 requests, whatever stop says.
	deadline := time.Now().Add(10 * time.Minute)
	for range zeroWorkers {
		l.wg.Go(func() {
			tick := time.NewTicker(zeroEvery)
			defer tick.Stop()
			for time.Now().Before(deadline) {
				start := time.Now()
				v, _, err := getValue(c, url)
				l.mu.Lock()
				l.samples = append(l.samples, zeroSample{took: time.Since(start), err: err})
				if err == nil {
					l.latest = v
				}
				full := len(l.samples) >= 200000
				l.mu.Unlock()
				if full {
					return
				}
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

func (l *zeroLoad) waitValue(ctx context.Context, v string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		l.mu.Lock()
		got := l.latest
		l.mu.Unlock()
		if got == v {
			return nil
		}
		_ = kit.Sleep(ctx, 20*time.Millisecond)
	}
	return fmt.Errorf("the load saw no answer with %s within %s", v, limit)
}

func (l *zeroLoad) stop() []zeroSample {
	close(l.stopC)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.samples
}

// proxyCost runs one paramexec --proxy and measures, against the same
// child reached directly, small-request latency and a large transfer,
// interleaved so that both sides see the same machine; then paramexec's
// CPU for requests through the proxy.
func (b *bench) proxyCost(ctx context.Context) (ProxyCost, error) {
	var c ProxyCost
	rounds, transfer, cpuReqs := 5000, int64(100<<20), 10000
	if b.opt.quick {
		rounds, transfer, cpuReqs = 200, 10<<20, 1000
	}
	c.Rounds, c.TransferBytes, c.CPURequests = rounds, transfer, cpuReqs
	dir := filepath.Join(b.work, "zero-cost")
	if err := mkdir(dir); err != nil {
		return c, err
	}
	port, err := freeLoopbackPort()
	if err != nil {
		return c, err
	}
	cmd, logPath, err := b.startServer(dir, "--proxy", fmt.Sprintf("127.0.0.1:%d=PORT", port), "--init")
	if err != nil {
		return c, err
	}
	defer kit.Stop(cmd, 30*time.Second)
	childPort, err := switchedPort(ctx, logPath)
	if err != nil {
		return c, err
	}
	direct := fmt.Sprintf("http://127.0.0.1:%d", childPort)
	proxied := fmt.Sprintf("http://127.0.0.1:%d", port)
	keep := func() *http.Client {
		return &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	}
	dc, pc := keep(), keep()
	small := func(cl *http.Client, base string) (time.Duration, error) {
		start := time.Now()
		resp, err := cl.Get(base + "/up")
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return time.Since(start), err
	}
	for range 200 { // warm both connections and paths
		if _, err := small(dc, direct); err != nil {
			return c, err
		}
		if _, err := small(pc, proxied); err != nil {
			return c, err
		}
	}
	var dl, pl []time.Duration
	for i := range rounds {
		if ctx.Err() != nil {
			return c, ctx.Err()
		}
		// Alternate which side goes first, so neither always follows the other.
		first, second := dc, pc
		fb, sb := direct, proxied
		if i%2 == 1 {
			first, second, fb, sb = pc, dc, proxied, direct
		}
		d1, err1 := small(first, fb)
		d2, err2 := small(second, sb)
		if err := errors.Join(err1, err2); err != nil {
			c.RequestsFailedAnywhere++
			continue
		}
		if i%2 == 1 {
			d1, d2 = d2, d1
		}
		dl, pl = append(dl, d1), append(pl, d2)
	}
	c.DirectP50, c.DirectP99 = kit.Quantile(dl, 0.5), kit.Quantile(dl, 0.99)
	c.ProxyP50, c.ProxyP99 = kit.Quantile(pl, 0.5), kit.Quantile(pl, 0.99)

	big := func(base string) (float64, error) {
		cl := &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}
		start := time.Now()
		resp, err := cl.Get(fmt.Sprintf("%s/bytes?n=%d", base, transfer))
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err == nil && n != transfer {
			err = fmt.Errorf("got %d bytes of %d", n, transfer)
		}
		return float64(n) / (1 << 20) / time.Since(start).Seconds(), err
	}
	for range 3 {
		for _, side := range []string{direct, proxied} {
			mbps, err := big(side)
			if err != nil {
				return c, fmt.Errorf("transfer: %w", err)
			}
			if side == direct {
				c.DirectMBps = append(c.DirectMBps, mbps)
			} else {
				c.ProxyMBps = append(c.ProxyMBps, mbps)
			}
		}
	}

	pid := cmd.Process.Pid
	c.FdsBefore = fdCount(pid)
	cpu0, err := kit.CPUTime(pid)
	if err != nil {
		return c, err
	}
	fresh := &http.Client{Timeout: time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}
	var wg sync.WaitGroup
	var mu sync.Mutex
	next := 0
	for range 4 {
		wg.Go(func() {
			for {
				mu.Lock()
				if next >= cpuReqs {
					mu.Unlock()
					return
				}
				next++
				mu.Unlock()
				if _, err := small(fresh, proxied); err != nil {
					mu.Lock()
					c.RequestsFailedAnywhere++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	cpu1, err := kit.CPUTime(pid)
	if err != nil {
		return c, err
	}
	c.CPU = cpu1 - cpu0
	c.CPUPer10k = c.CPU * 10000 / time.Duration(cpuReqs)
	_ = kit.Sleep(ctx, time.Second) // the last connections' goroutines end
	c.FdsAfter = fdCount(pid)
	if c.RequestsFailedAnywhere > 0 {
		return c, fmt.Errorf("%d requests failed", c.RequestsFailedAnywhere)
	}
	return c, kit.Stop(cmd, 30*time.Second)
}

func fdCount(pid int) int {
	ents, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	return len(ents)
}

// switchedPort waits for the proxy's first "switched" line and returns
// the child's port from it.
func switchedPort(ctx context.Context, logPath string) (int, error) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		lines, _ := kit.ReadLogFile(logPath)
		for _, l := range lines {
			if l.Msg == "switched" {
				if p, ok := l.Attrs["port"].(float64); ok {
					return int(p), nil
				}
			}
		}
		_ = kit.Sleep(ctx, 50*time.Millisecond)
	}
	return 0, errors.New("no switched line in the log within a minute")
}

func medianF(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func (r *ZeroResult) write(w io.Writer) {
	fmt.Fprintf(w, "### Zero-downtime restarts: %d requests a second, each on a new connection, across %d changes per mode\n\n", r.Rate, r.changes())
	fmt.Fprintln(w, "| mode | child boot | requests | refused | failed | failed per change | slowest request, ms |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	for _, row := range r.Rows {
		per := 0.0
		if row.Changes > 0 {
			per = float64(row.Refused+row.Failed) / float64(row.Changes)
		}
		fmt.Fprintf(w, "| %s | %s | %d | %d | %d | %.1f | %s |\n", row.Mode, row.Boot, row.Requests, row.Refused, row.Failed, per, kit.Ms(row.Slowest))
	}
	c := r.Cost
	fmt.Fprintf(w, "\n### --proxy against a direct connection to the same child (interleaved, one run)\n\n")
	fmt.Fprintln(w, "| measure | direct | through --proxy | difference |")
	fmt.Fprintln(w, "|---|---:|---:|---:|")
	fmt.Fprintf(w, "| GET /up on a kept-alive connection, p50 (%d each) | %s | %s | +%s |\n", c.Rounds, us(c.DirectP50), us(c.ProxyP50), us(c.ProxyP50-c.DirectP50))
	fmt.Fprintf(w, "| the same, p99 | %s | %s | +%s |\n", us(c.DirectP99), us(c.ProxyP99), us(c.ProxyP99-c.DirectP99))
	dm, pm := medianF(c.DirectMBps), medianF(c.ProxyMBps)
	ratio := 0.0
	if dm > 0 {
		ratio = 100 * pm / dm
	}
	fmt.Fprintf(w, "| %d MiB transfer, median of %d, MiB/s | %.0f | %.0f | %.0f%% of direct |\n", c.TransferBytes>>20, len(c.DirectMBps), dm, pm, ratio)
	fmt.Fprintf(w, "\nparamexec's CPU for %d requests through --proxy, each on a new connection: %s (%s per 10,000); its fds %d before, %d after.\n\n",
		c.CPURequests, c.CPU.Round(time.Millisecond), c.CPUPer10k.Round(time.Millisecond), c.FdsBefore, c.FdsAfter)
}

func (r *ZeroResult) changes() int {
	if len(r.Rows) == 0 {
		return 0
	}
	return r.Rows[0].Changes
}

func us(d time.Duration) string { return fmt.Sprintf("%d µs", d.Microseconds()) }
