package ready

import (
	"context"
	"errors"
	"fmt"
	"os"
	osexec "os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/signals"
)

// helperEnv makes the test binary an exec check's command.
const helperEnv = "READY_TEST_HELPER"

func TestMain(m *testing.M) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		os.Exit(m.Run())
	}
	os.Exit(helper(mode))
}

// helper modes:
//
//	exists:FILE    exit 0 if FILE exists, 1 otherwise
//	sleep          sleep (until killed, at most 5 minutes)
//	family:FILE    start a sleeping child in this process group, write its pid to FILE, sleep
func helper(mode string) int {
	kind, arg, _ := strings.Cut(mode, ":")
	switch kind {
	case "exists":
		if _, err := os.Stat(arg); err != nil {
			return 1
		}
		return 0
	case "sleep":
		time.Sleep(5 * time.Minute)
		return 0
	case "family":
		cmd := osexec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), helperEnv+"=sleep")
		if err := cmd.Start(); err != nil {
			return 3
		}
		tmp := arg + ".tmp"
		if os.WriteFile(tmp, []byte(strconv.Itoa(cmd.Process.Pid)), 0o600) != nil || os.Rename(tmp, arg) != nil {
			return 4
		}
		time.Sleep(5 * time.Minute)
		return 0
	}
	return 99
}

// reaper plays the supervisor: signals.Reap on SIGCHLD (and a tick, since
// SIGCHLDs coalesce), every pid offered to Procs first. Pids Procs does
// not own are sent on orphans.
type reaper struct {
	orphans chan int
	stop    chan struct{}
	done    chan struct{}
}

func startReaper(t *testing.T, procs *Procs) *reaper {
	t.Helper()
	// The group leader's children come back to this process when it dies,
	// as they come back to paramexec.
	if err := signals.SetSubreaper(); err != nil {
		t.Fatal(err)
	}
	r := &reaper{orphans: make(chan int, 64), stop: make(chan struct{}), done: make(chan struct{})}
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs, syscall.SIGCHLD)
	go func() {
		defer close(r.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-r.stop:
				return
			case <-sigs:
			case <-tick.C:
			}
			signals.Reap(func(pid int, ws syscall.WaitStatus) {
				if !procs.Exited(pid, ws) {
					select {
					case r.orphans <- pid:
					default:
					}
				}
			})
		}
	}()
	t.Cleanup(func() {
		signal.Stop(sigs)
		close(r.stop)
		<-r.done
	})
	return r
}

func execCheck(t *testing.T) Check {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return mustParse(t, "exec:"+self+" -test.run=^$")
}

func helperOpts(procs *Procs, mode string) Options {
	return Options{Procs: procs, Env: append(os.Environ(), helperEnv+"="+mode)}
}

