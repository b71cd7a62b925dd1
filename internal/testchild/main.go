// Command testchild is the child program of paramexec's process-level tests: it
// records its start, environment, signals and exit as JSON lines in a file.
//
// Usage: testchild -record FILE [flags]. Each record is one line written
// with a single write(2) to a file opened O_APPEND, so several children may
// share one file:
//
//	{"event":"start","pid":N,"ppid":N,"pgid":N,"args":[...],"env":{...}}   once signal handlers are installed
//	{"event":"signal","pid":N,"signal":"SIGUSR1"}                          for every signal received
//	{"event":"spawned","pid":N,"kind":"spawn"|"daemons"|"orphans","children":[...]}  for -spawn / -daemons / -orphans
//	{"event":"exit","pid":N,"code":N}                                      right before a normal exit
//
// Every catchable signal is recorded except SIGCHLD, SIGURG (the Go
// runtime's preemption signal), SIGPIPE and the glibc-reserved 32 and 33.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/paramexec/paramexec/internal/testchild/childrec"
)

// Hidden first arguments select the helper roles the child starts of itself.
const (
	roleSleeper = "__sleeper" // -spawn: ignores polite signals, runs until SIGKILL
	roleMiddle  = "__middle"  // -orphans: starts the orphans and exits at once
	roleOrphan  = "__orphan"  // -orphans: sleeps briefly and exits
)

// sleeperLifetime caps how long a -spawn sleeper lives, so a test that
// fails before killing its process group does not leak them forever.
const sleeperLifetime = 5 * time.Minute

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case roleSleeper:
			os.Exit(sleeper())
		case roleMiddle:
			os.Exit(middle(os.Args[2:]))
		case roleOrphan:
			time.Sleep(time.Duration(50+rand.IntN(151)) * time.Millisecond)
			os.Exit(0)
		}
	}
	os.Exit(run(os.Args[1:]))
}

type options struct {
	record     string
	exit       int
	runFor     time.Duration
	termExit   int
	stopDelay  time.Duration
	ignoreTerm bool
	die        string
	stopOn     string
	daemons    int
	spawn      int
	orphans    int
	print      string
}

func parse(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("testchild", flag.ContinueOnError)
	fs.StringVar(&o.record, "record", "", "append JSON-line records to `FILE` (required)")
	fs.IntVar(&o.exit, "exit", -1, "exit with code `N` right after starting (-1: do not)")
	fs.DurationVar(&o.runFor, "run", 0, "exit 0 after `D` (0: run until a terminating signal)")
	fs.IntVar(&o.termExit, "term-exit", 0, "exit code after SIGTERM/SIGINT")
	fs.DurationVar(&o.stopDelay, "stop-delay", 0, "wait `D` between SIGTERM/SIGINT and exiting")
	fs.BoolVar(&o.ignoreTerm, "ignore-term", false, "record SIGTERM/SIGINT but keep running")
	fs.StringVar(&o.stopOn, "stop-on", "", "treat signal `SIG` as SIGTERM is treated (exit after -stop-delay)")
	fs.IntVar(&o.daemons, "daemons", 0, "start `N` sleepers in sessions of their own (setsid), as daemonising scripts do")
	fs.StringVar(&o.die, "die", "", "after starting, die by signal `SIG` (KILL, TERM, 15, ...) with its default action")
	fs.IntVar(&o.spawn, "spawn", 0, "start `N` sleepers in this process group that ignore SIGTERM and run until SIGKILL")
	fs.IntVar(&o.orphans, "orphans", 0, "leave `N` short-lived orphans to be reaped by a subreaper or PID 1")
	fs.StringVar(&o.print, "print", "", "write `TEXT` and a newline to stdout after starting")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.record == "" {
		return o, errors.New("-record is required")
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return o, nil
}

func run(args []string) int {
	o, err := parse(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testchild:", err)
		return 2
	}
	var stopSig syscall.Signal
	if o.stopOn != "" {
		if stopSig, err = parseSignal(o.stopOn); err != nil {
			fmt.Fprintln(os.Stderr, "testchild:", err)
			return 2
		}
	}
	var dieSig syscall.Signal
	if o.die != "" {
		if dieSig, err = parseSignal(o.die); err != nil {
			fmt.Fprintln(os.Stderr, "testchild:", err)
			return 2
		}
	}
	rec, err := openRecorder(o.record)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testchild:", err)
		return 2
	}

	sigc := make(chan os.Signal, 64)
	signal.Notify(sigc, catchable()...)
	// Only now may a test send signals: the start record is its cue.
	rec.must(record{Event: "start", Ppid: os.Getppid(), Pgid: syscall.Getpgrp(), Args: os.Args, Env: environ()})

	if o.print != "" {
		fmt.Println(o.print)
	}
	if o.spawn > 0 {
		pids, err := spawnSleepers(o.spawn)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testchild: spawn:", err)
			return 3
		}
		rec.must(record{Event: "spawned", Kind: "spawn", Children: pids})
	}
	if o.daemons > 0 {
		pids, err := spawnDaemons(o.daemons)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testchild: daemons:", err)
			return 3
		}
		rec.must(record{Event: "spawned", Kind: "daemons", Children: pids})
	}
	if o.orphans > 0 {
		pids, err := makeOrphans(o.orphans)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testchild: orphans:", err)
			return 3
		}
		rec.must(record{Event: "spawned", Kind: "orphans", Children: pids})
	}
	if o.die != "" {
		return die(dieSig)
	}
	if o.exit >= 0 {
		rec.exit(o.exit)
		return o.exit
	}

	var runC, stopC <-chan time.Time
	if o.runFor > 0 {
		runC = time.After(o.runFor)
	}
	for {
		select {
		case s := <-sigc:
			sig := s.(syscall.Signal)
			rec.must(record{Event: "signal", Signal: signalName(sig)})
			polite := (sig == syscall.SIGTERM || sig == syscall.SIGINT) && !o.ignoreTerm
			if (polite || sig == stopSig) && stopC == nil {
				stopC = time.After(o.stopDelay)
			}
		case <-stopC:
			rec.exit(o.termExit)
			return o.termExit
		case <-runC:
			rec.exit(0)
			return 0
		}
	}
}

