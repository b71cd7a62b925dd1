package supervise

import (
	"bytes"
	"context"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/faultproxy"
	"github.com/paramexec/paramexec/internal/harness"
	"github.com/paramexec/paramexec/internal/testenv"
)

func TestRestartOnParameterChange(t *testing.T) {
	harness.ParallelE2E(t)
	path := harness.UniquePath(t)
	harness.Moto.PutParameter(t, path+"/DB_PASSWORD", harness.Val("old"), "SecureString")
	harness.Moto.PutParameter(t, path+"/OTHER", harness.Val("same"), "String")
	args, rec := harness.ChildArgs(t)
	pe := harness.StartBinary(t, harness.BaseEnv(harness.Moto.URL), append([]string{"--path", path, "--interval", "1s", "--grace", "5s"}, args...)...)
	first := harness.WaitStarts(t, rec, 1)[0]
	if first.Env["DB_PASSWORD"] != harness.Val("old") || first.Ppid != pe.Cmd.Process.Pid {
		t.Fatalf("first child: DB_PASSWORD=%q ppid=%d (paramexec %d)", first.Env["DB_PASSWORD"], first.Ppid, pe.Cmd.Process.Pid)
	}

	harness.Moto.PutParameter(t, path+"/DB_PASSWORD", harness.Val("new"), "SecureString")
	second := harness.WaitStarts(t, rec, 2)[1]
	if second.Env["DB_PASSWORD"] != harness.Val("new") || second.Env["OTHER"] != harness.Val("same") {
		t.Errorf("new child: DB_PASSWORD=%q OTHER=%q", second.Env["DB_PASSWORD"], second.Env["OTHER"])
	}
	if second.Ppid != pe.Cmd.Process.Pid {
		t.Errorf("new child's parent is %d, want the same paramexec %d", second.Ppid, pe.Cmd.Process.Pid)
	}
	// The old child was asked to stop, and exited, before the new one began.
	recs := harness.ReadRecords(t, rec)
	exitIdx := slices.IndexFunc(recs, func(r harness.Record) bool { return r.Event == "exit" && r.Pid == first.Pid })
	startIdx := slices.IndexFunc(recs, func(r harness.Record) bool { return r.Event == "start" && r.Pid == second.Pid })
	if exitIdx < 0 || exitIdx > startIdx {
		t.Errorf("old child did not exit before the new one started: %+v", recs)
	}
	// Several quiet polls later, still exactly two children: a second
	// restart for the one change would come at one of these three 1 s polls.
	time.Sleep(3 * time.Second)
	if n := len(harness.Starts(harness.ReadRecords(t, rec))); n != 2 {
		t.Errorf("%d child starts after one change, want 2", n)
	}
	if !strings.Contains(pe.Stderr.String(), "DB_PASSWORD") {
		t.Errorf("the log does not name the changed variable:\n%s", pe.Stderr.String())
	}
	pe.Signal(syscall.SIGTERM)
	if code := pe.Wait(); code != 0 {
		t.Errorf("exit %d after SIGTERM, want the child's 0; stderr:\n%s", code, pe.Stderr.String())
	}
}

func TestTwoChangesOneRestart(t *testing.T) {
	harness.ParallelE2E(t)
	p := harness.Proxied(t)
	path := harness.UniquePath(t)
	harness.Moto.PutParameter(t, path+"/A", harness.Val("a1"), "String")
	harness.Moto.PutParameter(t, path+"/B", harness.Val("b1"), "String")
	args, rec := harness.ChildArgs(t)
	pe := harness.StartBinary(t, harness.BaseEnv(p.URL()), append([]string{"--path", path, "--interval", "1s"}, args...)...)
	harness.WaitStarts(t, rec, 1)

	// Hold polls off while both changes land, so that they meet in one poll.
	p.Inject(faultproxy.Rule{Fault: faultproxy.Throttle})
	harness.WaitFor(t, "a throttled poll", func() bool { return p.Counts().Throttled > 0 })
	harness.Moto.PutParameter(t, path+"/A", harness.Val("a2"), "String")
	harness.Moto.PutParameter(t, path+"/B", harness.Val("b2"), "String")
	p.Clear()

	second := harness.WaitStarts(t, rec, 2)[1]
	if second.Env["A"] != harness.Val("a2") || second.Env["B"] != harness.Val("b2") {
		t.Errorf("new child: A=%q B=%q", second.Env["A"], second.Env["B"])
	}
	// Three 1 s polls: a second restart, for either change, would come at
	// the first of them.
	time.Sleep(3 * time.Second)
	if n := len(harness.Starts(harness.ReadRecords(t, rec))); n != 2 {
		t.Errorf("%d child starts for two changes in one poll, want 2 (one restart)", n)
	}
	pe.Signal(syscall.SIGTERM)
	pe.Wait()
}

