package fetch

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The proof of the poll path: the real sources, their Versions and
// Refresh, and the Watcher's poll (run.step, on a fake clock), driven
// through fake SSM and Secrets Manager clients backed by a model of the
// stores (model_test.go), over many random schedules of changes and
// faults. After every poll it checks that
//
//   - the environment a successful poll leaves, and every one handed on,
//     is one consistent read: each item (a parameter, a secret with all
//     its JSON keys) holds exactly what the store held for it at this
//     poll or, since answers may be a step behind, at the poll before;
//     never a mix of two versions, never an item partly there;
//   - once the store stops changing and the faults stop, the next two
//     polls bring the environment to exactly the store's current values,
//     recreated parameters included, and nothing changes after;
//   - no value ever appears in a log line or an error (the Watcher logs
//     every failed poll's error).
//
// A failing schedule is shrunk and printed with its seed;
// PARAMEXEC_PROOF_SEED=N replays one, PARAMEXEC_PROOF_SCHEDULES=N sets
// how many run.

// What the schedules act on: a --path, three --param (latest, label,
// pinned version) and two --secret (a JSON object with a prefix, a plain
// value).
var (
	proofPathNames = []string{"/m/p/a", "/m/p/b", "/m/p/c", "/m/p/d/e"}
	proofPathVars  = []string{"A", "B", "C", "D_E"}
)

const (
	proofX, proofY, proofZ = "/m/x", "/m/y", "/m/z" // latest, :live, :1
	proofLabel             = "live"
)

type opKind int

const (
	opPutPath opKind = iota
	opDeletePath
	opRecreatePath
	opPutX
	opDeleteX
	opRecreateX
	opPutY
	opLabelY
	opRecreateY
	opPutSecret
	opPendingSecret
	opFinishSecret
	opKinds
)

// An op is one change to the store; every op applies to any state.
type op struct {
	kind opKind
	item int // which path name or secret
}

func (o op) String() string {
	secret := []string{"s1", "s2"}[o.item%2]
	path := proofPathNames[o.item%len(proofPathNames)]
	return [...]string{
		"put " + path, "delete " + path, "recreate " + path,
		"put " + proofX, "delete " + proofX, "recreate " + proofX,
		"put " + proofY, "label latest " + proofY, "recreate " + proofY,
		"rotate " + secret, "stage pending " + secret, "finish rotation " + secret,
	}[o.kind]
}

func (o op) apply(s *storeState) {
	path := proofPathNames[o.item%len(proofPathNames)]
	secret := []string{"s1", "s2"}[o.item%2]
	switch o.kind {
	case opPutPath:
		s.putParam(path)
	case opDeletePath:
		s.deleteParam(path)
	case opRecreatePath:
		s.deleteParam(path)
		s.putParam(path)
	case opPutX:
		s.putParam(proofX)
	case opDeleteX:
		s.deleteParam(proofX)
	case opRecreateX:
		s.deleteParam(proofX)
		s.putParam(proofX)
	case opPutY:
		s.putParam(proofY)
	case opLabelY:
		s.labelLatest(proofY, proofLabel)
	case opRecreateY:
		s.deleteParam(proofY)
		s.putParam(proofY)
		s.labelLatest(proofY, proofLabel)
	case opPutSecret:
		s.putSecret(secret, secret == "s1")
	case opPendingSecret:
		s.pending(secret, secret == "s1")
	case opFinishSecret:
		s.finish(secret)
	}
}

// A step is the changes made before one timed poll, and its faults.
type step struct {
	ops    []op
	faulty bool
	seed   uint64
}

type schedule struct {
	seed          uint64
	discoverEvery int
	steps         []step
}

