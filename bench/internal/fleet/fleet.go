// Package fleet runs many paramexec supervisors against one emulated account
// behind a token-bucket proxy, and measures throttling, convergence and restarts.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/paramexec/paramexec/bench/internal/kit"
	"github.com/paramexec/paramexec/internal/faultproxy"
)

// Options describe one fleet.
type Options struct {
	N        int           // supervisors
	Interval time.Duration // their --interval
	TPS      float64       // the proxy's token bucket: requests a second
	Burst    int           // the bucket's size; 0: one second's worth
	Params   int           // parameters under the fleet's path
	// Window is each measurement window; 0: ten intervals, so that every
	// instance makes about one discovery poll in it (--discover-every 10).
	Window time.Duration
	// ConvergeWait bounds the wait for every child to get the change (0: 5
	// minutes). A fleet far over its quota may not make it: the result then
	// says how many did, which is a finding, not a failure.
	ConvergeWait time.Duration
	// StartRate is supervisors started a second (0: 50), so that the
	// benchmark does not measure a fork storm.
	StartRate float64

	Bin kit.Binaries
	Emu *kit.Emulator
	Dir string    // logs and records; created
	Log io.Writer // progress
}

// Result is what one fleet did.
type Result struct {
	N        int
	Interval time.Duration
	TPS      float64
	Params   int

	// StartedIn is the time from the first supervisor's start to the last
	// child's start record, with no rate limit.
	StartedIn time.Duration

	// The unthrottled window: the fleet's own demand.
	FreeWindow time.Duration
	FreeCalls  map[string]int
	FreePolls  int // polls logged in the window, discovery ones included
	FreeDiscov int // of which discovery polls

	// The throttled window: the same fleet behind the token bucket.
	Window          time.Duration
	Calls           map[string]int
	Total           int
	Throttled       int           // requests answered ThrottlingException by the bucket
	Polls           int           // polls that ended in the window, failed ones included
	PollsFailed     int           // polls that gave up (after the SDK's own retries)
	PollsThrottled  int           // of which with code ThrottlingException
	CPUBusy         float64       // the whole box's CPU use in the window, 0..1 of all CPUs
	SupervisorCPU   time.Duration // CPU all supervisors used in the window
	MotoCPU         time.Duration // CPU moto used in the window (0 when not ours)
	SupervisorRSS   int           // median VmRSS of the supervisors, KiB
	ChildrenStarted int           // children that had started before the change (must be N)

	// One change, made with the bucket still on.
	Converged      int           // children restarted with the new value within ConvergeWait
	ConvergeWait   time.Duration // how long the benchmark waited for them
	Converge       time.Duration // the put returned → the last of them restarted
	ConvergeMedian time.Duration
	ChangeCalls    int // requests while converging
	ChangeThrottle int // of which throttled
	// StartsPerInstance counts instances by how many children they started
	// over the whole run, a few intervals after convergence: 2 (the first
	// child and the one after the change), or 1 for an instance that had
	// not got the change yet; never more.
	StartsPerInstance map[int]int
	Errors            int // ERROR lines in the supervisors' logs
}

// CallsPerPoll is the mean number of calls an idle poll made, discovery
// polls included at the rate they came.
func (r Result) CallsPerPoll() float64 {
	if r.FreePolls == 0 {
		return 0
	}
	total := 0
	for _, n := range r.FreeCalls {
		total += n
	}
	return float64(total) / float64(r.FreePolls)
}

// PerInstanceRate is the measured calls a second of one supervisor with no
// throttling: its share of any quota.
func (r Result) PerInstanceRate() float64 {
	total := 0
	for _, n := range r.FreeCalls {
		total += n
	}
	if r.N == 0 || r.FreeWindow <= 0 {
		return 0
	}
	return float64(total) / float64(r.N) / r.FreeWindow.Seconds()
}

