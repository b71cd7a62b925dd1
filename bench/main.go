// Command bench measures paramexec against the targets of issue 5: start-up
// against an SDK-only floor, size and memory, API calls per idle poll,
// change latency and restart gap, a fleet behind a throttling proxy, and
// requests lost per restart with and without --listen and --proxy (issue 12).
//
// It starts its own moto_server (or uses -moto URL), builds the binaries
// as a release is built (or uses those in -bin DIR), prints Markdown tables
// on stdout and progress on stderr:
//
//	go run ./bench -sizes 10,100,1000 -runs 15
//	go run ./bench -quick              # tiny sizes, seconds; what the test runs
//	go run ./bench -phases fleet -fleet 100,300,500
//	go run ./bench -phases rollback -rollback 25
//
// Nothing here asserts a speed: a run reports what it measured, and exits
// non-zero only when something did not work (a process failed, a child
// never started, a count is impossible).
package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/paramexec/paramexec/bench/internal/fleet"
	"github.com/paramexec/paramexec/bench/internal/kit"
	"github.com/paramexec/paramexec/bench/internal/rollback"
	"github.com/paramexec/paramexec/bench/internal/soak"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command line.
type options struct {
	sizes     []int
	runs      int
	quick     bool
	motoURL   string
	binDir    string
	workDir   string
	phases    map[string]bool
	jsonOut   string
	interval  time.Duration // polling phases
	steady    time.Duration
	steadyAt  []int
	changes   int
	idlePolls int
	secrets   []int

	fleet         []int
	fleetInterval time.Duration
	fleetTPS      float64
	fleetParams   int
	fleetWindow   time.Duration

	soak time.Duration

	rollback         []int
	rollbackInterval time.Duration
	rollbackBoot     time.Duration
	rollbackTimeout  time.Duration

	zdChanges int             // zerodowntime: changes per mode
	zdBoots   []time.Duration // zerodowntime: boot delays of the stop-first rows
}