func (sc schedule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d, discover every %d poll(s), %d steps:\n", sc.seed, sc.discoverEvery, len(sc.steps))
	for i, st := range sc.steps {
		fmt.Fprintf(&b, "  poll %d after %v", i+1, st.ops)
		if st.faulty {
			fmt.Fprintf(&b, ", faults (seed %d)", st.seed)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func genSchedule(seed uint64) schedule {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	sc := schedule{seed: seed, discoverEvery: 1 + r.IntN(2)}
	for range 6 + r.IntN(14) {
		st := step{faulty: r.IntN(5) < 2, seed: r.Uint64()}
		for range r.IntN(4) {
			st.ops = append(st.ops, op{kind: opKind(r.IntN(int(opKinds))), item: r.IntN(8)})
		}
		sc.steps = append(sc.steps, st)
	}
	return sc
}

// initialState holds every item, /m/z at version 2 so that its pin to
// version 1 reads another value than the latest.
func initialState() *storeState {
	s := &storeState{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), params: make(map[string][]paramVersion), secrets: make(map[string][]secretVersion)}
	for _, name := range proofPathNames {
		s.putParam(name)
	}
	s.putParam(proofX)
	s.putParam(proofY)
	s.labelLatest(proofY, proofLabel)
	s.putParam(proofZ)
	s.putParam(proofZ)
	s.putSecret("s1", true)
	s.putSecret("s2", false)
	return s
}

// expected is what each item must give in a state: its variables by name,
// or nil when the item cannot be read (a --param that is gone), which no
// poll may hand on. pinned is what /m/z:1 held at start: read once.
func expected(s *storeState, pinned string) map[string]map[string]string {
	out := make(map[string]map[string]string)
	for i, name := range proofPathNames {
		out[name] = map[string]string{}
		if _, v, ok := s.param(name); ok {
			out[name][proofPathVars[i]] = v.value
		}
	}
	for req, name := range map[string]string{proofX: "X", proofY + ":" + proofLabel: "Y"} {
		if _, v, ok := s.param(req); ok {
			out[req] = map[string]string{name: v.value}
		} else {
			out[req] = nil
		}
	}
	out[proofZ] = map[string]string{"Z": pinned}
	if v, ok := s.secret("s1", "", currentStage); ok {
		fields, _ := jsonObject(v.value)
		out["s1"] = map[string]string{"S1_USER": fields["user"], "S1_PW": fields["pw"]}
	}
	if v, ok := s.secret("s2", "", currentStage); ok {
		out["s2"] = map[string]string{"S2": v.value}
	}
	return out
}

// itemVars are the names each item may give.
var itemVars = map[string][]string{
	proofX: {"X"}, proofY + ":" + proofLabel: {"Y"}, proofZ: {"Z"},
	"s1": {"S1_PW", "S1_USER"}, "s2": {"S2"},
}

func init() {
	for i, name := range proofPathNames {
		itemVars[name] = []string{proofPathVars[i]}
	}
}

// consistent checks env against the states a poll may have seen. A name
// under the path that no successful discovery has seen (required false)
// may be missing: added names are found by discovery alone.
func consistent(env map[string]string, states []map[string]map[string]string, required map[string]bool) error {
	known := make(map[string]bool)
	for item, names := range itemVars {
		got := make(map[string]string)
		for _, n := range names {
			known[n] = true
			if v, ok := env[n]; ok {
				got[n] = v
			}
		}
		_, isPath := required[item]
		ok := isPath && len(got) == 0 && !required[item]
		for _, st := range states {
			ok = ok || st[item] != nil && maps.Equal(got, st[item])
		}
		if !ok {
			var want []map[string]string
			for _, st := range states {
				want = append(want, st[item])
			}
			return fmt.Errorf("%s: the environment has %v, the store had %v", item, got, want)
		}
	}
	for n := range env {
		if !known[n] {
			return fmt.Errorf("variable %s comes from no item", n)
		}
	}
	return nil
}

func envMap(env []string) map[string]string {
	m := make(map[string]string)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

func proofSources(w *world) []Source {
	clients := awsClients{
		Region:         "us-east-1",
		SSM:            func(string) SSMClient { return fakeSSM{w} },
		SecretsManager: func(string) SecretsClient { return fakeSecrets{w} },
	}
	return []Source{
		&pathSource{Path: "/m/p", Client: fakeSSM{w}},
		&paramSource{Clients: clients, Params: []Param{
			{Name: proofX, Var: "X", Rank: 1}, {Name: proofY, Selector: proofLabel, Var: "Y", Rank: 1}, {Name: proofZ, Selector: "1", Var: "Z", Rank: 1},
		}},
		&secretSource{Clients: clients, Secrets: []Secret{{ID: "s1", Prefix: "S1_", Rank: 2}, {ID: "s2", Rank: 2}}},
	}
}

// runSchedule runs one schedule and returns what went wrong, if anything.
func runSchedule(sc schedule, stats *proofStats) error {
	clk := newFakeClock()
	state := initialState()
	wd := &world{cur: state, prev: state, calls: make(map[string]int), clock: clk}
	sources := proofSources(wd)
	layers, errs := loadEach(context.Background(), sources)
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("start-up: %w", err)
		}
	}
	_, z, _ := state.param(proofZ + ":1")
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w := &Watcher{Sources: sources, Interval: time.Minute, DiscoverEvery: sc.discoverEvery, Log: log, clock: clk}
	var updates []Update
	r := w.newRun(layers, log, func(_ context.Context, u Update) { updates = append(updates, u) })
	values := make(map[string]bool)
	seen := func(s *storeState) {
		for _, vs := range s.params {
			for _, v := range vs {
				values[v.value] = true
			}
		}
		for _, vs := range s.secrets {
			for _, v := range vs {
				values[v.value] = true
				if fields, ok := jsonObject(v.value); ok {
					for _, f := range fields {
						values[f] = true
					}
				}
			}
		}
	}
	seen(state)
	// required holds, for each name under the path, whether a successful
	// discovery saw it, so that the environment must hold it while it
	// stays; every name was read at start.
	required := make(map[string]bool)
	for _, name := range proofPathNames {
		required[name] = true
	}
	polls := 0

	// poll makes one timed poll after ops, and checks what it left.
	poll := func(what string, ops []op, faulty bool, seed uint64) (bool, error) {
		next := wd.cur.clone()
		for _, o := range ops {
			o.apply(next)
		}
		seen(next)
		wd.prev, wd.cur, wd.faulty, wd.seed, wd.calls = wd.cur, next, faulty, seed, make(map[string]int)
		handed := len(updates)
		clk.fire(nopTB{}, r.timer)
		if err := r.step(context.Background()); err != nil {
			return false, fmt.Errorf("%s: step: %w", what, err)
		}
		polls++
		states := []map[string]map[string]string{expected(wd.prev, z.value), expected(wd.cur, z.value)}
		for _, name := range proofPathNames {
			if len(states[0][name]) == 0 || len(states[1][name]) == 0 {
				required[name] = false
			}
		}
		for _, u := range updates[handed:] {
			if err := consistent(envMap(u.Env), states, required); err != nil {
				return false, fmt.Errorf("%s: handed on %v: %w", what, u.Changed, err)
			}
		}
		ok := !slices.ContainsFunc(r.polls.failures, func(n int) bool { return n > 0 })
		if ok {
			env, _ := Merge(nil, r.polls.layers, false)
			if err := consistent(envMap(env), states, required); err != nil {
				return false, fmt.Errorf("%s: the poll left: %w", what, err)
			}
		}
		if ok && polls%sc.discoverEvery == 0 {
			for _, name := range proofPathNames {
				if len(states[0][name]) > 0 && len(states[1][name]) > 0 {
					required[name] = true
				}
			}
		}
		return ok, nil
	}
	for i, st := range sc.steps {
		if _, err := poll("poll "+strconv.Itoa(i+1), st.ops, st.faulty, st.seed); err != nil {
			return err
		}
	}
	// The store stops changing, every --param readable again, and the
	// faults stop.
	var repair []op
	if _, _, ok := wd.cur.param(proofX); !ok {
		repair = append(repair, op{kind: opPutX})
	}
	if _, _, ok := wd.cur.param(proofY + ":" + proofLabel); !ok {
		repair = append(repair, op{kind: opPutY}, op{kind: opLabelY})
	}
	for i := range 5 {
		what := fmt.Sprintf("quiet poll %d", i+1)
		handed := len(updates)
		var ops []op
		if i == 0 {
			ops = repair
		}
		ok, err := poll(what, ops, false, 0)
		switch {
		case err != nil:
			return err
		case !ok:
			return fmt.Errorf("%s failed with no fault and every item readable:\n%s", what, logs.String())
		case i >= 2 && len(updates) > handed:
			return fmt.Errorf("%s handed on %v after the environment had converged", what, updates[handed].Changed)
		case i == 1:
			env, _ := Merge(nil, r.polls.layers, false)
			if err := consistent(envMap(env), []map[string]map[string]string{expected(wd.cur, z.value)}, nil); err != nil {
				return fmt.Errorf("two polls after the last change: %w", err)
			}
		}
	}
	// Every value the store ever held has valueShape, which nothing else
	// in a log line has: one search finds any of them.
	for _, line := range strings.Split(logs.String(), "\n") {
		for _, m := range valueShape.FindAllString(line, -1) {
			if values[m] {
				return fmt.Errorf("the value %s appears in the log: %s", m, line)
			}
		}
	}
	if stats != nil {
		stats.add(wd, logs.String(), len(updates))
	}
	return nil
}

// valueShape matches every value newValue makes.
var valueShape = regexp.MustCompile(`(pv|sv|su|sp)[0-9]{5}q`)

// nopTB lets the fake clock's fire run outside a test's goroutine checks.
type nopTB struct{ testing.TB }

func (nopTB) Helper()           {}
func (nopTB) Fatal(args ...any) { panic(fmt.Sprint(args...)) }

// shrink removes steps, ops and faults from a failing schedule while it
// still fails, a bounded number of runs.
func shrink(sc schedule, budget int) schedule {
	fails := func(c schedule) bool {
		budget--
		return runSchedule(c, nil) != nil
	}
	for progress := true; progress && budget > 0; {
		progress = false
		for i := len(sc.steps) - 1; i >= 0 && budget > 0; i-- {
			c := sc
			c.steps = slices.Delete(slices.Clone(sc.steps), i, i+1)
			if fails(c) {
				sc, progress = c, true
			}
		}
		for i := range sc.steps {
			for j := len(sc.steps[i].ops) - 1; j >= 0 && budget > 0; j-- {
				c := sc
				c.steps = slices.Clone(sc.steps)
				c.steps[i].ops = slices.Delete(slices.Clone(sc.steps[i].ops), j, j+1)
				if fails(c) {
					sc, progress = c, true
				}
			}
			if sc.steps[i].faulty && budget > 0 {
				c := sc
				c.steps = slices.Clone(sc.steps)
				c.steps[i].faulty = false
				if fails(c) {
					sc, progress = c, true
				}
			}
		}
	}
	return sc
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return n
	}
	return def
}