// Run runs one fleet to the end and stops it.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Window <= 0 {
		o.Window = 10 * o.Interval
	}
	if o.ConvergeWait <= 0 {
		o.ConvergeWait = 5 * time.Minute
	}
	if o.Burst <= 0 {
		o.Burst = int(math.Ceil(o.TPS))
	}
	if o.StartRate <= 0 {
		o.StartRate = 50
	}
	r := Result{N: o.N, Interval: o.Interval, TPS: o.TPS, Params: o.Params, FreeWindow: o.Window, Window: o.Window}
	logf := func(format string, args ...any) {
		fmt.Fprintf(o.Log, "fleet %d: "+format+"\n", append([]any{o.N}, args...)...)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return r, err
	}
	path := "/fleet/" + kit.RunID()
	params, err := o.Emu.SeedPath(ctx, path, max(o.Params, 1))
	if err != nil {
		return r, err
	}
	px, err := faultproxy.Start(o.Emu.URL)
	if err != nil {
		return r, err
	}
	defer px.Close()
	record := filepath.Join(o.Dir, "records.jsonl")
	recs, err := kit.WatchRecords(record)
	if err != nil {
		return r, err
	}
	defer recs.Close()

	// Start the fleet without a rate limit: its start-up is a deploy burst,
	// which is not what this measures.
	logf("starting %d supervisors (--interval %s) at %.0f a second", o.N, o.Interval, o.StartRate)
	sups := make([]*kit.Supervisor, 0, o.N)
	logs := make([]string, 0, o.N)
	defer func() { stopAll(sups) }()
	t0 := time.Now()
	pace := time.NewTicker(time.Duration(float64(time.Second) / o.StartRate))
	for i := range o.N {
		logFile := filepath.Join(o.Dir, fmt.Sprintf("sup-%04d.log", i))
		s, err := kit.StartSupervisor(kit.SupervisorSpec{
			Bin: o.Bin,
			Flags: []string{"--path", path, "--interval", o.Interval.String(), "--log-format", "json",
				"--log-level", "debug", "--grace", "5s", "--startup-timeout", "10m"},
			Endpoint: px.URL(),
			Record:   record,
			LogFile:  logFile,
		})
		if err != nil {
			pace.Stop()
			return r, err
		}
		sups, logs = append(sups, s), append(logs, logFile)
		select {
		case <-pace.C:
		case <-ctx.Done():
			pace.Stop()
			return r, ctx.Err()
		}
	}
	pace.Stop()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	rs, err := recs.Wait(wctx, func(rs []kit.Record) bool { return len(startedPpids(rs)) >= o.N })
	if err != nil {
		return r, fmt.Errorf("%d of %d children started: %w", len(startedPpids(rs)), o.N, err)
	}
	r.StartedIn = time.Since(t0)
	logf("all children started in %s", r.StartedIn.Round(time.Millisecond))

	// Let the first polls spread out ([Interval/2, 3*Interval/2)), then
	// measure what the fleet asks for when nothing stops it.
	if err := kit.Sleep(ctx, o.Interval*3/2); err != nil {
		return r, err
	}
	px.ResetCounts()
	freeFrom := time.Now()
	if err := kit.Sleep(ctx, o.Window); err != nil {
		return r, err
	}
	freeTo := time.Now()
	r.FreeCalls = px.Counts().ByOp
	logf("unthrottled window: %v", r.FreeCalls)

	// Now behind the bucket.
	px.RateLimit(o.TPS, o.Burst)
	if err := kit.Sleep(ctx, o.Interval); err != nil {
		return r, err
	}
	px.ResetCounts()
	cpu0, _ := kit.ReadCPUStat()
	sup0 := cpuOf(sups)
	moto0 := motoCPU(o.Emu)
	winFrom := time.Now()
	if err := kit.Sleep(ctx, o.Window); err != nil {
		return r, err
	}
	winTo := time.Now()
	c := px.Counts()
	cpu1, _ := kit.ReadCPUStat()
	r.SupervisorCPU = cpuOf(sups) - sup0
	r.MotoCPU = motoCPU(o.Emu) - moto0
	r.CPUBusy = kit.Utilisation(cpu0, cpu1)
	r.Calls, r.Total, r.Throttled = c.ByOp, c.Total, c.Throttled
	var rss []int
	for _, s := range sups {
		if kb, err := kit.RSS(s.Pid()); err == nil {
			rss = append(rss, kb)
		}
	}
	r.SupervisorRSS = kit.Median(rss)
	logf("throttled window at %.0f/s: %d requests, %d throttled", o.TPS, r.Total, r.Throttled)

	// One change, with the bucket still on.
	r.ChildrenStarted = len(startedPpids(recs.All()))
	p := params[0]
	value := kit.NewValue()
	px.ResetCounts()
	if err := o.Emu.PutParameter(ctx, p.Name, value, p.Secure); err != nil {
		return r, err
	}
	put := time.Now()
	converged := func(rs []kit.Record) bool { return len(withValue(rs, p.Var, value)) >= o.N }
	r.ConvergeWait = o.ConvergeWait
	cctx, ccancel := context.WithTimeout(ctx, o.ConvergeWait)
	rs, err = recs.Wait(cctx, converged)
	ccancel()
	if err != nil && ctx.Err() != nil {
		return r, err
	}
	var lat []time.Duration
	for _, seen := range withValue(rs, p.Var, value) {
		lat = append(lat, seen.Sub(put))
	}
	r.Converged = len(lat)
	r.Converge, r.ConvergeMedian = kit.Max(lat), kit.Median(lat)
	c = px.Counts()
	r.ChangeCalls, r.ChangeThrottle = c.Total, c.Throttled
	logf("%d of %d converged; the last after %s (median %s)", r.Converged, o.N, r.Converge.Round(time.Millisecond), r.ConvergeMedian.Round(time.Millisecond))

	// A few more intervals under the bucket: a restart caused by throttling
	// would show up as a third start.
	if err := kit.Sleep(ctx, 3*o.Interval); err != nil {
		return r, err
	}
	r.StartsPerInstance = map[int]int{}
	for _, n := range startsPerPpid(recs.All(), sups) {
		r.StartsPerInstance[n]++
	}
	stopErr := stopAll(sups)
	sups = nil

	// The supervisors' own account of their polls in the throttled window.
	for _, f := range logs {
		lines, err := kit.ReadLogFile(f)
		if err != nil {
			return r, err
		}
		for _, l := range lines {
			if l.Level == "ERROR" {
				r.Errors++
			}
			switch in := func(a, b time.Time) bool { return !l.Time.Before(a) && l.Time.Before(b) }; {
			case l.Msg == "poll: no change" && in(freeFrom, freeTo):
				r.FreePolls++
				if l.Bool("discover") {
					r.FreeDiscov++
				}
			case l.Msg == "poll: no change" && in(winFrom, winTo):
				r.Polls++
			case strings.HasPrefix(l.Msg, "poll failed") && in(winFrom, winTo):
				r.Polls++
				r.PollsFailed++
				if l.String("code") == "ThrottlingException" {
					r.PollsThrottled++
				}
			}
		}
	}
	var errs []error
	if r.ChildrenStarted != o.N {
		errs = append(errs, fmt.Errorf("%d of %d children running before the change", r.ChildrenStarted, o.N))
	}
	for starts, n := range r.StartsPerInstance {
		if starts > 2 || starts < 1 {
			errs = append(errs, fmt.Errorf("%d instances started %d children for one change: %v", n, starts, r.StartsPerInstance))
		}
	}
	if stopErr != nil {
		errs = append(errs, stopErr)
	}
	return r, errors.Join(errs...)
}