var allPhases = []string{"startup", "size", "steady", "polls", "fleet", "soak", "rollback", "zerodowntime"}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sizes := fs.String("sizes", "10,100,1000", "parameter counts for start-up and polling, comma-separated")
	fs.IntVar(&o.runs, "runs", 15, "start-up runs of each program per size (medians are reported)")
	fs.BoolVar(&o.quick, "quick", false, "tiny sizes and short waits: checks that everything works, measures little")
	fs.StringVar(&o.motoURL, "moto", "", "use the moto_server at this URL instead of starting one (it is then never reset)")
	fs.StringVar(&o.binDir, "bin", "", "directory with prebuilt paramexec, floor and testchild (missing ones are built into it)")
	fs.StringVar(&o.workDir, "work", "", "directory for logs and child records (default: a new temporary directory, removed unless a phase failed)")
	phases := fs.String("phases", "startup,size,steady,polls,fleet,zerodowntime", "phases to run: "+strings.Join(allPhases, ","))
	fs.StringVar(&o.jsonOut, "json", "", "also write every figure as JSON to this file")
	fs.DurationVar(&o.interval, "interval", 2*time.Second, "paramexec --interval for the polling and latency phases")
	fs.DurationVar(&o.steady, "steady", time.Minute, "how long to sample the supervisor's RSS while it watches a path")
	steadyAt := fs.String("steady-sizes", "1000", "parameter counts the supervisor's steady RSS is sampled at")
	fs.IntVar(&o.changes, "changes", 7, "changes timed per polling configuration")
	fs.IntVar(&o.idlePolls, "polls", 6, "idle polls counted per configuration (with --discover-every 3, a third are discovery polls)")
	secrets := fs.String("secrets", "1,10", "secret counts for the polling phase (watched with no parameters beside them)")
	fleetNs := fs.String("fleet", "100,300,500", "fleet sizes (supervisors)")
	fs.DurationVar(&o.fleetInterval, "fleet-interval", 5*time.Second, "the fleet's --interval")
	fs.Float64Var(&o.fleetTPS, "fleet-tps", 40, "the proxy's token bucket, requests a second, as Parameter Store's default quota")
	fs.IntVar(&o.fleetParams, "fleet-params", 10, "parameters under the fleet's path")
	fs.DurationVar(&o.fleetWindow, "fleet-window", 0, "each fleet measurement window (default 10 intervals: one discovery poll per instance)")
	fs.DurationVar(&o.soak, "soak", 5*time.Minute, "soak duration when the soak phase is selected")
	rollbackNs := fs.String("rollback", "25", "rollback fleet sizes: supervisors per side, with and without --ready")
	fs.DurationVar(&o.rollbackInterval, "rollback-interval", 5*time.Second, "the rollback fleet's --interval")
	fs.DurationVar(&o.rollbackBoot, "rollback-boot", time.Second, "the rollback fleet's child boot time")
	fs.DurationVar(&o.rollbackTimeout, "rollback-ready-timeout", 10*time.Second, "the rollback fleet's --ready-timeout")
	fs.IntVar(&o.zdChanges, "zd-changes", 5, "zerodowntime: changes per restart mode")
	zdBoots := fs.String("zd-boots", "100ms,1s,5s", "zerodowntime: the child's boot delays for the stop-first rows")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		// Quick keeps every phase's shape and shrinks every size, so the
		// test exercises the code a real run does.
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("sizes", func() { *sizes = "3,12" })
		def("runs", func() { o.runs = 2 })
		def("interval", func() { o.interval = time.Second })
		def("steady", func() { o.steady = 3 * time.Second })
		def("steady-sizes", func() { *steadyAt = "12" })
		def("changes", func() { o.changes = 1 })
		def("polls", func() { o.idlePolls = 3 })
		def("secrets", func() { *secrets = "2" })
		def("fleet", func() { *fleetNs = "3" })
		def("fleet-interval", func() { o.fleetInterval = time.Second })
		def("fleet-params", func() { o.fleetParams = 3 })
		def("fleet-window", func() { o.fleetWindow = 2 * time.Second })
		def("soak", func() { o.soak = 5 * time.Second })
		def("rollback", func() { *rollbackNs = "2" })
		def("rollback-interval", func() { o.rollbackInterval = time.Second })
		def("rollback-boot", func() { o.rollbackBoot = 200 * time.Millisecond })
		def("rollback-ready-timeout", func() { o.rollbackTimeout = 5 * time.Second })
		def("zd-changes", func() { o.zdChanges = 1 })
		def("zd-boots", func() { *zdBoots = "100ms" })
	}
	var err error
	if o.sizes, err = intList(*sizes); err != nil {
		return o, fmt.Errorf("-sizes: %w", err)
	}
	if o.steadyAt, err = intList(*steadyAt); err != nil {
		return o, fmt.Errorf("-steady-sizes: %w", err)
	}
	if o.secrets, err = intList(*secrets); err != nil {
		return o, fmt.Errorf("-secrets: %w", err)
	}
	if o.fleet, err = intList(*fleetNs); err != nil {
		return o, fmt.Errorf("-fleet: %w", err)
	}
	if o.rollback, err = intList(*rollbackNs); err != nil {
		return o, fmt.Errorf("-rollback: %w", err)
	}
	for _, f := range strings.Split(*zdBoots, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil || d < 0 {
			return o, fmt.Errorf("-zd-boots: %q is not a duration", f)
		}
		o.zdBoots = append(o.zdBoots, d)
	}
	o.phases = map[string]bool{}
	for _, p := range strings.Split(*phases, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !contains(allPhases, p) {
			return o, fmt.Errorf("-phases: unknown phase %q", p)
		}
		o.phases[p] = true
	}
	switch {
	case o.runs < 1:
		return o, errors.New("-runs: at least 1")
	case o.interval < time.Second:
		return o, errors.New("-interval: at least 1s, as paramexec requires")
	case o.fleetInterval < time.Second || o.rollbackInterval < time.Second:
		return o, errors.New("-fleet-interval, -rollback-interval: at least 1s, as paramexec requires")
	case o.rollbackTimeout <= 0:
		return o, errors.New("-rollback-ready-timeout: more than 0")
	case o.zdChanges < 1:
		return o, errors.New("-zd-changes: at least 1")
	case o.idlePolls < 1 || o.changes < 1:
		return o, errors.New("-polls and -changes: at least 1")
	}
	return o, nil
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not a count", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// bench is what every phase works with.
type bench struct {
	opt  options
	bin  kit.Binaries
	emu  *kit.Emulator
	work string
	id   string    // keeps this run's names apart from others on a shared server
	log  io.Writer // progress
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "bench: "+format+"\n", args...)
}

