// Package rollback publishes a bad value to a fleet of paramexec supervisors,
// half with --ready and half without, and counts who survives it and how fast.
package rollback

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
	"strconv"
	"sync"
	"time"

	"github.com/paramexec/paramexec/bench/internal/kit"
)

// Options describe one run.
type Options struct {
	N            int           // supervisors per side (with and without --ready)
	Interval     time.Duration // their --interval
	Boot         time.Duration // the child's own boot time before it listens
	ReadyTimeout time.Duration // --ready-timeout
	Grace        time.Duration // --grace
	// StartRate is supervisors started a second (0: 20), so that the
	// benchmark does not measure a fork storm.
	StartRate float64

	Bin kit.Binaries
	Emu *kit.Emulator
	Dir string    // logs; created
	Log io.Writer // progress
}

// Result is what the fleet did with one bad value and one good one after it.
type Result struct {
	N            int
	Interval     time.Duration
	Boot         time.Duration
	ReadyTimeout time.Duration
	Grace        time.Duration

	// With --ready.
	ReadyExited  int             // supervisors that exited after the bad value (the target is 0)
	RolledBack   int             // supervisors whose log says "rollback finished"
	BackOnGood   int             // children answering with the good value afterwards
	BackIn       []time.Duration // the put of the bad value → each supervisor's "rollback finished"
	BackInMedian time.Duration
	BackInMax    time.Duration
	// Overhead of a good change: "restart finished" took= (the change seen →
	// the new child ready) minus Boot, the child's own part.
	Overhead       []time.Duration
	OverheadMedian time.Duration
	OverheadMax    time.Duration
	Bound          time.Duration // interval + ready-timeout + grace, the bound for BackInMax

	// Without --ready.
	PlainExited int         // supervisors that exited after the bad value
	ExitCodes   map[int]int // by paramexec's exit code
}

// side is one supervisor and its child's port.
type side struct {
	cmd  *exec.Cmd
	port string
	log  string
	done chan struct{}
	code int
}

// Run runs both halves of the fleet side by side and stops them.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.StartRate <= 0 {
		o.StartRate = 20
	}
	r := Result{N: o.N, Interval: o.Interval, Boot: o.Boot, ReadyTimeout: o.ReadyTimeout, Grace: o.Grace,
		Bound: o.Interval + o.ReadyTimeout + o.Grace, ExitCodes: map[int]int{}}
	logf := func(format string, args ...any) {
		fmt.Fprintf(o.Log, "rollback %d: "+format+"\n", append([]any{o.N}, args...)...)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return r, err
	}
	name := "/rollback/" + kit.RunID() + "/DB_URL"
	good, bad, better := kit.NewValue(), kit.NewValue(), kit.NewValue()
	if err := o.Emu.PutParameter(ctx, name, good, false); err != nil {
		return r, err
	}
	path := filepath.Dir(name)

	var all []*side
	defer func() { stopAll(all) }()
	start := func(i int, ready bool) (*side, error) {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s := &side{port: port, log: filepath.Join(o.Dir, fmt.Sprintf("sup-%v-%03d.log", ready, i)), done: make(chan struct{})}
		flags := []string{"--path", path, "--interval", o.Interval.String(), "--grace", o.Grace.String(),
			"--log-format", "json", "--startup-timeout", "5m"}
		if ready {
			flags = append(flags, "--ready", "http://127.0.0.1:"+port+"/up", "--ready-timeout", o.ReadyTimeout.String())
		}
		cmd := exec.Command(o.Bin.Paramexec, append(flags, "--", o.Bin.Testserver)...)
		cmd.Env = append(kit.ChildEnv(o.Emu.URL), "PORT="+port, "TESTSERVER_VALUE_ENV=DB_URL",
			"TESTSERVER_BOOT_DELAY="+o.Boot.String(), "TESTSERVER_CRASH_IF=DB_URL="+bad, "TESTSERVER_CRASH_CODE=3")
		cmd.SysProcAttr = kit.Managed()
		f, err := os.OpenFile(s.log, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return nil, err
		}
		cmd.Stderr = f
		err = cmd.Start()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("start paramexec: %w", err)
		}
		s.cmd = cmd
		go func() {
			cmd.Wait()
			s.code = cmd.ProcessState.ExitCode()
			close(s.done)
		}()
		return s, nil
	}
	logf("starting %d supervisors with --ready and %d without (--interval %s, boot %s)", o.N, o.N, o.Interval, o.Boot)
	var withReady, plain []*side
	pace := time.NewTicker(time.Duration(float64(time.Second) / o.StartRate))
	defer pace.Stop()
	for i := range o.N {
		for _, ready := range []bool{true, false} {
			s, err := start(i, ready)
			if err != nil {
				return r, err
			}
			all = append(all, s)
			if ready {
				withReady = append(withReady, s)
			} else {
				plain = append(plain, s)
			}
			select {
			case <-pace.C:
			case <-ctx.Done():
				return r, ctx.Err()
			}
		}
	}
	if err := waitFor(ctx, 5*time.Minute, func() bool { return serving(all, good) == len(all) }); err != nil {
		return r, fmt.Errorf("%d of %d children serving the first value: %w", serving(all, good), len(all), err)
	}
	// Let the first polls spread out over [Interval/2, 3*Interval/2).
	if err := kit.Sleep(ctx, o.Interval*3/2); err != nil {
		return r, err
	}

	logf("publishing the bad value")
	put := time.Now()
	if err := o.Emu.PutParameter(ctx, name, bad, false); err != nil {
		return r, err
	}
	settled := func() bool {
		for _, s := range plain {
			if !exited(s) {
				return false
			}
		}
		for _, s := range withReady {
			if !exited(s) && count(s.log, "rollback finished") == 0 {
				return false
			}
		}
		return true
	}
	// A generous bound, no target: a supervisor that never rolls back is a finding.
	if err := waitFor(ctx, 3*r.Bound+time.Minute, settled); err != nil {
		logf("not every supervisor settled: %v", err)
	}
	for _, s := range withReady {
		if exited(s) {
			r.ReadyExited++
			continue
		}
		if t, ok := first(s.log, "rollback finished"); ok {
			r.RolledBack++
			r.BackIn = append(r.BackIn, t.Sub(put))
		}
	}
	r.BackOnGood = serving(withReady, good)
	for _, s := range plain {
		if exited(s) {
			r.PlainExited++
			r.ExitCodes[s.code]++
		}
	}
	r.BackInMedian, r.BackInMax = kit.Median(r.BackIn), kit.Max(r.BackIn)
	logf("with --ready: %d exited, %d rolled back (max %s); without: %d exited", r.ReadyExited, r.RolledBack, r.BackInMax.Round(time.Millisecond), r.PlainExited)

	// A further, good change: the overhead of a verified restart.
	logf("publishing a good value")
	if err := o.Emu.PutParameter(ctx, name, better, false); err != nil {
		return r, err
	}
	live := 0
	for _, s := range withReady {
		if !exited(s) {
			live++
		}
	}
	restarted := func() bool {
		n := 0
		for _, s := range withReady {
			if !exited(s) && count(s.log, "restart finished") > 0 {
				n++
			}
		}
		return n == live
	}
	if err := waitFor(ctx, 3*r.Bound+time.Minute, restarted); err != nil {
		logf("not every supervisor restarted onto the good value: %v", err)
	}
	for _, s := range withReady {
		if took, ok := tookOf(s.log); ok {
			r.Overhead = append(r.Overhead, took-o.Boot)
		}
	}
	r.OverheadMedian, r.OverheadMax = kit.Median(r.Overhead), kit.Max(r.Overhead)
	if serving(withReady, better) != live {
		return r, fmt.Errorf("%d of %d children serve the good value after the restart", serving(withReady, better), live)
	}
	return r, nil
}