// watchSecureStrings puts n SecureStrings S0..S(n-1) holding value under a
// new path and starts paramexec watching it every second through a proxy,
// so that a test can count what its polls cost. It returns once the first
// child runs.
func watchSecureStrings(t *testing.T, n int, value string, discoverEvery int) (p *faultproxy.Proxy, path string, pe *harness.Running, rec string) {
	t.Helper()
	p = harness.Proxied(t)
	path = harness.UniquePath(t)
	for i := range n {
		harness.Moto.PutParameter(t, path+"/S"+strconv.Itoa(i), value, "SecureString")
	}
	args, rec := harness.ChildArgs(t)
	pe = harness.StartBinary(t, harness.BaseEnv(p.URL()), append([]string{"--path", path, "--interval", "1s", "--discover-every", strconv.Itoa(discoverEvery), "--log-level", "debug"}, args...)...)
	harness.WaitStarts(t, rec, 1)
	return p, path, pe, rec
}

func TestIdlePollsAreCheap(t *testing.T) {
	harness.ParallelE2E(t)
	p, _, pe, rec := watchSecureStrings(t, 25, harness.Val("secret"), 4)
	// Count whole polls only: start counting just after a poll ended (its
	// debug line), stop paramexec just after the seventh one after that,
	// and read the counts once it has exited, with nothing in flight. The
	// next poll begins at least half an interval (0.5 s) after a poll, a
	// long time to see a log line in.
	polls := func() int { return strings.Count(pe.Stderr.String(), `msg="poll: no change"`) }
	harness.WaitFor(t, "an idle poll", func() bool { return polls() > 0 })
	p.ResetCounts()
	from := polls()
	harness.WaitFor(t, "seven more idle polls", func() bool { return polls() >= from+7 })
	pe.Signal(syscall.SIGTERM)
	pe.Wait()
	c := p.Counts()

	if n := len(harness.Starts(harness.ReadRecords(t, rec))); n != 1 {
		t.Errorf("%d child starts with nothing changed, want 1", n)
	}
	if c.Decrypting != 0 || c.SecretValues != 0 {
		t.Errorf("idle polls made %d decrypting and %d secret-value calls, want 0: %v", c.Decrypting, c.SecretValues, c.ByOp)
	}
	// 25 names are 3 GetParameters calls a poll; some polls list instead.
	versionCalls := c.ByOp["ssm:GetParameters"]
	if versionCalls == 0 || versionCalls%3 != 0 {
		t.Errorf("GetParameters calls = %d, want a positive multiple of ceil(25/10)=3: %v", versionCalls, c.ByOp)
	}
	t.Logf("%d idle polls: %v", polls()-from, c.ByOp)
}

func TestGraceKillsStubbornChildAndGrandchild(t *testing.T) {
	harness.ParallelE2E(t)
	path := harness.UniquePath(t)
	harness.Moto.PutParameter(t, path+"/V", harness.Val("1"), "String")
	args, rec := harness.ChildArgs(t, "-ignore-term", "-spawn", "1")
	pe := harness.StartBinary(t, harness.BaseEnv(harness.Moto.URL), append([]string{"--path", path, "--interval", "1s", "--grace", "1s"}, args...)...)
	harness.WaitStarts(t, rec, 1)
	var grandchild int
	harness.WaitFor(t, "the grandchild", func() bool {
		for _, r := range harness.ReadRecords(t, rec) {
			if r.Event == "spawned" && len(r.Children) == 1 {
				grandchild = r.Children[0]
			}
		}
		return grandchild != 0
	})
	harness.Moto.PutParameter(t, path+"/V", harness.Val("2"), "String")
	harness.WaitStarts(t, rec, 2)
	if !harness.Gone(grandchild) {
		t.Errorf("grandchild %d survived the restart", grandchild)
	}
	recs := harness.ReadRecords(t, rec)
	if !slices.ContainsFunc(recs, func(r harness.Record) bool { return r.Event == "signal" && r.Signal == "SIGTERM" }) {
		t.Error("the stubborn child was never asked to stop with SIGTERM")
	}
	if !strings.Contains(pe.Stderr.String(), "grace") {
		t.Errorf("the log does not say the grace period ran out:\n%s", pe.Stderr.String())
	}
	// Shutting down, the stubborn child gets the same grace, then SIGKILL.
	pe.Signal(syscall.SIGTERM)
	if code := pe.Wait(); code != 128+9 {
		t.Errorf("exit %d after SIGTERM to a child that ignores it, want 137", code)
	}
}