// catchable lists every signal a process can catch, minus those the brief
// leaves alone: SIGCHLD (children come and go), SIGURG (the Go runtime
// preempts goroutines with it), SIGPIPE, and 32/33 which glibc reserves.
func catchable() []os.Signal {
	var sigs []os.Signal
	for s := syscall.Signal(1); s <= 64; s++ {
		switch s {
		case syscall.SIGKILL, syscall.SIGSTOP, syscall.SIGCHLD, syscall.SIGURG, syscall.SIGPIPE, 32, 33:
			continue
		}
		sigs = append(sigs, s)
	}
	return sigs
}

const sigRTMin = 34

func signalName(s syscall.Signal) string {
	if n := unix.SignalName(s); n != "" {
		return n
	}
	if s >= sigRTMin {
		return fmt.Sprintf("SIGRTMIN+%d", int(s)-sigRTMin)
	}
	return fmt.Sprintf("SIG%d", int(s))
}

func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n <= 64 {
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}

// die kills the process with sig's default action, so the parent sees death
// by that signal. Resetting through signal.Reset is not enough: for SIGQUIT
// or SIGABRT the Go runtime's default is a traceback and exit(2).
func die(sig syscall.Signal) int {
	// Signals such as SIGQUIT dump core by default; tests want the death,
	// not a core file in their working directory.
	syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{})
	var dfl [4]uint64 // a zeroed struct sigaction is SIG_DFL with an empty mask
	syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&dfl)), 0, 8, 0, 0)
	syscall.Kill(os.Getpid(), sig)
	// Only reached when the default action does not terminate (SIGWINCH...).
	time.Sleep(5 * time.Second)
	fmt.Fprintf(os.Stderr, "testchild: still alive after %s\n", signalName(sig))
	return 125
}

func environ() map[string]string {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

// record is one JSON line, in the format the tests read.
type record = childrec.Record

type recorder struct {
	f   *os.File
	pid int
}

func openRecorder(path string) (*recorder, error) {
	// 0600: the environment may hold the very secrets under test.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open record file: %w", err)
	}
	return &recorder{f: f, pid: os.Getpid()}, nil
}

