package main

import (
	"context"
	"debug/elf"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/paramexec/paramexec/bench/internal/kit"
	"github.com/paramexec/paramexec/internal/faultproxy"
)

// StartupRow is the start-up of both programs at one size.
type StartupRow struct {
	Params int
	// Wall times of whole-process runs: fork, exec, SDK set-up, every
	// page of GetParametersByPath, exec of /bin/true, exit.
	Floor, Paramexec []time.Duration
	// Peak RSS in KiB: wait4's ru_maxrss, which Linux carries across exec,
	// so it is the program's own peak, not /bin/true's. Read in the runner
	// (see bench/internal/runner), it cannot go below RunnerHWM.
	FloorRSS, ParamexecRSS []int
	RunnerHWM              int
	// The calls each made in a warm-up run through the proxy: the floor is
	// only a floor if they match.
	FloorCalls, ParamexecCalls map[string]int
}

// Ratio is median(paramexec) / median(floor).
func (r StartupRow) Ratio() float64 {
	return float64(kit.Median(r.Paramexec)) / float64(kit.Median(r.Floor))
}

// PairedRatio is the median over runs of paramexec/floor for each adjacent
// pair, which cancels drift that the medians alone would not.
func (r StartupRow) PairedRatio() float64 {
	var ratios []float64
	for i := range min(len(r.Floor), len(r.Paramexec)) {
		ratios = append(ratios, float64(r.Paramexec[i])/float64(r.Floor[i]))
	}
	return kit.Median(ratios)
}

func (b *bench) startup(ctx context.Context) ([]StartupRow, error) {
	var rows []StartupRow
	for _, n := range b.opt.sizes {
		if err := b.emu.Reset(); err != nil {
			return rows, err
		}
		path := fmt.Sprintf("/bench/%s/start%d", b.id, n)
		if _, err := b.emu.SeedPath(ctx, path, n); err != nil {
			return rows, err
		}
		b.logf("start-up: %d parameters, %d runs of each program, interleaved", n, b.opt.runs)
		row, err := b.startupAt(ctx, path, n)
		rows = append(rows, row)
		if err != nil {
			return rows, err
		}
	}
	return rows, nil
}

func (b *bench) startupAt(ctx context.Context, path string, n int) (StartupRow, error) {
	row := StartupRow{Params: n}
	floorArgs := []string{path, "/bin/true"}
	paramexecArgs := []string{"--path", path, "--", "/bin/true"}

	// One warm-up run of each, through the proxy: it fills the page cache
	// and moto's own caches, and counts the calls of both.
	px, err := faultproxy.Start(b.emu.URL)
	if err != nil {
		return row, err
	}
	defer px.Close()
	runner, err := kit.StartRunner(b.bin.Runner)
	if err != nil {
		return row, err
	}
	defer runner.Close()
	floorArgv := append([]string{b.bin.Floor}, floorArgs...)
	paramexecArgv := append([]string{b.bin.Paramexec}, paramexecArgs...)
	env := kit.ChildEnv(px.URL())
	if _, err := runner.Run(floorArgv, env); err != nil {
		return row, err
	}
	row.FloorCalls = px.Counts().ByOp
	px.ResetCounts()
	if _, err := runner.Run(paramexecArgv, env); err != nil {
		return row, err
	}
	row.ParamexecCalls = px.Counts().ByOp
	if !maps.Equal(row.FloorCalls, row.ParamexecCalls) {
		return row, fmt.Errorf("the floor made %v but paramexec %v: the floor no longer makes paramexec's calls", row.FloorCalls, row.ParamexecCalls)
	}

	// The timed runs go straight to moto: the proxy would only add its own
	// hop to both. Floor and paramexec alternate so that drift on a shared
	// box (another process waking, frequency changes) hits both alike.
	env = kit.ChildEnv(b.emu.URL)
	for range b.opt.runs {
		if err := ctx.Err(); err != nil {
			return row, err
		}
		f, err := runner.Run(floorArgv, env)
		if err != nil {
			return row, err
		}
		row.Floor, row.FloorRSS = append(row.Floor, f.Wall), append(row.FloorRSS, f.MaxRSS)
		p, err := runner.Run(paramexecArgv, env)
		if err != nil {
			return row, err
		}
		row.Paramexec, row.ParamexecRSS = append(row.Paramexec, p.Wall), append(row.ParamexecRSS, p.MaxRSS)
		row.RunnerHWM = max(row.RunnerHWM, f.RunnerHWM, p.RunnerHWM)
	}
	return row, nil
}

func writeStartup(w io.Writer, rows []StartupRow) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "### Start-up: paramexec --path P -- /bin/true vs the SDK floor (medians of %d interleaved runs)\n\n", len(rows[0].Floor))
	fmt.Fprintln(w, "| parameters | floor ms | paramexec ms | ratio (target ≤ 1.10) | paired ratio | paramexec peak RSS MiB (median / max) | floor peak RSS MiB | runner's own peak MiB | calls each |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, r := range rows {
		if len(r.Floor) == 0 {
			continue
		}
		fmt.Fprintf(w, "| %d | %s | %s | %.3f | %.3f | %s / %s | %s | %s | %s |\n", r.Params,
			kit.Ms(kit.Median(r.Floor)), kit.Ms(kit.Median(r.Paramexec)), r.Ratio(), r.PairedRatio(),
			kit.MiB(kit.Median(r.ParamexecRSS)), kit.MiB(kit.Max(r.ParamexecRSS)), kit.MiB(kit.Median(r.FloorRSS)),
			kit.MiB(r.RunnerHWM), formatCalls(r.ParamexecCalls))
	}
	fmt.Fprintln(w)
}

func formatCalls(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// SizeResult is the size of the release binary.
type SizeResult struct {
	ParamexecBytes, FloorBytes int64
	Static                     bool // no ELF interpreter: runs in a scratch image
}

func (b *bench) size() (SizeResult, error) {
	var r SizeResult
	for bin, dst := range map[string]*int64{b.bin.Paramexec: &r.ParamexecBytes, b.bin.Floor: &r.FloorBytes} {
		fi, err := os.Stat(bin)
		if err != nil {
			return r, err
		}
		*dst = fi.Size()
	}
	f, err := elf.Open(b.bin.Paramexec)
	if err != nil {
		return r, err
	}
	defer f.Close()
	r.Static = true
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			r.Static = false
		}
	}
	return r, nil
}

func (r SizeResult) write(w io.Writer) {
	fmt.Fprintf(w, "### Binary (CGO_ENABLED=0 go build %s)\n\n", strings.Join(kit.BuildFlags, " "))
	fmt.Fprintln(w, "| binary | size MiB (target ≤ 10.5) | static |")
	fmt.Fprintln(w, "|---|---:|---|")
	fmt.Fprintf(w, "| paramexec | %.2f | %v |\n", float64(r.ParamexecBytes)/(1<<20), r.Static)
	fmt.Fprintf(w, "| floor (SSM client only) | %.2f | |\n\n", float64(r.FloorBytes)/(1<<20))
}