func TestSignalsAreForwarded(t *testing.T) {
	harness.ParallelE2E(t)
	args, rec := harness.ChildArgs(t)
	pe := harness.StartBinary(t, harness.BaseEnv(""), append([]string{"--init"}, args...)...)
	harness.WaitStarts(t, rec, 1)
	sent := []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGQUIT, syscall.SIGALRM, syscall.SIGCONT}
	names := []string{"SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGQUIT", "SIGALRM", "SIGCONT"}
	for i, sig := range sent {
		pe.Signal(sig)
		harness.WaitFor(t, names[i]+" at the child", func() bool {
			return slices.ContainsFunc(harness.ReadRecords(t, rec), func(r harness.Record) bool { return r.Signal == names[i] })
		})
	}
	// A terminating signal reaches the child as --stop-signal (TERM).
	pe.Signal(syscall.SIGINT)
	if code := pe.Wait(); code != 0 {
		t.Errorf("exit %d after SIGINT, want the child's 0", code)
	}
	if !slices.ContainsFunc(harness.ReadRecords(t, rec), func(r harness.Record) bool { return r.Signal == "SIGTERM" }) {
		t.Error("SIGINT did not reach the child as the default --stop-signal TERM")
	}
}

func TestTermExitCodeOfChild(t *testing.T) {
	harness.ParallelE2E(t)
	args, rec := harness.ChildArgs(t, "-term-exit", "7")
	pe := harness.StartBinary(t, harness.BaseEnv(""), append([]string{"--init"}, args...)...)
	harness.WaitStarts(t, rec, 1)
	pe.Signal(syscall.SIGTERM)
	if code := pe.Wait(); code != 7 {
		t.Errorf("exit %d, want the child's 7", code)
	}
}

// zombiesOf counts zombie processes whose parent is pid.
func zombiesOf(t *testing.T, pid int) int {
	entries, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at ')'.
		s := string(data)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 1 && fields[0] == "Z" && fields[1] == strconv.Itoa(pid) {
			n++
		}
	}
	return n
}

func TestOrphansAreReaped(t *testing.T) {
	harness.ParallelE2E(t)
	args, rec := harness.ChildArgs(t, "-orphans", "200")
	pe := harness.StartBinary(t, harness.BaseEnv(""), append([]string{"--init"}, args...)...)
	var orphans []int
	harness.WaitFor(t, "the orphans", func() bool {
		for _, r := range harness.ReadRecords(t, rec) {
			if r.Event == "spawned" && r.Kind == "orphans" {
				orphans = r.Children
			}
		}
		return len(orphans) == 200
	})
	harness.WaitFor(t, "every orphan to be reaped", func() bool {
		for _, pid := range orphans {
			if syscall.Kill(pid, 0) == nil {
				return false
			}
		}
		return true
	})
	if z := zombiesOf(t, pe.Cmd.Process.Pid); z != 0 {
		t.Errorf("%d zombies left under paramexec", z)
	}
	pe.Signal(syscall.SIGTERM)
	pe.Wait()
}