// startedPpids is the set of supervisors (a child's parent) with a child started.
func startedPpids(rs []kit.Record) map[int]bool {
	out := map[int]bool{}
	for _, r := range kit.Starts(rs) {
		out[r.Ppid] = true
	}
	return out
}

// withValue maps each supervisor whose child started with v in name to when
// that start was read.
func withValue(rs []kit.Record, name, v string) map[int]time.Time {
	out := map[int]time.Time{}
	for _, r := range kit.Starts(rs) {
		if r.Env[name] == v {
			if _, ok := out[r.Ppid]; !ok {
				out[r.Ppid] = r.Seen
			}
		}
	}
	return out
}

// startsPerPpid counts the children each supervisor started.
func startsPerPpid(rs []kit.Record, sups []*kit.Supervisor) []int {
	n := map[int]int{}
	for _, r := range kit.Starts(rs) {
		n[r.Ppid]++
	}
	out := make([]int, 0, len(sups))
	for _, s := range sups {
		out = append(out, n[s.Pid()])
	}
	return out
}

func cpuOf(sups []*kit.Supervisor) time.Duration {
	var sum time.Duration
	for _, s := range sups {
		if d, err := kit.CPUTime(s.Pid()); err == nil {
			sum += d
		}
	}
	return sum
}

func motoCPU(e *kit.Emulator) time.Duration {
	if e.Server == nil {
		return 0
	}
	d, _ := kit.CPUTime(e.Server.Pid())
	return d
}

