package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/paramexec/paramexec/bench/internal/kit"
	"github.com/paramexec/paramexec/internal/faultproxy"
)

// discoverEvery makes every third poll of the polling phase a discovery
// poll, so that one run shows both kinds.
const discoverEvery = 3

// PollRow is one watched configuration: what its idle polls cost and how
// fast a change reaches a new child.
type PollRow struct {
	Params, Secrets int
	Interval        time.Duration
	Idle, Discovery []PollSample
	Changes         []ChangeSample
	// What moto alone takes, timed from the benchmark with the bare SDK:
	// one version poll (GetParameters, ten names a call, eight at a time,
	// as paramexec makes them) and the reload of the one changed parameter
	// (GetParameters, decrypted). Both are inside every change's latency.
	MotoPoll, MotoReload time.Duration
}

// Budget is the most calls an idle, non-discovery poll may make: one
// GetParameters per ten parameters and one DescribeSecret per secret.
func (r PollRow) Budget() int { return (r.Params+9)/10 + r.Secrets }

// PollSample is what the proxy saw between the end of one idle poll and the
// end of the next.
type PollSample struct {
	Calls        map[string]int
	Total        int
	Decrypting   int
	SecretValues int
}

// ChangeSample is one change timed from the put to the new child.
type ChangeSample struct {
	Latency   time.Duration // the put returned → the new child's start record was read
	Bound     time.Duration // interval + largest jitter + Stop + 100 ms
	Detect    time.Duration // the put returned → "change detected" (waiting for the poll, the poll, the reload)
	Stop      time.Duration // "restart begun" → "child exited": the old child's own stop time
	Gap       time.Duration // the supervisor's gap=: old child reaped → new child started
	RecordGap time.Duration // the old child's exit record → the new one's start record, as read
	Took      time.Duration // the supervisor's took=: change handed over → new child started
}

func (b *bench) polls(ctx context.Context) ([]PollRow, error) {
	type config struct{ params, secrets int }
	var configs []config
	for _, n := range b.opt.sizes {
		configs = append(configs, config{n, 0})
	}
	for _, s := range b.opt.secrets {
		configs = append(configs, config{0, s})
	}
	var rows []PollRow
	for _, c := range configs {
		b.logf("polls: %d parameters, %d secrets, --interval %s", c.params, c.secrets, b.opt.interval)
		row, err := b.pollAt(ctx, c.params, c.secrets)
		rows = append(rows, row)
		if err != nil {
			return rows, fmt.Errorf("%d parameters, %d secrets: %w", c.params, c.secrets, err)
		}
	}
	return rows, nil
}