func TestOrphansAreReapedAsPID1(t *testing.T) {
	harness.E2E(t)
	// In a new PID namespace paramexec is PID 1, as in a container.
	if _, err := osexec.LookPath("unshare"); err != nil {
		t.Fatalf("unshare (util-linux) is needed for the PID 1 test: %v", err)
	}
	if out, err := osexec.Command("unshare", "--pid", "--fork", "--mount-proc", "true").CombinedOutput(); err != nil {
		testenv.SkipOrFailOnCI(t, "no PID namespaces here (%v: %s); the subreaper test covers reaping", err, out)
	}
	args, rec := harness.ChildArgs(t, "-orphans", "200", "-run", "4s")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := osexec.CommandContext(ctx, "unshare", append([]string{"--pid", "--fork", "--mount-proc", harness.BinPath, "--init"}, args...)...)
	cmd.Env = harness.BaseEnv("")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	start := harness.WaitStarts(t, rec, 1)[0]
	if start.Ppid != 1 {
		t.Errorf("child's parent is %d, want paramexec as PID 1", start.Ppid)
	}
	// Find paramexec's pid outside the namespace: unshare's only child.
	var pid1 int
	harness.WaitFor(t, "paramexec under unshare", func() bool {
		data, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "task", strconv.Itoa(cmd.Process.Pid), "children"))
		f := strings.Fields(string(data))
		if len(f) == 1 {
			pid1, _ = strconv.Atoi(f[0])
		}
		return pid1 != 0
	})
	harness.WaitFor(t, "orphans", func() bool {
		return slices.ContainsFunc(harness.ReadRecords(t, rec), func(r harness.Record) bool { return r.Kind == "orphans" })
	})
	time.Sleep(1500 * time.Millisecond) // orphans live 50-200ms
	if z := zombiesOf(t, pid1); z != 0 {
		t.Errorf("%d zombies under paramexec as PID 1", z)
	}
	err := cmd.Wait()
	harness.LogScan.Add(stderr.String())
	if err != nil {
		t.Errorf("paramexec as PID 1: %v; stderr:\n%s", err, stderr.String())
	}
}

func TestFaultSoakNeverRestartsWithoutChange(t *testing.T) {
	harness.E2E(t)
	p := harness.Proxied(t)
	path := harness.UniquePath(t)
	harness.Moto.PutParameter(t, path+"/TOKEN", harness.Val("t1"), "SecureString")
	harness.Moto.PutParameter(t, path+"/MODE", harness.Val("m"), "String")
	args, rec := harness.ChildArgs(t)
	pe := harness.StartBinary(t, harness.BaseEnv(p.URL()), append([]string{"--path", path, "--interval", "1s", "--discover-every", "2"}, args...)...)
	harness.WaitStarts(t, rec, 1)
	for _, r := range []faultproxy.Rule{
		{Fault: faultproxy.Throttle, Probability: 0.25},
		{Fault: faultproxy.ServerError, Probability: 0.15},
		{Fault: faultproxy.Unavailable, Probability: 0.1},
		{Fault: faultproxy.Drop, Probability: 0.1},
		{Fault: faultproxy.ExpiredToken, Probability: 0.05},
		{Fault: faultproxy.Delay, Delay: 300 * time.Millisecond, Probability: 0.2},
	} {
		p.Inject(r)
	}
	// About ten 1 s polls and their retries under faults: a restart taken
	// from a failed or partial answer would come at any of them.
	time.Sleep(10 * time.Second)
	c := p.Counts()
	if c.Faulted == 0 {
		t.Fatalf("the soak injected no fault: %+v", c)
	}
	if n := len(harness.Starts(harness.ReadRecords(t, rec))); n != 1 {
		t.Fatalf("%d child starts under faults alone, want 1; stderr:\n%s", n, pe.Stderr.String())
	}
	// A real change still gets through while the faults go on. With about
	// half the calls failing, polls back off to up to nine intervals and a
	// change needs two calls to succeed: 45 s are not enough about once in
	// a hundred runs; 90 s fail about once in thirty thousand (simulated
	// from the retry schedule). No speed is measured here.
	harness.Moto.PutParameter(t, path+"/TOKEN", harness.Val("t2"), "SecureString")
	second := harness.WaitStartsWithin(t, 90*time.Second, rec, 2)[1]
	if second.Env["TOKEN"] != harness.Val("t2") || second.Env["MODE"] != harness.Val("m") {
		t.Errorf("after the change: TOKEN=%q MODE=%q (a partial environment?)", second.Env["TOKEN"], second.Env["MODE"])
	}
	p.Clear()
	// Two clean 1 s polls: a restart left over from the faults would come
	// at the first.
	time.Sleep(2 * time.Second)
	if n := len(harness.Starts(harness.ReadRecords(t, rec))); n != 2 {
		t.Errorf("%d child starts, want 2", n)
	}
	if !strings.Contains(pe.Stderr.String(), "poll failed") {
		t.Error("poll failures were not logged")
	}
	t.Logf("soak: %d requests, %d faulted", c.Total, c.Faulted)
	pe.Signal(syscall.SIGTERM)
	pe.Wait()
}