// stopAll stops every supervisor at once: one by one, a fleet of hundreds
// would take minutes of grace periods.
func stopAll(sups []*kit.Supervisor) error {
	var wg sync.WaitGroup
	errs := make([]error, len(sups))
	for i, s := range sups {
		wg.Go(func() { errs[i] = s.Stop(15 * time.Second) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// WriteTable prints the fleets as a Markdown table.
func WriteTable(w io.Writer, rs []Result) {
	if len(rs) == 0 {
		return
	}
	fmt.Fprintf(w, "### Fleet: N supervisors, %d parameters each, behind a %.0f/s token bucket\n\n", rs[0].Params, rs[0].TPS)
	fmt.Fprintln(w, "| N | interval | calls/instance/s (unthrottled) | calls per poll | fleet demand /s | requests/s behind the bucket | requests throttled | polls failed (throttled) | got one change: how many, last / median | starts per instance | box CPU busy | supervisors CPU | moto CPU | supervisor RSS median MiB |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
	for _, r := range rs {
		demand := r.PerInstanceRate() * float64(r.N)
		share := func(a, b int) string {
			if b == 0 {
				return "–"
			}
			return fmt.Sprintf("%.1f%%", 100*float64(a)/float64(b))
		}
		win := r.Window.Seconds()
		got := fmt.Sprintf("all %d, %.1f s / %.1f s", r.N, r.Converge.Seconds(), r.ConvergeMedian.Seconds())
		if r.Converged < r.N {
			got = fmt.Sprintf("%d of %d in %s, median %.1f s", r.Converged, r.N, r.ConvergeWait, r.ConvergeMedian.Seconds())
		}
		fmt.Fprintf(w, "| %d | %s | %.3f | %.2f | %.1f | %.1f | %s of %d | %s of %d (%d) | %s | %v | %.0f%% | %.0f%% of a core | %.0f%% of a core | %s |\n",
			r.N, r.Interval, r.PerInstanceRate(), r.CallsPerPoll(), demand, float64(r.Total)/win,
			share(r.Throttled, r.Total), r.Total, share(r.PollsFailed, r.Polls), r.Polls, r.PollsThrottled,
			got, r.StartsPerInstance,
			100*r.CPUBusy, 100*r.SupervisorCPU.Seconds()/win, 100*r.MotoCPU.Seconds()/win, kit.MiB(r.SupervisorRSS))
	}
	fmt.Fprintln(w)
	WriteCapacity(w, rs)
}

// Quotas of Parameter Store, per account and Region (see the README's
// citations): standard throughput shares 40/s among GetParameter,
// GetParameters and GetParametersByPath; higher throughput allows 3,000/s
// for GetParameter and GetParameters together but only 100/s for
// GetParametersByPath.
const (
	standardTPS   = 40
	higherGetTPS  = 3000
	higherPathTPS = 100
)

// WriteCapacity derives from the measured calls per poll the largest fleet
// that each interval supports, with the quota fully used.
func WriteCapacity(w io.Writer, rs []Result) {
	var get, path, polls int
	for _, r := range rs {
		get += r.FreeCalls["ssm:GetParameters"]
		path += r.FreeCalls["ssm:GetParametersByPath"]
		polls += r.FreePolls
	}
	if polls == 0 {
		return
	}
	g, p := float64(get)/float64(polls), float64(path)/float64(polls)
	fmt.Fprintf(w, "### Largest fleet per interval (measured: %.3f GetParameters + %.3f GetParametersByPath per poll, %d polls, %d parameters, --discover-every 10)\n\n", g, p, polls, rs[0].Params)
	fmt.Fprintln(w, "| interval | standard (40/s shared) | higher throughput (3,000/s GetParameters, 100/s GetParametersByPath) |")
	fmt.Fprintln(w, "|---:|---:|---:|")
	for _, iv := range []time.Duration{10 * time.Second, 30 * time.Second, time.Minute, 5 * time.Minute, 15 * time.Minute} {
		s := iv.Seconds()
		std := standardTPS * s / (g + p)
		high := math.Inf(1)
		if g > 0 {
			high = higherGetTPS * s / g
		}
		if p > 0 {
			high = math.Min(high, higherPathTPS*s/p)
		}
		fmt.Fprintf(w, "| %s | %.0f | %.0f |\n", iv, math.Floor(std), math.Floor(high))
	}
	fmt.Fprintln(w)
}
