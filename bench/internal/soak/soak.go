// Package soak runs supervisors for minutes against a proxy that throttles,
// fails, delays and drops at random while values change, then checks the outcome.
package soak

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/paramexec/paramexec/bench/internal/kit"
	"github.com/paramexec/paramexec/internal/faultproxy"
)

// Options describe a soak.
type Options struct {
	Duration    time.Duration // how long faults and changes go on
	Supervisors int
	Params      int           // parameters under the path, every fourth a SecureString
	Secrets     int           // secrets, each watched with --secret
	Interval    time.Duration // the supervisors' --interval
	ChangeEvery time.Duration // mean time between two changes
	// Settle bounds the wait, after faults stop, for every child to hold
	// the latest values: a deadline, not a measurement.
	Settle time.Duration
	Faults []faultproxy.Rule

	Bin kit.Binaries
	Emu *kit.Emulator
	Dir string
	Log io.Writer
}

// DefaultFaults hit about a third of all requests. A rule that does not
// fire lets the next one try, so later rules fire a little less often
// than their probability says.
func DefaultFaults() []faultproxy.Rule {
	return []faultproxy.Rule{
		{Fault: faultproxy.Throttle, Probability: 0.08},
		{Fault: faultproxy.ServerError, Probability: 0.04},
		{Fault: faultproxy.Unavailable, Probability: 0.03},
		{Fault: faultproxy.Drop, Probability: 0.03},
		{Fault: faultproxy.Delay, Probability: 0.05, Delay: 1500 * time.Millisecond},
		{Fault: faultproxy.Delay, Probability: 0.10, Delay: 200 * time.Millisecond},
		// Held until paramexec's 15 s per-attempt timeout gives up on it.
		{Fault: faultproxy.Hang, Probability: 0.005},
	}
}

// DefaultOptions is a soak of a few minutes.
func DefaultOptions() Options {
	return Options{
		Duration:    5 * time.Minute,
		Supervisors: 6,
		Params:      20,
		Secrets:     3,
		Interval:    2 * time.Second,
		ChangeEvery: 1500 * time.Millisecond,
		Settle:      3 * time.Minute,
		Faults:      DefaultFaults(),
	}
}

// Quick shrinks a soak to seconds, for the test.
func (o *Options) Quick() {
	o.Supervisors, o.Params, o.Secrets = 2, 4, 1
	o.Interval, o.ChangeEvery = time.Second, time.Second
}

// Result is what a soak saw and what it checked.
type Result struct {
	Duration    time.Duration
	Supervisors int
	Params      int
	Secrets     int
	Interval    time.Duration

	Changes  int // puts made
	Altering int // puts that changed a value (the others re-put the same value: a new version only)

	Requests, Faulted, Throttled int // at the proxy while faults were on

	// Per supervisor, in start order.
	Restarts []int // children started after the first
	// RestartsWithoutChange counts restarts whose child got exactly the
	// environment (the watched variables) its predecessor had.
	RestartsWithoutChange int
	Converged             int           // supervisors whose last child holds every latest value
	SettledIn             time.Duration // faults off → the last supervisor converged
	PollFailures          int           // polls that gave up, over all supervisors
	FailureCodes          map[string]int
	Recoveries            int // "poll recovered" lines
	LogBytes              int64
	ValuesChecked         int      // distinct values searched for in the logs
	Leaks                 []string // "file: variable" for each value found in a log; never the value
	Errors                []string // what failed, if anything
}

// OK reports whether every check passed.
func (r Result) OK() bool { return len(r.Errors) == 0 }

// item is one watched value and how to change it.
type item struct {
	name, varName string
	secret        bool
	secure        bool
}

