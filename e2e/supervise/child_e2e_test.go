package supervise

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/harness"
)

// signalsAt lists the signals the test child recorded, in order.
func signalsAt(t *testing.T, rec string) []string {
	t.Helper()
	var out []string
	for _, r := range harness.ReadRecords(t, rec) {
		if r.Event == "signal" {
			out = append(out, r.Signal)
		}
	}
	return out
}

// docker stop, ECS and systemd send SIGTERM; a child whose graceful stop is
// another signal (nginx: SIGQUIT) must get that one.
func TestTerminatingSignalBecomesStopSignal(t *testing.T) {
	harness.ParallelE2E(t)
	t.Run("first is the stop signal", func(t *testing.T) {
		// The child ignores SIGTERM: only SIGQUIT stops it with code 5.
		// --grace 30s: were SIGTERM forwarded, it would end in SIGKILL.
		args, rec := harness.ChildArgs(t, "-ignore-term", "-stop-on", "QUIT", "-term-exit", "5")
		pe := harness.StartBinary(t, harness.BaseEnv(""), append([]string{"--init", "--stop-signal", "QUIT", "--grace", "30s"}, args...)...)
		harness.WaitStarts(t, rec, 1)
		pe.Signal(syscall.SIGTERM)
		if code := pe.Wait(); code != 5 {
			t.Errorf("exit %d after SIGTERM, want the child's 5 from SIGQUIT; stderr:\n%s", code, pe.Stderr.String())
		}
		if got := signalsAt(t, rec); !slices.Equal(got, []string{"SIGQUIT"}) {
			t.Errorf("the child received %q, want only SIGQUIT", got)
		}
	})
	t.Run("a second is forwarded as it is", func(t *testing.T) {
		// SIGQUIT starts a stop that takes an hour; the second SIGTERM must
		// reach the child as SIGTERM, and the grace period ends it.
		args, rec := harness.ChildArgs(t, "-ignore-term", "-stop-on", "QUIT", "-stop-delay", "1h")
		pe := harness.StartBinary(t, harness.BaseEnv(""), append([]string{"--init", "--stop-signal", "QUIT", "--grace", "3s"}, args...)...)
		harness.WaitStarts(t, rec, 1)
		pe.Signal(syscall.SIGTERM)
		harness.WaitFor(t, "SIGQUIT at the child", func() bool { return slices.Contains(signalsAt(t, rec), "SIGQUIT") })
		pe.Signal(syscall.SIGTERM)
		harness.WaitFor(t, "SIGTERM at the child", func() bool { return slices.Contains(signalsAt(t, rec), "SIGTERM") })
		if code := pe.Wait(); code != 128+9 {
			t.Errorf("exit %d, want 137 after the grace period", code)
		}
		if got := signalsAt(t, rec); !slices.Equal(got, []string{"SIGQUIT", "SIGTERM"}) {
			t.Errorf("the child received %q, want SIGQUIT then SIGTERM", got)
		}
	})
}

func TestGraceZeroMeansNone(t *testing.T) {
	harness.ParallelE2E(t)
	t.Run("--grace 0", func(t *testing.T) {
		// The child would exit 0 five seconds after SIGTERM, well inside the
		// 10 s that 0 used to mean: only an immediate SIGKILL gives 137.
		args, rec := harness.ChildArgs(t, "-stop-delay", "5s")
		pe := harness.StartBinary(t, harness.BaseEnv(""), append([]string{"--init", "--grace", "0"}, args...)...)
		harness.WaitStarts(t, rec, 1)
		pe.Signal(syscall.SIGTERM)
		if code := pe.Wait(); code != 128+9 {
			t.Errorf("exit %d with --grace 0, want 137 (SIGKILL right after the stop signal); stderr:\n%s", code, pe.Stderr.String())
		}
		// The stop signal is still sent first (the child may die before it
		// handles it, so the log, not the child, is the witness).
		if !strings.Contains(pe.Stderr.String(), `msg="stopping child"`) || !strings.Contains(pe.Stderr.String(), "signal=SIGTERM") {
			t.Errorf("with --grace 0 the stop signal must still be sent first:\n%s", pe.Stderr.String())
		}
		if !strings.Contains(pe.Stderr.String(), "grace=0s") {
			t.Errorf("the log does not say the grace was 0s:\n%s", pe.Stderr.String())
		}
	})
	t.Run("no flag keeps 10s", func(t *testing.T) {
		args, rec := harness.ChildArgs(t, "-stop-delay", "1s")
		pe := harness.StartBinary(t, harness.BaseEnv(""), append([]string{"--init"}, args...)...)
		harness.WaitStarts(t, rec, 1)
		pe.Signal(syscall.SIGTERM)
		if code := pe.Wait(); code != 0 {
			t.Errorf("exit %d without --grace, want the child's 0 after its 1s stop; stderr:\n%s", code, pe.Stderr.String())
		}
	})
}