func (b *bench) pollAt(ctx context.Context, nParams, nSecrets int) (PollRow, error) {
	row := PollRow{Params: nParams, Secrets: nSecrets, Interval: b.opt.interval}
	if err := b.emu.Reset(); err != nil {
		return row, err
	}
	flags := []string{
		"--interval", b.opt.interval.String(), "--discover-every", fmt.Sprint(discoverEvery),
		"--log-format", "json", "--log-level", "debug", "--grace", "5s",
	}
	tag := fmt.Sprintf("p%d-s%d", nParams, nSecrets)
	// What a timed change puts, returning the variable the child must then
	// hold. A parameter is picked at random for each change: a poll that
	// stops at the first moved version would look faster than it is if the
	// change were always in its first batch.
	var change func(ctx context.Context, value string) (string, error)
	if nParams > 0 {
		path := fmt.Sprintf("/bench/%s/%s", b.id, tag)
		params, err := b.emu.SeedPath(ctx, path, nParams)
		if err != nil {
			return row, err
		}
		flags = append(flags, "--path", path)
		if row.MotoPoll, row.MotoReload, err = b.motoCost(ctx, params); err != nil {
			return row, err
		}
		change = func(ctx context.Context, v string) (string, error) {
			p := params[rand.IntN(len(params))]
			return p.Var, b.emu.PutParameter(ctx, p.Name, v, p.Secure)
		}
	}
	for i := range nSecrets {
		name := fmt.Sprintf("bench-%s/%s/s%02d", b.id, tag, i)
		if err := b.emu.CreateSecret(ctx, name, kit.NewValue()); err != nil {
			return row, err
		}
		flags = append(flags, "--secret", name)
		if change == nil {
			varName := fmt.Sprintf("S%02d", i)
			change = func(ctx context.Context, v string) (string, error) {
				return varName, b.emu.PutSecretValue(ctx, name, v)
			}
		}
	}
	if change == nil {
		return row, fmt.Errorf("nothing to watch")
	}

	px, err := faultproxy.Start(b.emu.URL)
	if err != nil {
		return row, err
	}
	defer px.Close()
	dir := filepath.Join(b.work, "polls-"+tag)
	if err := mkdir(dir); err != nil {
		return row, err
	}
	record := filepath.Join(dir, "records.jsonl")
	recs, err := kit.WatchRecords(record)
	if err != nil {
		return row, err
	}
	defer recs.Close()
	sup, err := kit.StartSupervisor(kit.SupervisorSpec{
		Bin:      b.bin,
		Flags:    flags,
		Endpoint: px.URL(),
		Record:   record,
		// The counts belong to the moment the line is read: the next poll
		// is an interval away, so nothing of it can be in them yet.
		Hook: func(l *kit.LogLine) { l.Extra = px.Counts() },
	})
	if err != nil {
		return row, err
	}
	defer sup.Stop(10 * time.Second)
	// One deadline for the whole configuration, many times what a working
	// paramexec needs: it ends a hung run, it judges no speed.
	steps := time.Duration(b.opt.idlePolls + 3*b.opt.changes)
	wctx, cancel := context.WithTimeout(ctx, steps*(b.opt.interval+30*time.Second)+2*time.Minute)
	defer cancel()
	i, started, err := sup.Log.WaitFor(wctx, 0, "child started")
	if err != nil {
		return row, err
	}
	prev := started.Extra.(faultproxy.Counts)
	for i++; len(row.Idle)+len(row.Discovery) < b.opt.idlePolls; {
		j, line, err := sup.Log.WaitFor(wctx, i, "poll: no change")
		if err != nil {
			return row, err
		}
		if err := noFailures(sup.Log.Lines()[i:j]); err != nil {
			return row, err
		}
		cur := line.Extra.(faultproxy.Counts)
		s := diffCounts(prev, cur)
		if line.Bool("discover") {
			row.Discovery = append(row.Discovery, s)
		} else {
			row.Idle = append(row.Idle, s)
		}
		prev, i = cur, j+1
	}

	for range b.opt.changes {
		// Start from the end of a poll and put the change at a random
		// moment of the interval that follows, as a real change would fall.
		j, _, err := sup.Log.WaitFor(wctx, i, "poll: no change")
		if err != nil {
			return row, err
		}
		i = j + 1
		time.Sleep(rand.N(b.opt.interval))
		oldPid := kit.Starts(recs.All())
		value := kit.NewValue()
		changeVar, err := change(ctx, value)
		if err != nil {
			return row, err
		}
		put := time.Now()
		rs, err := recs.Wait(wctx, func(rs []kit.Record) bool {
			st := kit.Starts(rs)
			return len(st) > 0 && st[len(st)-1].Env[changeVar] == value
		})
		if err != nil {
			return row, fmt.Errorf("the change never reached a new child: %w", err)
		}
		st := kit.Starts(rs)
		newStart := st[len(st)-1]
		k, fin, err := sup.Log.WaitFor(wctx, i, "restart finished")
		if err != nil {
			return row, err
		}
		lines := sup.Log.Lines()[i : k+1]
		at := func(msg string) (time.Time, error) {
			for _, l := range lines {
				if l.Msg == msg {
					return l.Seen, nil
				}
			}
			return time.Time{}, fmt.Errorf("no %q logged for the change", msg)
		}
		detected, err1 := at("change detected")
		begun, err2 := at("restart begun")
		exited, err3 := at("child exited")
		if err := firstErr(err1, err2, err3); err != nil {
			return row, err
		}
		c := ChangeSample{
			Latency: newStart.Seen.Sub(put),
			Detect:  detected.Sub(put),
			Stop:    exited.Sub(begun),
		}
		c.Bound = b.opt.interval + b.opt.interval/10 + c.Stop + 100*time.Millisecond
		c.Gap, _ = fin.Duration("gap")
		c.Took, _ = fin.Duration("took")
		if len(oldPid) > 0 {
			old := oldPid[len(oldPid)-1].Pid
			for _, r := range rs {
				if r.Event == "exit" && r.Pid == old {
					c.RecordGap = newStart.Seen.Sub(r.Seen)
				}
			}
		}
		row.Changes = append(row.Changes, c)
		i = k + 1
	}
	if n := len(kit.Starts(recs.All())); n != 1+b.opt.changes {
		return row, fmt.Errorf("%d children started for %d changes: a restart without a change", n, b.opt.changes)
	}
	return row, nil
}

// motoCost times, with the bare SDK, the calls a poll and the reload of
// one changed parameter make, as paramexec makes them, median of three: the
// share of a change's latency that is moto's. A poll asks for the versions
// of every name, ten a call, eight calls at a time; the reload reads the one
// changed name, decrypted.
func (b *bench) motoCost(ctx context.Context, params []kit.Param) (poll, reload time.Duration, err error) {
	names := make([]string, len(params))
	for i, p := range params {
		names[i] = p.Name
	}
	var polls, reloads []time.Duration
	for range 3 {
		t := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var firstErr error
		sem := make(chan struct{}, 8)
		for batch := range slices.Chunk(names, 10) {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				_, err := b.emu.SSM.GetParameters(ctx, &ssm.GetParametersInput{Names: batch, WithDecryption: aws.Bool(false)})
				mu.Lock()
				defer mu.Unlock()
				if firstErr == nil {
					firstErr = err
				}
			})
		}
		wg.Wait()
		if firstErr != nil {
			return 0, 0, firstErr
		}
		polls = append(polls, time.Since(t))
		t = time.Now()
		if _, err := b.emu.SSM.GetParameters(ctx, &ssm.GetParametersInput{Names: names[:1], WithDecryption: aws.Bool(true)}); err != nil {
			return 0, 0, err
		}
		reloads = append(reloads, time.Since(t))
	}
	return kit.Median(polls), kit.Median(reloads), nil
}

