package settle

import (
	"bufio"
	"encoding/json"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/harness"
)

// Two parameters changed 2 s apart, polled every second: with --settle 3s
// they are one restart whose child has both new values; without, two.
func TestSettleJoinsChanges(t *testing.T) {
	harness.E2E(t)
	t.Run("settle", func(t *testing.T) {
		path := harness.UniquePath(t)
		harness.Moto.PutParameter(t, path+"/A", harness.Val("a1"), "String")
		harness.Moto.PutParameter(t, path+"/B", harness.Val("b1"), "String")
		args, rec := harness.ChildArgs(t)
		pe := harness.StartBinary(t, harness.BaseEnv(harness.Moto.URL), append([]string{"--path", path, "--interval", "1s", "--settle", "3s"}, args...)...)
		harness.WaitStarts(t, rec, 1)

		harness.Moto.PutParameter(t, path+"/A", harness.Val("a2"), "String")
		changedA := time.Now()
		harness.WaitFor(t, "the first change to be seen", func() bool { return strings.Contains(pe.Stderr.String(), "change seen; settling") })
		time.Sleep(time.Until(changedA.Add(2 * time.Second))) // the scenario: B changes 2 s after A
		harness.Moto.PutParameter(t, path+"/B", harness.Val("b2"), "String")

		// The first restart already has both values, so no restart with A
		// alone came before it.
		second := harness.WaitStarts(t, rec, 2)[1]
		if second.Env["A"] != harness.Val("a2") || second.Env["B"] != harness.Val("b2") {
			t.Errorf("the restarted child has A=%q B=%q, want both new values", second.Env["A"], second.Env["B"])
		}
		// None after it either: a restart handed on twice, or B handed on
		// again, would come within a settle (3 s) and a poll of the first;
		// 5 s of 1 s polls cover that.
		time.Sleep(5 * time.Second)
		if n := len(harness.Starts(harness.ReadRecords(t, rec))); n != 2 {
			t.Errorf("%d child starts, want 2 (one restart for both changes)", n)
		}
		log := pe.Stderr.String()
		if strings.Count(log, "change seen; settling") != 2 || !strings.Contains(log, `changed="[A B]" by=quiet`) {
			t.Errorf("the log does not show both changes settling into one:\n%s", log)
		}
		pe.Signal(syscall.SIGTERM)
		pe.Wait()
	})
	t.Run("no settle", func(t *testing.T) {
		path := harness.UniquePath(t)
		harness.Moto.PutParameter(t, path+"/A", harness.Val("a1"), "String")
		harness.Moto.PutParameter(t, path+"/B", harness.Val("b1"), "String")
		args, rec := harness.ChildArgs(t)
		pe := harness.StartBinary(t, harness.BaseEnv(harness.Moto.URL), append([]string{"--path", path, "--interval", "1s"}, args...)...)
		harness.WaitStarts(t, rec, 1)

		harness.Moto.PutParameter(t, path+"/A", harness.Val("a2"), "String")
		changedA := time.Now()
		second := harness.WaitStarts(t, rec, 2)[1]
		if second.Env["A"] != harness.Val("a2") || second.Env["B"] != harness.Val("b1") {
			t.Errorf("first restart: A=%q B=%q, want only A new", second.Env["A"], second.Env["B"])
		}
		time.Sleep(time.Until(changedA.Add(2 * time.Second)))
		harness.Moto.PutParameter(t, path+"/B", harness.Val("b2"), "String")
		third := harness.WaitStarts(t, rec, 3)[2]
		if third.Env["A"] != harness.Val("a2") || third.Env["B"] != harness.Val("b2") {
			t.Errorf("second restart: A=%q B=%q, want both new", third.Env["A"], third.Env["B"])
		}
		// The settle's own lines, not the path: the test's name holds "settle".
		if log := pe.Stderr.String(); strings.Contains(log, `msg="change seen; settling"`) || strings.Contains(log, `msg=settled`) {
			t.Errorf("settled without --settle:\n%s", pe.Stderr.String())
		}
		pe.Signal(syscall.SIGTERM)
		pe.Wait()
	})
}

// Changes every second never give --settle 5s its quiet: --settle-max 8s
// restarts anyway, while they still come, with what the polls last read.
func TestSettleMaxBoundsTheWait(t *testing.T) {
	harness.E2E(t)
	path := harness.UniquePath(t)
	harness.Moto.PutParameter(t, path+"/A", harness.Val("0"), "String")
	harness.Moto.PutParameter(t, path+"/B", harness.Val("0"), "String")
	args, rec := harness.ChildArgs(t)
	pe := harness.StartBinary(t, harness.BaseEnv(harness.Moto.URL), append([]string{"--path", path, "--interval", "1s", "--settle", "5s", "--settle-max", "8s"}, args...)...)
	harness.WaitStarts(t, rec, 1)

	// Change A and B by turns every second until the restart. Without the
	// bound there would be none while this goes on; 60 changes are far
	// more than settle-max needs, however loaded the machine.
	restarted := false
	for i := 1; i <= 60 && !restarted; i++ {
		name := "/A"
		if i%2 == 0 {
			name = "/B"
		}
		harness.Moto.PutParameter(t, path+name, harness.Val(strconv.Itoa(i)), "String")
		time.Sleep(time.Second)
		restarted = len(harness.Starts(harness.ReadRecords(t, rec))) >= 2
	}
	if !restarted {
		t.Fatalf("no restart within 60 changes a second apart; log:\n%s", pe.Stderr.String())
	}
	second := harness.Starts(harness.ReadRecords(t, rec))[1]
	if second.Env["A"] == harness.Val("0") || second.Env["B"] == harness.Val("0") {
		t.Errorf("the restarted child has A=%q B=%q; want both changed", second.Env["A"], second.Env["B"])
	}
	if log := pe.Stderr.String(); !strings.Contains(log, "by=settle-max") {
		t.Errorf("the log does not say settle-max ended the wait:\n%s", log)
	}
	pe.Signal(syscall.SIGTERM)
	pe.Wait()
}

