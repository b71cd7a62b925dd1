package signals_test

import (
	"bytes"
	"fmt"
	"os"
	osexec "os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/signals"
)

const helperEnv = "PARAMEXEC_SIGNALS_TEST_HELPER"

// deadline bounds waits for events; it is no speed assertion.
const deadline = 30 * time.Second

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "orphans":
		os.Exit(helperOrphans())
	case "ignored":
		os.Exit(helperIgnored())
	default:
		os.Exit(2)
	}
}

func receive(t *testing.T, c <-chan os.Signal, want os.Signal) {
	t.Helper()
	timeout := time.After(deadline)
	for {
		select {
		case got := <-c:
			if got == want {
				return
			}
		case <-timeout:
			t.Fatalf("%v not relayed", want)
		}
	}
}

func TestNotify(t *testing.T) {
	c := make(chan os.Signal, 16)
	stop := signals.Notify(c)
	for _, sig := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGWINCH, syscall.SIGHUP, syscall.Signal(40)} {
		if err := syscall.Kill(os.Getpid(), sig); err != nil {
			t.Fatal(err)
		}
		receive(t, c, sig)
	}
	if err := osexec.Command("true").Run(); err != nil {
		t.Fatal(err)
	}
	receive(t, c, syscall.SIGCHLD)
	stop()
	// Caught and dropped by the Go runtime now, instead of relayed.
	syscall.Kill(os.Getpid(), syscall.SIGUSR1)
	select {
	case sig := <-c:
		if sig == syscall.SIGUSR1 {
			t.Error("SIGUSR1 relayed after stop")
		}
	case <-time.After(100 * time.Millisecond):
	}
}

// helperIgnored checks that Notify leaves an inherited-ignored SIGHUP ignored.
func helperIgnored() int {
	if !signal.Ignored(syscall.SIGHUP) {
		fmt.Println("SIGHUP not ignored at start")
		return 1
	}
	c := make(chan os.Signal, 16)
	defer signals.Notify(c)()
	if !signal.Ignored(syscall.SIGHUP) {
		fmt.Println("Notify took over the ignored SIGHUP")
		return 1
	}
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	syscall.Kill(os.Getpid(), syscall.SIGUSR1)
	for sig := range c {
		switch sig {
		case syscall.SIGHUP:
			fmt.Println("SIGHUP relayed")
			return 1
		case syscall.SIGUSR1:
			fmt.Println("ok")
			return 0
		}
	}
	return 1
}

func TestNotifyKeepsIgnoredSignals(t *testing.T) {
	// Run the helper as nohup would: SIGHUP ignored. A Go parent cannot
	// pass an ignored signal on, but sh can.
	cmd := osexec.Command("sh", "-c", `trap '' HUP; exec "$0"`, os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=ignored")
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("helper: %v: %s", err, out)
	}
}

func TestReapNeverBlocks(t *testing.T) {
	pid, err := syscall.ForkExec("/bin/sleep", []string{"sleep", "1000"}, &syscall.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	// A running child: nothing to report, and no waiting for it.
	signals.Reap(func(p int, ws syscall.WaitStatus) {
		if p == pid {
			t.Errorf("running child %d reported: %v", pid, ws)
		}
	})
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	reaped := false
	end := time.Now().Add(deadline)
	for !reaped && time.Now().Before(end) {
		signals.Reap(func(p int, ws syscall.WaitStatus) {
			if p == pid {
				reaped = true
				if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
					t.Errorf("status %v; want killed by SIGKILL", ws)
				}
			}
		})
		time.Sleep(10 * time.Millisecond)
	}
	if !reaped {
		t.Fatal("killed child never reaped")
	}
	if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
		t.Errorf("child still there after reaping: %v", err)
	}
	// No children at all (ECHILD): returns at once.
	signals.Reap(nil)
}

func TestSetSubreaperReapsOrphans(t *testing.T) {
	cmd := osexec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=orphans")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out.String())
	}
	t.Log(out.String())
}

const orphans = 200

// helperOrphans becomes a subreaper, starts a shell that leaves 200
// background sleeps behind as it exits, and reaps on SIGCHLD alone until all
// 201 are collected; then no zombie child may be left.
func helperOrphans() int {
	if err := signals.SetSubreaper(); err != nil {
		fmt.Println(err)
		return 1
	}
	c := make(chan os.Signal, 128)
	defer signals.Notify(c)()
	// Each sleep outlives the shell: one that ended first would be the
	// shell's to reap (dash reaps its jobs as it forks the next), and
	// forking 200 takes over a second on a busy machine.
	script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do sleep 5 & i=$((i+1)); done; exit 0`, orphans)
	shPid, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", script}, &syscall.ProcAttr{Env: []string{"PATH=" + os.Getenv("PATH")}})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	reaped := map[int]bool{}
	timeout := time.After(deadline)
	for len(reaped) < orphans+1 {
		select {
		case sig := <-c:
			if sig == syscall.SIGCHLD {
				signals.Reap(func(pid int, ws syscall.WaitStatus) {
					if reaped[pid] {
						fmt.Println("reaped twice:", pid)
					}
					reaped[pid] = true
				})
			}
		case <-timeout:
			fmt.Printf("reaped %d of %d; zombies: %v\n", len(reaped), orphans+1, zombies())
			return 1
		}
	}
	if !reaped[shPid] {
		fmt.Println("the shell itself was not reaped")
		return 1
	}
	if z := zombies(); len(z) > 0 {
		fmt.Println("zombies left:", z)
		return 1
	}
	fmt.Printf("reaped the shell and %d orphans, no zombie left\n", len(reaped)-1)
	return 0
}

// zombies lists the zombie children of this process, from /proc/*/stat.
func zombies() []int {
	var z []int
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // gone meanwhile
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 2 || f[0] != "Z" {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == os.Getpid() {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			z = append(z, pid)
		}
	}
	return z
}