// Run runs a soak and checks it; the error lists every failed check.
func Run(ctx context.Context, o Options) (Result, error) {
	r := Result{Duration: o.Duration, Supervisors: o.Supervisors, Params: o.Params, Secrets: o.Secrets, Interval: o.Interval, FailureCodes: map[string]int{}}
	logf := func(format string, args ...any) { fmt.Fprintf(o.Log, "soak: "+format+"\n", args...) }
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return r, err
	}
	id := kit.RunID()
	path := "/soak/" + id
	params, err := o.Emu.SeedPath(ctx, path, o.Params)
	if err != nil {
		return r, err
	}
	var items []item
	truth := map[string]string{} // variable → its latest value
	var seen []string            // every value ever set, for the leak check
	for _, p := range params {
		items = append(items, item{name: p.Name, varName: p.Var, secure: p.Secure})
		truth[p.Var] = p.Value
		seen = append(seen, p.Value)
	}
	flags := []string{"--path", path}
	for i := range o.Secrets {
		name := fmt.Sprintf("soak-%s/s%02d", id, i)
		v := kit.NewValue()
		if err := o.Emu.CreateSecret(ctx, name, v); err != nil {
			return r, err
		}
		it := item{name: name, varName: fmt.Sprintf("S%02d", i), secret: true}
		items = append(items, it)
		truth[it.varName] = v
		seen = append(seen, v)
		flags = append(flags, "--secret", name)
	}

	px, err := faultproxy.Start(o.Emu.URL)
	if err != nil {
		return r, err
	}
	defer px.Close()
	for _, rule := range o.Faults {
		px.Inject(rule)
	}
	record := filepath.Join(o.Dir, "records.jsonl")
	recs, err := kit.WatchRecords(record)
	if err != nil {
		return r, err
	}
	defer recs.Close()
	var sups []*kit.Supervisor
	var logs []string
	defer func() {
		for _, s := range sups {
			s.Stop(15 * time.Second)
		}
	}()
	logf("%d supervisors, %d parameters, %d secrets, --interval %s, faults on for %s", o.Supervisors, o.Params, o.Secrets, o.Interval, o.Duration)
	for i := range o.Supervisors {
		format := "json"
		if i == 1 {
			format = "text" // the leak check covers both handlers
		}
		logFile := filepath.Join(o.Dir, fmt.Sprintf("sup-%02d.%s.log", i, format))
		s, err := kit.StartSupervisor(kit.SupervisorSpec{
			Bin: o.Bin,
			Flags: append(slices.Clone(flags), "--interval", o.Interval.String(), "--log-format", format,
				"--log-level", "debug", "--grace", "5s", "--startup-timeout", "10m"),
			Endpoint: px.URL(),
			Record:   record,
			LogFile:  logFile,
		})
		if err != nil {
			return r, err
		}
		sups, logs = append(sups, s), append(logs, logFile)
	}

	// Values change at random, straight at moto, while the faults run.
	end := time.Now().Add(o.Duration)
	for time.Now().Before(end) {
		wait := time.Duration(float64(o.ChangeEvery) * rand.ExpFloat64())
		if err := kit.Sleep(ctx, min(wait, time.Until(end))); err != nil {
			return r, err
		}
		if !time.Now().Before(end) {
			break
		}
		it := items[rand.IntN(len(items))]
		v := truth[it.varName]
		if rand.IntN(4) != 0 { // a quarter re-put the same value
			v = kit.NewValue()
			seen = append(seen, v)
		}
		if it.secret {
			err = o.Emu.PutSecretValue(ctx, it.name, v)
		} else {
			err = o.Emu.PutParameter(ctx, it.name, v, it.secure)
		}
		if err != nil {
			return r, err
		}
		r.Changes++
		if v != truth[it.varName] {
			r.Altering++
		}
		truth[it.varName] = v
	}
	c := px.Counts()
	r.Requests, r.Faulted, r.Throttled = c.Total, c.Faulted, c.Throttled
	px.Clear()
	logf("%d changes (%d altering); %d requests, %d faulted; faults off, waiting for every child to hold the latest values", r.Changes, r.Altering, r.Requests, r.Faulted)

	// Every supervisor's latest child must come to hold the latest values.
	faultsOff := time.Now()
	pids := make([]int, len(sups))
	for i, s := range sups {
		pids[i] = s.Pid()
	}
	sctx, cancel := context.WithTimeout(ctx, o.Settle)
	rs, werr := recs.Wait(sctx, func(rs []kit.Record) bool { return converged(rs, pids, truth) == len(pids) })
	cancel()
	r.SettledIn = time.Since(faultsOff)
	r.Converged = converged(rs, pids, truth)
	if werr != nil {
		r.Errors = append(r.Errors, fmt.Sprintf("%d of %d supervisors' children hold the latest values %s after the faults stopped", r.Converged, len(pids), o.Settle))
	}
	// A little longer, so that a late restart without a change would show.
	if err := kit.Sleep(ctx, 2*o.Interval); err != nil {
		return r, err
	}
	var stopErrs []error
	for _, s := range sups {
		if err := s.Stop(15 * time.Second); err != nil {
			stopErrs = append(stopErrs, err)
		}
	}
	sups = nil
	if len(stopErrs) > 0 {
		r.Errors = append(r.Errors, fmt.Sprintf("stopping: %v", errors.Join(stopErrs...)))
	}

	// Restarts: each must have changed a watched variable.
	byPpid := map[int][]kit.Record{}
	for _, rec := range kit.Starts(recs.All()) {
		byPpid[rec.Ppid] = append(byPpid[rec.Ppid], rec)
	}
	for _, pid := range pids {
		starts := byPpid[pid]
		r.Restarts = append(r.Restarts, max(len(starts)-1, 0))
		for i := 1; i < len(starts); i++ {
			if sameVars(starts[i-1].Env, starts[i].Env, truth) {
				r.RestartsWithoutChange++
			}
		}
		if len(starts) == 0 {
			r.Errors = append(r.Errors, fmt.Sprintf("supervisor %d never started a child", pid))
		}
	}
	if r.RestartsWithoutChange > 0 {
		r.Errors = append(r.Errors, fmt.Sprintf("%d restarts gave the child the environment it already had", r.RestartsWithoutChange))
	}
	if m := kit.Max(r.Restarts); m > r.Altering {
		r.Errors = append(r.Errors, fmt.Sprintf("a supervisor restarted %d times for %d altering changes", m, r.Altering))
	}

	// Logs: failures as paramexec reported them, and no value anywhere.
	values := slices.Compact(slices.Sorted(slices.Values(seen)))
	r.ValuesChecked = len(values)
	for _, f := range logs {
		raw, err := os.ReadFile(f)
		if err != nil {
			return r, err
		}
		r.LogBytes += int64(len(raw))
		for _, v := range values {
			if bytes.Contains(raw, []byte(v)) {
				r.Leaks = append(r.Leaks, fmt.Sprintf("%s: a value of %s", filepath.Base(f), varOf(v, truth)))
			}
		}
		if !strings.HasSuffix(f, ".json.log") {
			continue
		}
		lines, err := kit.ReadLogFile(f)
		if err != nil {
			return r, err
		}
		for _, l := range lines {
			switch {
			case strings.HasPrefix(l.Msg, "poll failed"):
				r.PollFailures++
				code := l.String("code")
				if code == "" {
					code = "(network)"
				}
				r.FailureCodes[code]++
			case l.Msg == "poll recovered":
				r.Recoveries++
			}
		}
	}
	if len(r.Leaks) > 0 {
		r.Errors = append(r.Errors, fmt.Sprintf("%d values found in the supervisors' logs", len(r.Leaks)))
	}
	if len(r.Errors) > 0 {
		return r, errors.New(strings.Join(r.Errors, "; "))
	}
	return r, nil
}