// Results is every figure of a run, as written by -json.
type Results struct {
	Machine kit.Machine
	Commit  string
	// Paramexec is the SHA-256 of the binary measured, since a working tree
	// may hold changes the commit does not name.
	Paramexec string
	Command   string
	Started   time.Time
	Startup   []StartupRow      `json:",omitempty"`
	Size      *SizeResult       `json:",omitempty"`
	Steady    []SteadyResult    `json:",omitempty"`
	Polls     []PollRow         `json:",omitempty"`
	Fleet     []fleet.Result    `json:",omitempty"`
	Soak      *soak.Result      `json:",omitempty"`
	Rollback  []rollback.Result `json:",omitempty"`
	Zero      *ZeroResult       `json:",omitempty"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opt, err := parseOptions(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	res, err := measure(ctx, opt, stdout, stderr)
	if opt.jsonOut != "" && res != nil {
		if werr := writeJSON(opt.jsonOut, res); werr != nil {
			fmt.Fprintln(stderr, "bench:", werr)
			if err == nil {
				err = werr
			}
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	return 0
}

func measure(ctx context.Context, opt options, stdout, stderr io.Writer) (res *Results, err error) {
	setup, err := kit.Prepare(ctx, opt.motoURL, opt.binDir, opt.workDir, stderr)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := setup.Close(err == nil); cerr != nil && err == nil {
			err = cerr
		}
	}()
	b := &bench{opt: opt, log: stderr, id: kit.RunID(), bin: setup.Bin, emu: setup.Emu, work: setup.Work}

	res = &Results{
		Machine:   kit.DescribeMachine(),
		Commit:    commit(ctx),
		Paramexec: fileHash(b.bin.Paramexec),
		Command:   "go run ./bench " + strings.Join(os.Args[1:], " "),
		Started:   time.Now().UTC(),
	}
	fmt.Fprintf(stdout, "Machine: %s\nCommit: %s (paramexec binary sha256 %s)\nCommand: %s\n\n", res.Machine, res.Commit, res.Paramexec, res.Command)

	type phase struct {
		name string
		run  func(context.Context) error
	}
	phases := []phase{
		{"size", func(ctx context.Context) error {
			r, err := b.size()
			if err == nil {
				res.Size = &r
				r.write(stdout)
			}
			return err
		}},
		{"startup", func(ctx context.Context) error {
			r, err := b.startup(ctx)
			res.Startup = r
			writeStartup(stdout, r)
			return err
		}},
		{"steady", func(ctx context.Context) error {
			for _, n := range b.opt.steadyAt {
				r, err := b.steadyRSS(ctx, n)
				if err != nil {
					return err
				}
				res.Steady = append(res.Steady, r)
				r.write(stdout)
			}
			return nil
		}},
		{"polls", func(ctx context.Context) error {
			r, err := b.polls(ctx)
			res.Polls = r
			writePolls(stdout, r, b.opt.interval)
			return err
		}},
		{"fleet", func(ctx context.Context) error {
			r, err := b.fleet(ctx)
			res.Fleet = r
			fleet.WriteTable(stdout, r)
			return err
		}},
		{"rollback", func(ctx context.Context) error {
			r, err := b.rollback(ctx)
			res.Rollback = r
			rollback.WriteTable(stdout, r)
			return err
		}},
		{"zerodowntime", func(ctx context.Context) error {
			r, err := b.zeroDowntime(ctx)
			if r != nil {
				res.Zero = r
				r.write(stdout)
			}
			return err
		}},
		{"soak", func(ctx context.Context) error {
			r, err := b.soakRun(ctx)
			if r != nil {
				res.Soak = r
				r.Write(stdout)
			}
			return err
		}},
	}
	var errs []error
	for _, p := range phases {
		if !opt.phases[p.name] {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		b.logf("phase %s", p.name)
		if err := p.run(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.name, err))
		}
	}
	return res, errors.Join(errs...)
}

func (b *bench) fleet(ctx context.Context) ([]fleet.Result, error) {
	var out []fleet.Result
	for _, n := range b.opt.fleet {
		if err := b.emu.Reset(); err != nil {
			return out, err
		}
		r, err := fleet.Run(ctx, fleet.Options{
			N:        n,
			Interval: b.opt.fleetInterval,
			TPS:      b.opt.fleetTPS,
			Params:   b.opt.fleetParams,
			Window:   b.opt.fleetWindow,
			Bin:      b.bin,
			Emu:      b.emu,
			Dir:      filepath.Join(b.work, fmt.Sprintf("fleet-%d", n)),
			Log:      b.log,
		})
		out = append(out, r)
		if err != nil {
			return out, fmt.Errorf("fleet of %d: %w", n, err)
		}
	}
	return out, nil
}

func (b *bench) rollback(ctx context.Context) ([]rollback.Result, error) {
	var out []rollback.Result
	for _, n := range b.opt.rollback {
		r, err := rollback.Run(ctx, rollback.Options{
			N:            n,
			Interval:     b.opt.rollbackInterval,
			Boot:         b.opt.rollbackBoot,
			ReadyTimeout: b.opt.rollbackTimeout,
			Grace:        2 * time.Second,
			Bin:          b.bin,
			Emu:          b.emu,
			Dir:          filepath.Join(b.work, fmt.Sprintf("rollback-%d", n)),
			Log:          b.log,
		})
		out = append(out, r)
		if err != nil {
			return out, fmt.Errorf("rollback fleet of %d: %w", n, err)
		}
	}
	return out, nil
}

func (b *bench) soakRun(ctx context.Context) (*soak.Result, error) {
	if err := b.emu.Reset(); err != nil {
		return nil, err
	}
	o := soak.DefaultOptions()
	o.Duration = b.opt.soak
	o.Bin, o.Emu, o.Log = b.bin, b.emu, b.log
	o.Dir = filepath.Join(b.work, "soak")
	if b.opt.quick {
		o.Quick()
	}
	r, err := soak.Run(ctx, o)
	return &r, err
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// fileHash is the first 12 hex digits of a file's SHA-256.
func fileHash(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return fmt.Sprintf("%x", sha256.Sum256(data))[:12]
}

// commit names the checkout measured, with "+dirty" when it has changes.
func commit(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty=+dirty").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