// With --splay the restart waits the delay the log names, which is within
// the bound. Both are read from the log; no speed is measured.
func TestSplayDelaysTheRestart(t *testing.T) {
	harness.E2E(t)
	const splay = 3 * time.Second
	path := harness.UniquePath(t)
	harness.Moto.PutParameter(t, path+"/A", harness.Val("a1"), "String")
	args, rec := harness.ChildArgs(t)
	pe := harness.StartBinary(t, harness.BaseEnv(harness.Moto.URL), append([]string{"--path", path, "--interval", "1s", "--splay", splay.String(), "--log-format", "json"}, args...)...)
	harness.WaitStarts(t, rec, 1)
	harness.Moto.PutParameter(t, path+"/A", harness.Val("a2"), "String")
	if got := harness.WaitStarts(t, rec, 2)[1].Env["A"]; got != harness.Val("a2") {
		t.Errorf("restarted child has A=%q", got)
	}
	pe.Signal(syscall.SIGTERM)
	pe.Wait()

	type line struct {
		Time  time.Time     `json:"time"`
		Msg   string        `json:"msg"`
		Delay time.Duration `json:"delay"`
		Until time.Time     `json:"until"`
	}
	var splaying, begun []line
	sc := bufio.NewScanner(strings.NewReader(pe.Stderr.String()))
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		switch l.Msg {
		case "splaying":
			splaying = append(splaying, l)
		case "restart begun":
			begun = append(begun, l)
		}
	}
	if len(splaying) != 1 || len(begun) != 1 {
		t.Fatalf("%d splay and %d restart lines, want 1 each; log:\n%s", len(splaying), len(begun), pe.Stderr.String())
	}
	s := splaying[0]
	if s.Delay < 0 || s.Delay >= splay {
		t.Errorf("splay delay %v outside [0, %v)", s.Delay, splay)
	}
	// The delay is counted from the poll that saw the change, which began
	// before the line was logged, and the restart waits for all of it.
	if from := s.Until.Add(-s.Delay); from.After(s.Time) {
		t.Errorf("the splay runs from %v, after it was logged at %v", from, s.Time)
	}
	if begun[0].Time.Before(s.Until) {
		t.Errorf("the restart began at %v, before the splay ended at %v", begun[0].Time, s.Until)
	}
}

func TestSettleUsageErrors(t *testing.T) {
	harness.ParallelE2E(t)
	for _, tc := range []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"--interval", "1s", "--settle", "-1s"}, "", "--settle -1s: must not be negative"},
		{[]string{"--interval", "1s", "--splay", "-2s"}, "", "--splay -2s: must not be negative"},
		{[]string{"--interval", "1s", "--settle", "5s", "--settle-max", "-1s"}, "", "--settle-max -1s: must not be negative"},
		{[]string{"--interval", "1s", "--settle", "5s", "--settle-max", "4s"}, "", "--settle-max 4s: below --settle 5s"},
		{[]string{"--interval", "1s", "--settle-max", "4s"}, "", "--settle-max 4s: bounds --settle, which is not given"},
		{[]string{"--settle", "5s"}, "", "--settle 5s: only applies when watching; give --interval too"},
		{[]string{"--init", "--splay", "5s"}, "", "--splay 5s: only applies when watching"},
		{[]string{"--interval", "1s", "--settle", "soon"}, "", `--settle "soon": want a duration such as 30s, 5m, 1h`},
		{[]string{"--interval", "1s"}, "PARAMEXEC_SPLAY=-1s", "--splay -1s: must not be negative"},
		{[]string{"--interval", "1s"}, "PARAMEXEC_SETTLE_MAX=1m", "--settle-max 1m0s: bounds --settle"},
	} {
		env := harness.BaseEnv("")
		if tc.env != "" {
			env = append(env, tc.env)
		}
		r := harness.RunBinary(t, env, append(tc.args, "true")...)
		if r.Code != harness.ExitUsage || !strings.Contains(r.Stderr, tc.want) {
			t.Errorf("%v %s: exit %d, stderr %q; want exit %d and %q", tc.args, tc.env, r.Code, r.Stderr, harness.ExitUsage, tc.want)
		}
	}
	// What is allowed: settle-max equal to settle, and the variables.
	env := append(harness.BaseEnv(""), "PARAMEXEC_SETTLE=2s", "PARAMEXEC_SETTLE_MAX=2s", "PARAMEXEC_SPLAY=1s")
	if r := harness.RunBinary(t, env, "--interval", "1s", "--print"); r.Code != 0 {
		t.Errorf("valid settings refused: exit %d, stderr %q", r.Code, r.Stderr)
	}
}