// converged counts the supervisors whose latest child holds truth.
func converged(rs []kit.Record, pids []int, truth map[string]string) int {
	last := map[int]kit.Record{}
	for _, rec := range kit.Starts(rs) {
		last[rec.Ppid] = rec
	}
	n := 0
	for _, pid := range pids {
		rec, ok := last[pid]
		if ok && maps.EqualFunc(truth, pick(rec.Env, truth), func(a, b string) bool { return a == b }) {
			n++
		}
	}
	return n
}

// pick keeps the watched variables of env.
func pick(env, watched map[string]string) map[string]string {
	out := make(map[string]string, len(watched))
	for k := range watched {
		if v, ok := env[k]; ok {
			out[k] = v
		}
	}
	return out
}

func sameVars(a, b, watched map[string]string) bool {
	return maps.Equal(pick(a, watched), pick(b, watched))
}

// varOf names the variable a leaked value belonged to, for the report.
func varOf(v string, truth map[string]string) string {
	for k, tv := range truth {
		if tv == v {
			return k
		}
	}
	return "an earlier value"
}

// Write prints the soak as Markdown.
func (r Result) Write(w io.Writer) {
	fmt.Fprintf(w, "### Fault soak: %s, %d supervisors, %d parameters + %d secrets, --interval %s\n\n", r.Duration, r.Supervisors, r.Params, r.Secrets, r.Interval)
	fmt.Fprintln(w, "| check | result |")
	fmt.Fprintln(w, "|---|---|")
	fmt.Fprintf(w, "| changes (altering a value / same value again) | %d (%d / %d) |\n", r.Changes, r.Altering, r.Changes-r.Altering)
	fmt.Fprintf(w, "| requests at the proxy / hit by a fault / throttled | %d / %d / %d |\n", r.Requests, r.Faulted, r.Throttled)
	fmt.Fprintf(w, "| polls that gave up (by code), recoveries logged | %d %v, %d |\n", r.PollFailures, r.FailureCodes, r.Recoveries)
	fmt.Fprintf(w, "| restarts per supervisor | %v |\n", r.Restarts)
	fmt.Fprintf(w, "| restarts without a change (must be 0) | %d |\n", r.RestartsWithoutChange)
	fmt.Fprintf(w, "| children holding the latest values at the end | %d of %d (%.1f s after the faults stopped) |\n", r.Converged, r.Supervisors, r.SettledIn.Seconds())
	fmt.Fprintf(w, "| values found in %d KiB of logs (%d distinct values searched) | %d |\n", r.LogBytes/1024, r.ValuesChecked, len(r.Leaks))
	verdict := "PASS"
	if !r.OK() {
		verdict = "FAIL: " + strings.Join(r.Errors, "; ")
	}
	fmt.Fprintf(w, "| verdict | %s |\n\n", verdict)
}