// group misses them; paramexec, their subreaper, must end them with the
// generation: at a restart (stop signal, then SIGKILL after --grace; these
// ignore the stop signal) and at its own exit.
func TestSetsidLeftoversEndWithTheirGeneration(t *testing.T) {
	harness.ParallelE2E(t)
	file := filepath.Join(t.TempDir(), "app.env")
	harness.MustDo(t, os.WriteFile(file, []byte("V=1\n"), 0o600))
	args, rec := harness.ChildArgs(t, "-daemons", "2")
	pe := harness.StartBinary(t, harness.BaseEnv(""), append([]string{"--env-file", file, "--interval", "1h", "--grace", "1s"}, args...)...)
	var daemons []int
	for gen := 1; gen <= 4; gen++ {
		child := harness.WaitStarts(t, rec, gen)[gen-1]
		harness.WaitFor(t, "the daemons of child "+strconv.Itoa(gen), func() bool { return len(harness.DaemonsOf(t, rec)[child.Pid]) == 2 })
		mine := harness.DaemonsOf(t, rec)[child.Pid]
		for _, pid := range mine {
			if !harness.IsAlive(pid) {
				t.Fatalf("daemon %d of the current child %d is not running", pid, child.Pid)
			}
		}
		// gone waits 10 s for each: the leftovers have 1 s of grace.
		for _, pid := range daemons {
			if !harness.Gone(pid) {
				t.Errorf("daemon %d of an earlier generation is alive with child %d (generation %d)", pid, child.Pid, gen)
			}
		}
		daemons = append(daemons, mine...)
		if gen < 4 {
			harness.MustDo(t, os.WriteFile(file, []byte("V="+strconv.Itoa(gen+1)+"\n"), 0o600))
		}
	}
	if !strings.Contains(pe.Stderr.String(), "left outside its process group") {
		t.Errorf("the log does not say leftovers were stopped:\n%s", pe.Stderr.String())
	}
	pe.Signal(syscall.SIGTERM)
	pe.Wait()
	for _, pid := range daemons {
		if !harness.Gone(pid) {
			t.Errorf("daemon %d outlived paramexec", pid)
		}
	}
}

// The OOM killer ends paramexec with SIGKILL, which it cannot catch: the
// child must die with it (its parent-death signal), not run on unsupervised.
func TestChildDiesWithKilledSupervisor(t *testing.T) {
	harness.ParallelE2E(t)
	// A restart first: the child of a restart is forked later, and must be
	// tied to paramexec's life as well as the first.
	file := filepath.Join(t.TempDir(), "app.env")
	harness.MustDo(t, os.WriteFile(file, []byte("V=1\n"), 0o600))
	args, rec := harness.ChildArgs(t)
	pe := harness.StartBinary(t, harness.BaseEnv(""), append([]string{"--env-file", file, "--interval", "1h"}, args...)...)
	harness.WaitStarts(t, rec, 1)
	harness.MustDo(t, os.WriteFile(file, []byte("V=2\n"), 0o600))
	child := harness.WaitStarts(t, rec, 2)[1]
	pe.Signal(syscall.SIGKILL)
	if code := pe.Wait(); code != -int(syscall.SIGKILL) {
		t.Fatalf("paramexec ended with %d, want death by SIGKILL", code)
	}
	// Whoever reaps the orphan (init, a subreaper above the test), a dead
	// child is at most a zombie; 10 s is far beyond a signal's delivery.
	deadline := time.Now().Add(10 * time.Second)
	for harness.IsAlive(child.Pid) {
		if time.Now().After(deadline) {
			syscall.Kill(child.Pid, syscall.SIGKILL)
			t.Fatalf("child %d still running 10 s after paramexec was killed", child.Pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