func TestPollPathAgainstModel(t *testing.T) {
	first, n := uint64(1), envInt("PARAMEXEC_PROOF_SCHEDULES", proofSchedules)
	if seed := os.Getenv("PARAMEXEC_PROOF_SEED"); seed != "" {
		s, err := strconv.ParseUint(seed, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		first, n = s, 1
	}
	var stats proofStats
	for seed := first; seed < first+uint64(n); seed++ {
		sc := genSchedule(seed)
		if err := runSchedule(sc, &stats); err != nil {
			small := shrink(sc, 400)
			t.Fatalf("schedule with seed %d fails (replay: PARAMEXEC_PROOF_SEED=%d): %v\nshrunk to %s\nwhich fails with: %v",
				seed, seed, err, small, runSchedule(small, nil))
		}
	}
	// The schedules must have done what they are for: every fault made,
	// polls failed and recovered, changes handed on.
	t.Logf("%d schedules: %+v", n, stats)
	for f := throttle; f <= shortPage; f++ {
		if stats.faults[f] == 0 && n >= 100 {
			t.Errorf("no call had fault %d in %d schedules", f, n)
		}
	}
	if n >= 100 && (stats.failedPolls == 0 || stats.recovered == 0 || stats.updates == 0) {
		t.Errorf("the schedules never failed a poll, recovered or handed on a change: %+v", stats)
	}
}

// proofStats says what the schedules did.
type proofStats struct {
	faults                        [shortPage + 1]int
	calls, failedPolls, recovered int
	updates                       int
}

func (s *proofStats) add(w *world, logs string, updates int) {
	for f, n := range w.faults {
		s.faults[f] += n
	}
	s.calls += w.callCount
	s.failedPolls += strings.Count(logs, "poll failed")
	s.recovered += strings.Count(logs, "poll recovered")
	s.updates += updates
}