// WriteTable prints results as Markdown.
func WriteTable(w io.Writer, rs []Result) {
	if len(rs) == 0 {
		return
	}
	fmt.Fprintln(w, "### A bad value published to a fleet (rollback)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| supervisors per side | interval | child boot | with --ready: exited | rolled back | back on the good value | put → rolled back, median / max (ms) | bound: interval + ready-timeout + grace | without --ready: exited | overhead of a verified restart, median / max (ms) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		fmt.Fprintf(w, "| %d | %s | %s | %d | %d | %d | %s / %s | %s | %d (codes %v) | %s / %s |\n",
			r.N, r.Interval, r.Boot, r.ReadyExited, r.RolledBack, r.BackOnGood,
			kit.Ms(r.BackInMedian), kit.Ms(r.BackInMax), r.Bound, r.PlainExited, r.ExitCodes,
			kit.Ms(r.OverheadMedian), kit.Ms(r.OverheadMax))
	}
	fmt.Fprintln(w)
}

func exited(s *side) bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// serving counts the children that answer with value.
func serving(sides []*side, value string) int {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	n := 0
	for _, s := range sides {
		resp, err := c.Get("http://127.0.0.1:" + s.port + "/")
		if err != nil {
			continue
		}
		var got struct {
			Value string `json:"value"`
		}
		if json.NewDecoder(resp.Body).Decode(&got) == nil && got.Value == value {
			n++
		}
		resp.Body.Close()
	}
	return n
}

func count(log, msg string) int {
	lines, _ := kit.ReadLogFile(log)
	return kit.Count(lines, msg)
}

// first is the time of the first line with msg.
func first(log, msg string) (time.Time, bool) {
	lines, _ := kit.ReadLogFile(log)
	for _, l := range lines {
		if l.Msg == msg {
			return l.Time, true
		}
	}
	return time.Time{}, false
}

// tookOf reads took= of the first "restart finished".
func tookOf(log string) (time.Duration, bool) {
	lines, _ := kit.ReadLogFile(log)
	for _, l := range lines {
		if l.Msg == "restart finished" {
			return l.Duration("took")
		}
	}
	return 0, false
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), nil
}

func waitFor(ctx context.Context, limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", limit)
		}
		if err := kit.Sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// stopAll stops every supervisor that still runs, in parallel.
func stopAll(sides []*side) error {
	var wg sync.WaitGroup
	errs := make([]error, len(sides))
	for i, s := range sides {
		if exited(s) {
			continue
		}
		wg.Go(func() {
			s.cmd.Process.Signal(os.Interrupt)
			select {
			case <-s.done:
			case <-time.After(30 * time.Second):
				s.cmd.Process.Kill()
				<-s.done
				errs[i] = fmt.Errorf("pid %d still running 30s after SIGINT: killed", s.cmd.Process.Pid)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