func TestEnvFileEditsRestart(t *testing.T) {
	harness.ParallelE2E(t)
	t.Run("rename", func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "app.env")
		os.WriteFile(file, []byte("GREETING=one\n"), 0o600)
		args, rec := harness.ChildArgs(t)
		pe := harness.StartBinary(t, harness.BaseEnv(""), append([]string{"--env-file", file, "--interval", "1h"}, args...)...)
		harness.WaitStarts(t, rec, 1)
		tmp := filepath.Join(dir, ".app.env.swp")
		os.WriteFile(tmp, []byte("GREETING=two\n"), 0o600)
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
		if got := harness.WaitStarts(t, rec, 2)[1].Env["GREETING"]; got != "two" {
			t.Errorf("GREETING=%q after the save", got)
		}
		// The file watch acts within milliseconds of an event (--interval
		// 1h: no poll), so a second restart for the events of this one
		// save would be here long before 1.5 s.
		time.Sleep(1500 * time.Millisecond)
		if n := len(harness.Starts(harness.ReadRecords(t, rec))); n != 2 {
			t.Errorf("%d starts for one save, want 2", n)
		}
		pe.Signal(syscall.SIGTERM)
		pe.Wait()
	})
	t.Run("symlink swap", func(t *testing.T) {
		// The layout a Kubernetes ConfigMap or Secret volume uses.
		dir := t.TempDir()
		harness.MustDo(t, os.Mkdir(filepath.Join(dir, "..v1"), 0o755))
		os.WriteFile(filepath.Join(dir, "..v1", "app.env"), []byte("GREETING=one\n"), 0o600)
		harness.MustDo(t, os.Symlink("..v1", filepath.Join(dir, "..data")))
		harness.MustDo(t, os.Symlink("..data/app.env", filepath.Join(dir, "app.env")))
		args, rec := harness.ChildArgs(t)
		pe := harness.StartBinary(t, harness.BaseEnv(""), append([]string{"--env-file", filepath.Join(dir, "app.env"), "--interval", "1h"}, args...)...)
		harness.WaitStarts(t, rec, 1)
		harness.MustDo(t, os.Mkdir(filepath.Join(dir, "..v2"), 0o755))
		os.WriteFile(filepath.Join(dir, "..v2", "app.env"), []byte("GREETING=two\n"), 0o600)
		harness.MustDo(t, os.Symlink("..v2", filepath.Join(dir, "..data_tmp")))
		harness.MustDo(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
		if got := harness.WaitStarts(t, rec, 2)[1].Env["GREETING"]; got != "two" {
			t.Errorf("GREETING=%q after the swap", got)
		}
		// The file watch acts within milliseconds of an event (--interval
		// 1h: no poll), so a second restart for the events of this one
		// save would be here long before 1.5 s.
		time.Sleep(1500 * time.Millisecond)
		if n := len(harness.Starts(harness.ReadRecords(t, rec))); n != 2 {
			t.Errorf("%d starts for one swap, want 2", n)
		}
		pe.Signal(syscall.SIGTERM)
		pe.Wait()
	})
}