// noFailures refuses a poll that failed: nothing is injected here, so a
// failure is a fault of the run, and its calls would skew the count.
func noFailures(lines []kit.LogLine) error {
	for _, l := range lines {
		if strings.HasPrefix(l.Msg, "poll failed") || l.Level == "ERROR" {
			return fmt.Errorf("paramexec logged %q (code %q) with nothing injected", l.Msg, l.String("code"))
		}
	}
	return nil
}

func diffCounts(a, b faultproxy.Counts) PollSample {
	s := PollSample{
		Calls:        map[string]int{},
		Total:        b.Total - a.Total,
		Decrypting:   b.Decrypting - a.Decrypting,
		SecretValues: b.SecretValues - a.SecretValues,
	}
	for op, n := range b.ByOp {
		if d := n - a.ByOp[op]; d != 0 {
			s.Calls[op] = d
		}
	}
	return s
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func mkdir(dir string) error { return os.MkdirAll(dir, 0o700) }

func writePolls(w io.Writer, rows []PollRow, interval time.Duration) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "### API calls per poll when nothing changed (counted at the proxy; --interval %s --discover-every %d)\n\n", interval, discoverEvery)
	fmt.Fprintln(w, "| parameters | secrets | idle poll: calls (max over polls) | target ≤ ceil(P/10)+S | decrypting calls | GetSecretValue | discovery poll: calls | polls counted |")
	fmt.Fprintln(w, "|---:|---:|---|---:|---:|---:|---|---:|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %d | %d | %s | %d | %d | %d | %s | %d + %d |\n", r.Params, r.Secrets,
			callSummary(r.Idle), r.Budget(), sumOf(r.Idle, func(s PollSample) int { return s.Decrypting }),
			sumOf(r.Idle, func(s PollSample) int { return s.SecretValues }), callSummary(r.Discovery), len(r.Idle), len(r.Discovery))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "### Change latency and restart gap (testchild, which stops at once on SIGTERM)\n\n")
	fmt.Fprintln(w, "| parameters | secrets | changes | latency median / max ms | bound ms (interval + 10% + stop + 100) | within bound | moto's own poll + reload ms | latency less moto's share, median / max ms | within bound then | gap (supervisor) median / max ms (target < 20) | gap (child records) median ms |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		if len(r.Changes) == 0 {
			continue
		}
		var lat, net, bound, gap, rgap []time.Duration
		within, withinNet := 0, 0
		moto := r.MotoPoll + r.MotoReload
		for _, c := range r.Changes {
			lat, net, bound, gap, rgap = append(lat, c.Latency), append(net, c.Latency-moto), append(bound, c.Bound), append(gap, c.Gap), append(rgap, c.RecordGap)
			if c.Latency <= c.Bound {
				within++
			}
			if c.Latency-moto <= c.Bound {
				withinNet++
			}
		}
		motoCol, netCol, netWithin := "–", "–", "–"
		if moto > 0 {
			motoCol = kit.Ms(r.MotoPoll) + " + " + kit.Ms(r.MotoReload)
			netCol = kit.Ms(kit.Median(net)) + " / " + kit.Ms(kit.Max(net))
			netWithin = fmt.Sprintf("%d/%d", withinNet, len(r.Changes))
		}
		fmt.Fprintf(w, "| %d | %d | %d | %s / %s | %s | %d/%d | %s | %s | %s | %s / %s | %s |\n", r.Params, r.Secrets, len(r.Changes),
			kit.Ms(kit.Median(lat)), kit.Ms(kit.Max(lat)), kit.Ms(kit.Median(bound)), within, len(r.Changes),
			motoCol, netCol, netWithin, kit.Ms(kit.Median(gap)), kit.Ms(kit.Max(gap)), kit.Ms(kit.Median(rgap)))
	}
	fmt.Fprintln(w)
}

// callSummary describes the calls of a set of polls: the largest count of
// each operation over the polls, and the largest total.
func callSummary(samples []PollSample) string {
	if len(samples) == 0 {
		return "–"
	}
	most := map[string]int{}
	total := 0
	for _, s := range samples {
		for op, n := range s.Calls {
			most[op] = max(most[op], n)
		}
		total = max(total, s.Total)
	}
	var parts []string
	for _, op := range slices.Sorted(maps.Keys(most)) {
		parts = append(parts, fmt.Sprintf("%d %s", most[op], strings.TrimPrefix(strings.TrimPrefix(op, "ssm:"), "secretsmanager:")))
	}
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", "))
}

func sumOf(samples []PollSample, f func(PollSample) int) int {
	n := 0
	for _, s := range samples {
		n += f(s)
	}
	return n
}