// write appends r with exactly one write(2): with O_APPEND that keeps lines
// from concurrent writers whole. os.File.Write might split a short write
// into several calls, so the syscall is made directly.
func (rc *recorder) write(r record) error {
	r.Pid = rc.pid
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	conn, err := rc.f.SyscallConn()
	if err != nil {
		return err
	}
	var n int
	var werr error
	err = conn.Write(func(fd uintptr) bool {
		for {
			n, werr = syscall.Write(int(fd), b)
			if werr != syscall.EINTR {
				return true
			}
		}
	})
	if err == nil {
		err = werr
	}
	if err == nil && n != len(b) {
		err = fmt.Errorf("short write: %d of %d bytes", n, len(b))
	}
	return err
}

// must writes r or exits: a test cannot make sense of a missing record.
func (rc *recorder) must(r record) {
	if err := rc.write(r); err != nil {
		fmt.Fprintf(os.Stderr, "testchild: record %s: %v\n", r.Event, err)
		os.Exit(4)
	}
}

func (rc *recorder) exit(code int) {
	rc.must(record{Event: "exit", Code: &code})
}

// start runs this binary in a helper role with a pipe on fd 3 and stdio on
// /dev/null, so that helpers outliving the child do not hold a test's
// output pipes open.
func start(role string, args ...string) (*exec.Cmd, *os.File, error) {
	return startIn(nil, role, args...)
}

func startIn(sys *syscall.SysProcAttr, role string, args ...string) (*exec.Cmd, *os.File, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(self, append([]string{role}, args...)...)
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = sys
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return nil, nil, err
	}
	return cmd, r, nil
}

// spawnSleepers starts n sleepers and returns once each has ignored
// SIGTERM, so a test may signal the group as soon as it sees their pids.
func spawnSleepers(n int) ([]int, error) {
	return startSleepers(n, nil)
}

// spawnDaemons starts n sleepers that leave this process's group and
// session, out of reach of a signal to the group.
func spawnDaemons(n int) ([]int, error) {
	return startSleepers(n, func() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} })
}

func startSleepers(n int, sys func() *syscall.SysProcAttr) ([]int, error) {
	var pids []int
	for range n {
		var attr *syscall.SysProcAttr
		if sys != nil {
			attr = sys()
		}
		cmd, ready, err := startIn(attr, roleSleeper)
		if err != nil {
			return pids, err
		}
		ready.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err = io.ReadFull(ready, make([]byte, 1))
		ready.Close()
		if err != nil {
			return pids, fmt.Errorf("sleeper %d not ready: %w", cmd.Process.Pid, err)
		}
		pids = append(pids, cmd.Process.Pid)
		// Never waited for: they are meant to outlive this process.
		cmd.Process.Release()
	}
	return pids, nil
}

func sleeper() int {
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGALRM)
	ready := os.NewFile(3, "ready")
	ready.Write([]byte{1})
	ready.Close()
	time.Sleep(sleeperLifetime)
	return 0
}

// makeOrphans starts a middle process that starts n short-lived processes
// and exits without waiting for them, leaving them to the nearest subreaper.
func makeOrphans(n int) ([]int, error) {
	cmd, out, err := start(roleMiddle, strconv.Itoa(n))
	if err != nil {
		return nil, err
	}
	data, rerr := io.ReadAll(out) // EOF once the middle has exited
	out.Close()
	werr := cmd.Wait()
	if rerr != nil {
		return nil, rerr
	}
	if werr != nil {
		return nil, fmt.Errorf("middle process: %w", werr)
	}
	var pids []int
	if err := json.Unmarshal(data, &pids); err != nil || len(pids) != n {
		return nil, fmt.Errorf("middle process reported %q", data)
	}
	return pids, nil
}

func middle(args []string) int {
	// fd 3 came without close-on-exec; the orphans must not inherit it, or
	// the child's read would wait for them to exit.
	syscall.CloseOnExec(3)
	out := os.NewFile(3, "pids")
	n, err := strconv.Atoi(strings.Join(args, ""))
	if err != nil {
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		return 3
	}
	pids := []int{}
	for range n {
		cmd := exec.Command(self, roleOrphan)
		if err := cmd.Start(); err != nil {
			return 3
		}
		pids = append(pids, cmd.Process.Pid)
		cmd.Process.Release()
	}
	if err := json.NewEncoder(out).Encode(pids); err != nil {
		return 3
	}
	return 0
}
