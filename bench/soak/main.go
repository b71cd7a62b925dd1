// Command soak runs paramexec supervisors for minutes against a proxy that
// throttles, fails, delays and drops requests at random while parameters
// and secrets change at random, then checks that every child holds the
// latest values, that no restart happened without a change, and that no
// value appears in any supervisor's log. It exits 1 if a check fails.
//
//	go run ./bench/soak -duration 10m
//
// It is not part of the normal test run (which only runs it for seconds);
// CI runs it on demand.
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
	"syscall"
	"time"

	"github.com/paramexec/paramexec/bench/internal/kit"
	"github.com/paramexec/paramexec/bench/internal/soak"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o := soak.DefaultOptions()
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.Duration, "duration", o.Duration, "how long faults and changes go on")
	fs.IntVar(&o.Supervisors, "supervisors", o.Supervisors, "supervisors")
	fs.IntVar(&o.Params, "params", o.Params, "parameters under the path (every fourth a SecureString)")
	fs.IntVar(&o.Secrets, "secrets", o.Secrets, "secrets, each watched with --secret")
	fs.DurationVar(&o.Interval, "interval", o.Interval, "the supervisors' --interval")
	fs.DurationVar(&o.ChangeEvery, "change-every", o.ChangeEvery, "mean time between changes")
	fs.DurationVar(&o.Settle, "settle", o.Settle, "deadline for every child to hold the latest values once faults stop")
	quick := fs.Bool("quick", false, "2 supervisors, 4 parameters, 1 secret, 1s interval (set -duration too)")
	motoURL := fs.String("moto", "", "use the moto_server at this URL instead of starting one")
	binDir := fs.String("bin", "", "directory with prebuilt paramexec, floor and testchild")
	work := fs.String("work", "", "directory for logs and child records")
	jsonOut := fs.String("json", "", "also write the result as JSON to this file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *quick {
		o.Quick()
	}
	if o.Interval < time.Second || o.Supervisors < 1 || o.Params < 1 || o.Duration <= 0 {
		fmt.Fprintln(stderr, "soak: need -interval ≥ 1s, -supervisors ≥ 1, -params ≥ 1 and a positive -duration")
		return 2
	}
	setup, err := kit.Prepare(ctx, *motoURL, *binDir, *work, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "soak:", err)
		return 1
	}
	o.Bin, o.Emu, o.Log, o.Dir = setup.Bin, setup.Emu, stderr, filepath.Join(setup.Work, "soak")
	fmt.Fprintf(stdout, "Machine: %s\n\n", kit.DescribeMachine())
	r, err := soak.Run(ctx, o)
	r.Write(stdout)
	if *jsonOut != "" {
		data, _ := json.MarshalIndent(r, "", "  ")
		err = errors.Join(err, os.WriteFile(*jsonOut, append(data, '\n'), 0o644))
	}
	err = errors.Join(err, setup.Close(err == nil))
	if err != nil {
		fmt.Fprintln(stderr, "soak:", err)
		return 1
	}
	return 0
}
