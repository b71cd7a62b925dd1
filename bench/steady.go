package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/paramexec/paramexec/bench/internal/kit"
)

// SteadyResult is the supervisor's memory while it watches a path.
type SteadyResult struct {
	Params   int
	Interval time.Duration
	Duration time.Duration
	RSS      []int // VmRSS of the paramexec process (not its child), KiB, one per sample
	HWM      int   // VmHWM at the end: the peak since paramexec started, start-up included
	// RssAnon and RssFile at the end: the Go heap and runtime, and the
	// binary's own pages (clean, shared page cache).
	Anon, File int
	CPU        time.Duration
	Polls      int
}

func (b *bench) steadyRSS(ctx context.Context, n int) (SteadyResult, error) {
	r := SteadyResult{Params: n, Interval: b.opt.interval, Duration: b.opt.steady}
	if err := b.emu.Reset(); err != nil {
		return r, err
	}
	path := fmt.Sprintf("/bench/%s/steady%d", b.id, n)
	if _, err := b.emu.SeedPath(ctx, path, n); err != nil {
		return r, err
	}
	b.logf("steady RSS: watching %d parameters every %s for %s", n, b.opt.interval, b.opt.steady)
	dir := filepath.Join(b.work, fmt.Sprintf("steady-%d", n))
	if err := mkdir(dir); err != nil {
		return r, err
	}
	recs, err := kit.WatchRecords(filepath.Join(dir, "records.jsonl"))
	if err != nil {
		return r, err
	}
	defer recs.Close()
	sup, err := kit.StartSupervisor(kit.SupervisorSpec{
		Bin:      b.bin,
		Flags:    []string{"--path", path, "--interval", b.opt.interval.String(), "--log-format", "json", "--log-level", "debug"},
		Endpoint: b.emu.URL,
		Record:   filepath.Join(dir, "records.jsonl"),
	})
	if err != nil {
		return r, err
	}
	defer sup.Stop(10 * time.Second)
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	_, err = recs.Wait(wctx, func(rs []kit.Record) bool { return len(kit.Starts(rs)) > 0 })
	cancel()
	if err != nil {
		return r, err
	}
	pid := sup.Pid()
	cpu0, err := kit.CPUTime(pid)
	if err != nil {
		return r, err
	}
	every := time.Second
	if b.opt.quick {
		every = 250 * time.Millisecond
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	end := time.After(b.opt.steady)
sample:
	for {
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-end:
			break sample
		case <-tick.C:
			rss, err := kit.RSS(pid)
			if err != nil {
				return r, fmt.Errorf("paramexec exited while watching: %w", err)
			}
			r.RSS = append(r.RSS, rss)
		}
	}
	cpu1, err := kit.CPUTime(pid)
	if err != nil {
		return r, err
	}
	r.CPU = cpu1 - cpu0
	if r.HWM, err = kit.HWM(pid); err != nil {
		return r, err
	}
	r.Anon, _ = kit.StatusKiB(pid, "RssAnon:")
	r.File, _ = kit.StatusKiB(pid, "RssFile:")
	r.Polls = kit.Count(sup.Log.Lines(), "poll: no change")
	if starts := len(kit.Starts(recs.All())); starts != 1 {
		return r, fmt.Errorf("the child started %d times while nothing changed", starts)
	}
	return r, nil
}

func (r SteadyResult) write(w io.Writer) {
	fmt.Fprintf(w, "### Supervisor memory: watching %d parameters every %s for %s (%d samples, %d polls)\n\n", r.Params, r.Interval, r.Duration, len(r.RSS), r.Polls)
	fmt.Fprintln(w, "| VmRSS median MiB | VmRSS max MiB (target ≤ 15) | VmHWM MiB (start-up included) | at the end: RssAnon (heap, runtime) + RssFile (binary pages) MiB | CPU used |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|")
	fmt.Fprintf(w, "| %s | %s | %s | %s + %s | %s (%.2f%% of one core) |\n\n", kit.MiB(kit.Median(r.RSS)), kit.MiB(kit.Max(r.RSS)), kit.MiB(r.HWM),
		kit.MiB(r.Anon), kit.MiB(r.File), r.CPU, 100*r.CPU.Seconds()/r.Duration.Seconds())
}