// runningDrains waits until every check process has been reported exited.
func runningDrains(t *testing.T, procs *Procs) {
	t.Helper()
	end := time.Now().Add(deadline)
	for procs.Running() != 0 {
		if time.Now().After(end) {
			t.Fatalf("%d check processes never reported exited", procs.Running())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestExec(t *testing.T) {
	procs := NewProcs()
	startReaper(t, procs)
	c := execCheck(t)
	file := filepath.Join(t.TempDir(), "ready")

	nr := notReady(t, waitFor(notYet, helperOpts(procs, "exists:"+file), c), c.String())
	if nr.Err.Error() != "exit status 1" || nr.Tries < 2 {
		t.Errorf("reason %v after %d tries, want exit status 1, retried", nr.Err, nr.Tries)
	}
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(deadline, helperOpts(procs, "exists:"+file), c); err != nil {
		t.Fatal(err)
	}
	runningDrains(t, procs)

	// No registry: an error, not a panic or a hang.
	var no *NotReadyError
	if err := waitFor(notYet, Options{}, c); !errors.As(err, &no) || !strings.Contains(err.Error(), "Options.Procs") {
		t.Errorf("exec without Procs: %v", err)
	}
}

// Every exit of a check that ends at once reaches it, though the reaper
// may collect it before ForkExec has even returned: a lost one would hang
// its Wait until the deadline.
func TestExecQuickExits(t *testing.T) {
	procs := NewProcs()
	r := startReaper(t, procs)
	c := mustParse(t, "exec:true") // lighter than this test binary
	for i := range 50 {
		if err := waitFor(deadline, Options{Procs: procs}, c); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	runningDrains(t, procs)
	select {
	case pid := <-r.orphans:
		t.Errorf("pid %d reaped but not claimed by Procs", pid)
	default:
	}
}

// A try that runs out of time is killed, and counted as failed.
func TestExecTimeout(t *testing.T) {
	procs := NewProcs()
	startReaper(t, procs)
	c := execCheck(t)
	opts := helperOpts(procs, "sleep")
	opts.ExecTimeout = 300 * time.Millisecond
	nr := notReady(t, waitFor(2*time.Second, opts, c), c.String())
	if !errors.Is(nr, errExecTimeout) {
		t.Errorf("reason %v, want %v", nr.Err, errExecTimeout)
	}
	runningDrains(t, procs)
}

// Cancelling Wait kills the check's process group: the command and the
// child it started, which a kill of the pid alone would leave behind.
func TestExecCancelKillsGroup(t *testing.T) {
	procs := NewProcs()
	r := startReaper(t, procs)
	c := execCheck(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := make(chan error, 1)
	opts := helperOpts(procs, "family:"+pidFile)
	opts.ExecTimeout = time.Hour
	go func() { res <- Wait(ctx, []Check{c}, opts) }()

	var grandchild int
	end := time.Now().Add(deadline)
	for grandchild == 0 {
		if b, err := os.ReadFile(pidFile); err == nil {
			grandchild, _ = strconv.Atoi(string(b))
		} else if time.Now().After(end) {
			t.Fatal("the check never started its child")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Errorf("Wait = %v, want context.Canceled", err)
	}
	runningDrains(t, procs)
	// The grandchild dies with the group and comes back to this subreaper.
	timeout := time.After(deadline)
	for {
		select {
		case pid := <-r.orphans:
			if pid == grandchild {
				return
			}
		case <-timeout:
			t.Fatalf("the check's child %d was never reaped: left running (%v)", grandchild, syscall.Kill(grandchild, 0))
		}
	}
}

// Two Waits at once share one registry (the supervisor has one).
func TestExecConcurrent(t *testing.T) {
	procs := NewProcs()
	startReaper(t, procs)
	c := mustParse(t, "exec:true")
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := waitFor(deadline, Options{Procs: procs}, c, c); err != nil {
				errs <- fmt.Errorf("wait %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	runningDrains(t, procs)
}

// A pid the registry never started is the supervisor's: its child, or an
// orphan.
func TestExitedUnknown(t *testing.T) {
	procs := NewProcs()
	var none *Procs
	for _, pid := range []int{os.Getpid(), 0, 1, -1} {
		if procs.Exited(pid, 0) || none.Exited(pid, 0) {
			t.Errorf("Exited(%d) claimed a pid no check started", pid)
		}
	}
}

// The reaper, the supervisor's loop that also forwards signals, never
// waits on a check's fork: an exit reaped while a fork is under way is held
// (Exited returns at once), claimed by the fork if it is its own child,
// and handed back through Release if not.
func TestExitedNeverWaitsOnAFork(t *testing.T) {
	procs := NewProcs()
	inFork, release := make(chan struct{}), make(chan struct{})
	procs.fork = func(argv0 string, argv []string, attr *syscall.ProcAttr) (int, error) {
		pid, err := syscall.ForkExec(argv0, argv, attr)
		close(inFork)
		<-release // a fork that takes its time, as under memory pressure
		return pid, err
	}
	r := startReaper(t, procs)
	done := make(chan error, 1)
	go func() { done <- waitFor(deadline, Options{Procs: procs}, mustParse(t, "exec:true")) }()
	<-inFork

	// A pid that is nobody's (this process's own children are the
	// reaper's): Exited must answer while the fork is held. 10 s is far
	// beyond a mutex hand-over: still blocked then, it waits on the fork.
	exited := make(chan bool, 1)
	go func() { exited <- procs.Exited(1<<22+1, 0) }()
	select {
	case held := <-exited:
		if !held {
			t.Error("an exit reaped during a fork was not held for it")
		}
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("Exited still waits 10 s into a fork: the reaper would stall on it")
	}
	close(release)
	// The check's own process (true) exited, maybe reaped before the fork
	// returned: its exit still reaches the check.
	if err := <-done; err != nil {
		t.Fatalf("the check: %v", err)
	}
	var back []int
	procs.Release(func(pid int, _ syscall.WaitStatus) { back = append(back, pid) })
	if len(back) != 1 || back[0] != 1<<22+1 {
		t.Errorf("Release gave back %v, want the held pid %d", back, 1<<22+1)
	}
	runningDrains(t, procs)
	select {
	case pid := <-r.orphans:
		t.Errorf("pid %d reaped but not claimed by Procs", pid)
	default:
	}
}
