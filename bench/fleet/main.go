// Command fleet runs N paramexec supervisors against moto behind a proxy
// that enforces a token bucket, as an account's Parameter Store quota does.
//
//	go run ./bench/fleet -n 100,300,500 -interval 5s -tps 40
//
// It reports, per fleet size, the calls each instance makes when nothing
// stops it, the share of requests and polls throttled behind the bucket,
// the time for every child to get one change, and how many children each
// instance started (exactly 2: the first, and the one after the change).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/paramexec/paramexec/bench/internal/fleet"
	"github.com/paramexec/paramexec/bench/internal/kit"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fleet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sizes := fs.String("n", "100,300,500", "fleet sizes, comma-separated")
	interval := fs.Duration("interval", 5*time.Second, "each supervisor's --interval")
	tps := fs.Float64("tps", 40, "the proxy's token bucket, requests a second")
	params := fs.Int("params", 10, "parameters under the fleet's path")
	window := fs.Duration("window", 0, "each measurement window (default 10 intervals: one discovery poll per instance)")
	quick := fs.Bool("quick", false, "3 supervisors, 1s interval: checks that it works")
	motoURL := fs.String("moto", "", "use the moto_server at this URL instead of starting one")
	binDir := fs.String("bin", "", "directory with prebuilt paramexec, floor and testchild")
	work := fs.String("work", "", "directory for logs and child records")
	jsonOut := fs.String("json", "", "also write the results as JSON to this file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *quick {
		*sizes, *interval, *params, *window = "3", time.Second, 3, 2*time.Second
	}
	var ns []int
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(stderr, "fleet: -n: %q is not a fleet size\n", f)
			return 2
		}
		ns = append(ns, n)
	}
	if *interval < time.Second {
		fmt.Fprintln(stderr, "fleet: -interval: at least 1s, as paramexec requires")
		return 2
	}
	setup, err := kit.Prepare(ctx, *motoURL, *binDir, *work, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "fleet:", err)
		return 1
	}
	fmt.Fprintf(stdout, "Machine: %s\n\n", kit.DescribeMachine())
	var results []fleet.Result
	var errs []error
	for _, n := range ns {
		if err := setup.Emu.Reset(); err != nil {
			errs = append(errs, err)
			break
		}
		r, err := fleet.Run(ctx, fleet.Options{
			N: n, Interval: *interval, TPS: *tps, Params: *params, Window: *window,
			Bin: setup.Bin, Emu: setup.Emu, Dir: filepath.Join(setup.Work, fmt.Sprintf("fleet-%d", n)), Log: stderr,
		})
		results = append(results, r)
		if err != nil {
			errs = append(errs, fmt.Errorf("fleet of %d: %w", n, err))
			if ctx.Err() != nil {
				break
			}
		}
	}
	fleet.WriteTable(stdout, results)
	err = errors.Join(errs...)
	if *jsonOut != "" {
		data, _ := json.MarshalIndent(results, "", "  ")
		err = errors.Join(err, os.WriteFile(*jsonOut, append(data, '\n'), 0o644))
	}
	err = errors.Join(err, setup.Close(err == nil))
	if err != nil {
		fmt.Fprintln(stderr, "fleet:", err)
		return 1
	}
	return 0
}