func TestOnChangeExitAndSignal(t *testing.T) {
	harness.ParallelE2E(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "app.env")
	os.WriteFile(file, []byte("V=1\n"), 0o600)

	args, rec := harness.ChildArgs(t, "-term-exit", "3")
	pe := harness.StartBinary(t, harness.BaseEnv(""), append([]string{"--env-file", file, "--interval", "1h", "--on-change", "exit"}, args...)...)
	harness.WaitStarts(t, rec, 1)
	os.WriteFile(file, []byte("V=2\n"), 0o600)
	if code := pe.Wait(); code != 3 {
		t.Errorf("--on-change exit: exit %d, want the child's 3", code)
	}

	os.WriteFile(file, []byte("V=1\n"), 0o600)
	args, rec = harness.ChildArgs(t)
	pe = harness.StartBinary(t, harness.BaseEnv(""), append([]string{"--env-file", file, "--interval", "1h", "--on-change", "signal:HUP"}, args...)...)
	harness.WaitStarts(t, rec, 1)
	os.WriteFile(file, []byte("V=2\n"), 0o600)
	harness.WaitFor(t, "SIGHUP at the child", func() bool {
		return slices.ContainsFunc(harness.ReadRecords(t, rec), func(r harness.Record) bool { return r.Signal == "SIGHUP" })
	})
	if n := len(harness.Starts(harness.ReadRecords(t, rec))); n != 1 {
		t.Errorf("--on-change signal:HUP restarted the child (%d starts)", n)
	}
	pe.Signal(syscall.SIGTERM)
	pe.Wait()
}

// A change to one parameter of many is read alone: one decrypting
// GetParameters, no listing of the path.
func TestChangeReadsOnlyWhatMoved(t *testing.T) {
	harness.ParallelE2E(t)
	p, path, pe, rec := watchSecureStrings(t, 25, harness.Val("s1"), 1000)
	p.ResetCounts()
	harness.Moto.PutParameter(t, path+"/S7", harness.Val("s2"), "SecureString")
	second := harness.WaitStarts(t, rec, 2)[1]
	c := p.Counts()
	pe.Signal(syscall.SIGTERM)
	pe.Wait()

	if second.Env["S7"] != harness.Val("s2") || second.Env["S8"] != harness.Val("s1") || len(second.Env) < 25 {
		t.Errorf("new child: S7=%q S8=%q", second.Env["S7"], second.Env["S8"])
	}
	if c.Decrypting != 1 || c.ByOp["ssm:GetParametersByPath"] != 0 {
		t.Errorf("a change to one of 25 parameters cost %d decrypting calls and %d listings, want 1 and 0: %v",
			c.Decrypting, c.ByOp["ssm:GetParametersByPath"], c.ByOp)
	}
}

// Discovery finds a parameter added under the path, and a version check a
// deleted one; each is one restart with the environment the path now holds.
func TestParameterAddedAndRemoved(t *testing.T) {
	harness.ParallelE2E(t)
	path := harness.UniquePath(t)
	harness.Moto.PutParameter(t, path+"/KEEP", harness.Val("keep"), "String")
	harness.Moto.PutParameter(t, path+"/GONE", harness.Val("gone"), "SecureString")
	args, rec := harness.ChildArgs(t)
	pe := harness.StartBinary(t, harness.BaseEnv(harness.Moto.URL), append([]string{"--path", path, "--interval", "1s", "--discover-every", "2"}, args...)...)
	harness.WaitStarts(t, rec, 1)

	harness.Moto.PutParameter(t, path+"/nested/ADDED", harness.Val("added"), "SecureString")
	second := harness.WaitStarts(t, rec, 2)[1]
	if second.Env["NESTED_ADDED"] != harness.Val("added") || second.Env["GONE"] != harness.Val("gone") || second.Env["KEEP"] != harness.Val("keep") {
		t.Errorf("after an addition: NESTED_ADDED=%q GONE=%q KEEP=%q", second.Env["NESTED_ADDED"], second.Env["GONE"], second.Env["KEEP"])
	}
	harness.Moto.DeleteParameter(t, path+"/GONE")
	third := harness.WaitStarts(t, rec, 3)[2]
	if _, still := third.Env["GONE"]; still || third.Env["NESTED_ADDED"] != harness.Val("added") || third.Env["KEEP"] != harness.Val("keep") {
		t.Errorf("after a deletion: GONE present=%v NESTED_ADDED=%q KEEP=%q", still, third.Env["NESTED_ADDED"], third.Env["KEEP"])
	}
	// Three 1 s polls, one of them a discovery: a repeated restart for the
	// addition or the deletion would come at one of them.
	time.Sleep(3 * time.Second)
	if n := len(harness.Starts(harness.ReadRecords(t, rec))); n != 3 {
		t.Errorf("%d child starts for one addition and one deletion, want 3", n)
	}
	pe.Signal(syscall.SIGTERM)
	pe.Wait()
}
