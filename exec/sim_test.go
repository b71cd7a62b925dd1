package exec

import (
	"cmp"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The deterministic simulation of the supervisor's core (see
// docs/architecture.md). A schedule is bytes: two for the configuration,
// then two per step, an operation and its argument. Every step is one
// input to the core, or one thing the fake world does by itself (a child
// boots, exits, is stopped, leaves a process behind); the invariants are
// checked after each.

type op int

const (
	opChange op = iota
	opSignal
	opTerm
	opBoot
	opPass
	opFail
	opExit
	opReap
	opAdvance
	opForkFail
	opHandover
	opLeave
	opSigstop
	opLeftoverExits
	opStubborn
	opReload
)

var opNames = []string{"change", "signal", "term", "boot", "ready", "not-ready", "exit", "reap", "advance", "fork-fails", "handed-over", "leave", "sigstop", "leftover-exits", "ignores-term", "reload"}

// opTable weighs the operations: an operation's share of the slots.
var opTable = func() []op {
	weights := map[op]int{
		opChange: 4, opSignal: 4, opTerm: 1, opBoot: 3, opPass: 3, opFail: 1, opExit: 2,
		opReap: 3, opAdvance: 5, opForkFail: 1, opHandover: 2, opLeave: 1, opSigstop: 1, opLeftoverExits: 1, opStubborn: 1, opReload: 2,
	}
	var t []op
	for o := opChange; o <= opReload; o++ {
		for range weights[o] {
			t = append(t, o)
		}
	}
	return t
}()

var simEnvs = [][]string{{"V=a"}, {"V=b"}, {"V=c"}, {"V=bad"}}

// forwardable are the signals the schedule sends that the core forwards
// (and the on-change signal, SIGUSR2).
var forwardable = []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGWINCH, syscall.SIGUSR2}

// coverage counts the phase changes seen across steps, when not nil.
var coverage map[[2]phase]int

type heldEntry struct {
	sig  syscall.Signal
	step int
}

type sim struct {
	m          *core
	w          *fakeWorld
	step       int
	failure    string
	ledger     []heldEntry
	deliveries map[syscall.Signal][]int // steps at which each signal reached a ready child
	drops      []heldEntry
	readyEnvs  map[envHash]bool
}

func simConfig(b0, b1 byte) (cfg config, handover bool) {
	cfg = config{argv: []string{"app"}, grace: 10 * time.Second, stopSig: syscall.SIGTERM, readyTimeout: 30 * time.Second}
	if b0&1 != 0 {
		cfg.restart, cfg.checked = Overlap, true
	}
	cfg.rollback = b0&2 != 0
	if b0&4 != 0 {
		cfg.window = 5 * time.Second
	}
	cfg.checked = cfg.checked || b0&8 != 0
	switch b0 >> 5 {
	case 6:
		cfg.onChange = Action{Kind: Exit}
	case 7:
		cfg.onChange = Action{Kind: Signal, Signal: syscall.SIGUSR2}
	}
	if b1&1 != 0 {
		cfg.grace = 0
	}
	return cfg, b0&16 != 0
}

func newSim(data []byte) *sim {
	s := &sim{deliveries: map[syscall.Signal][]int{}, readyEnvs: map[envHash]bool{}}
	s.w = newFakeWorld(s)
	cfg, handover := simConfig(at(data, 0), at(data, 1))
	s.w.handsOver = handover
	s.m = newCore(cfg, s.w, slog.New(drops{s}))
	s.m.onBug = func(msg string) { s.fail("%s", msg) }
	return s
}

func at(data []byte, i int) byte {
	if i < len(data) {
		return data[i]
	}
	return 0
}

func (s *sim) fail(format string, args ...any) {
	if s.failure == "" {
		s.failure = fmt.Sprintf("step %d (phase %v): ", s.step, s.m.phase) + fmt.Sprintf(format, args...)
	}
}

// runSchedule runs one schedule and returns the first invariant broken
// ("" if none), the steps taken, and with trace, what each step did.
func runSchedule(data []byte, trace bool) (failure string, steps int, log []string) {
	s := newSim(data)
	if err := s.m.begin(simEnvs[0]); err != nil {
		return "first start failed: " + err.Error(), 0, nil
	}
	s.check()
	for i := 2; i+1 < len(data) && s.failure == "" && !s.m.done(); i += 2 {
		s.step++
		before := s.m.phase
		what := s.do(opTable[int(data[i])%len(opTable)], data[i+1])
		if trace {
			log = append(log, fmt.Sprintf("%3d %-40s -> %v", s.step, what, s.m.phase))
		}
		s.check()
		if coverage != nil {
			coverage[[2]phase{before, s.m.phase}]++
		}
	}
	if s.failure == "" {
		s.end()
	}
	return s.failure, s.step, log
}

// pick returns one of the live processes that match, chosen by arg.
func (s *sim) pick(arg byte, ours bool) *fproc {
	var live []*fproc
	for _, pid := range s.w.order {
		if p := s.w.procs[pid]; !p.dead && p.ours == ours {
			live = append(live, p)
		}
	}
	if len(live) == 0 {
		return nil
	}
	return live[int(arg)%len(live)]
}

func (s *sim) do(o op, arg byte) string {
	m, w := s.m, s.w
	name := opNames[o]
	switch o {
	case opChange:
		env := simEnvs[int(arg)%len(simEnvs)]
		m.change(Change{Env: env, Reason: "V changed"})
		return name + " " + env[0]
	case opSignal:
		sig := []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGWINCH, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGTSTP, syscall.SIGCONT}[int(arg)%7]
		if slices.Contains(forwardable, sig) {
			s.ledger = append(s.ledger, heldEntry{sig, s.step})
		}
		m.signal(sig)
		return name + " " + signalName(sig)
	case opTerm:
		if arg >= 64 {
			return name + " (not now)" // rarer: a stop ends the schedule
		}
		switch arg % 3 {
		case 0:
			m.signal(syscall.SIGTERM)
			return name + " SIGTERM"
		case 1:
			m.signal(syscall.SIGINT)
			return name + " SIGINT"
		}
		m.cancelled("context canceled")
		return name + " (ctx done)"
	case opBoot:
		if p := s.pick(arg, true); p != nil {
			p.booted = true
			return fmt.Sprintf("%s pid %d", name, p.pid)
		}
	case opPass, opFail:
		return s.answer(o, arg)
	case opExit:
		if p := s.pick(arg, true); p != nil && (arg&0x1c == 0 || s.m.byPid(p.pid) == nil || s.m.byPid(p.pid).role != serving) {
			ws := []syscall.WaitStatus{0, 1 << 8, 3 << 8, syscall.WaitStatus(syscall.SIGSEGV)}[int(arg>>4)%4]
			w.die(p, ws, false)
			return fmt.Sprintf("%s pid %d code %d", name, p.pid, statusCode(ws))
		}
	case opReap:
		return s.reap(arg)
	case opAdvance:
		d := m.deadline()
		if arg&3 == 0 && d.After(w.clock) {
			w.clock = d
		} else {
			w.clock = w.clock.Add(time.Duration(int(arg)%10+1) * 300 * time.Millisecond)
		}
		m.fire(w.clock)
		return fmt.Sprintf("%s to %v", name, w.clock.Sub(time.Unix(1_000_000, 0)))
	case opForkFail:
		if arg >= 64 {
			return name + " (not now)"
		}
		w.failNext = true
		return name
	case opHandover:
		if len(w.handing) > 0 {
			g := w.handing[int(arg)%len(w.handing)]
			w.handing = slices.DeleteFunc(w.handing, func(x int) bool { return x == g })
			m.handedOver(g)
			return fmt.Sprintf("%s gen %d", name, g)
		}
	case opLeave:
		if p := s.pick(arg, true); p != nil {
			l := w.spawn(false)
			l.booted, l.ignoresTerm = true, arg&0x10 != 0
			return fmt.Sprintf("%s pid %d leaves pid %d (ignores TERM: %v)", name, p.pid, l.pid, l.ignoresTerm)
		}
	case opSigstop:
		if p := s.pick(arg, true); p != nil {
			w.deliver(p, syscall.SIGSTOP, false)
			return fmt.Sprintf("%s pid %d", name, p.pid)
		}
	case opStubborn:
		if p := s.pick(arg, true); p != nil {
			p.ignoresTerm = true
			return fmt.Sprintf("%s pid %d", name, p.pid)
		}
	case opReload:
		// Values delivered as files changed: the child is signalled to
		// re-read them, as a forwarded signal is (a reload while stopping
		// is not owed to anyone).
		if m.phase != stopping && m.phase != ended {
			s.ledger = append(s.ledger, heldEntry{syscall.SIGHUP, s.step})
		}
		m.change(Change{Reason: "F changed", Reload: syscall.SIGHUP})
		return name
	case opLeftoverExits:
		if p := s.pick(arg, false); p != nil {
			w.die(p, 0, false)
			return fmt.Sprintf("%s pid %d", name, p.pid)
		}
	}
	return name + " (nothing to do)"
}

func (s *sim) answer(o op, arg byte) string {
	w := s.w
	if len(w.checks) == 0 {
		return opNames[o] + " (no check)"
	}
	c := w.checks[int(arg)%len(w.checks)]
	if p := w.procs[c.pid]; o == opPass && (!p.booted || p.dead) {
		return opNames[o] + " (not booted)"
	}
	if k := s.m.byGen(c.gen); o == opFail && k != nil && k.role == serving && arg&0x1c != 0 {
		return opNames[o] + " (not now)" // rarer: the first child's failure ends the schedule
	}
	w.checks = slices.DeleteFunc(w.checks, func(x fakeCheck) bool { return x.gen == c.gen })
	var err error
	if o == opFail {
		err = errors.New("connection refused")
	}
	s.m.answered(c.gen, err)
	return fmt.Sprintf("%s pid %d", opNames[o], c.pid)
}

// reap hands the core every zombie in one pass, in an order arg picks.
func (s *sim) reap(arg byte) string {
	zs := s.w.zombies()
	if arg&1 != 0 {
		slices.Reverse(zs)
	}
	batch := make([]exit, len(zs))
	pids := make([]string, len(zs))
	for i, p := range zs {
		p.reaped = true
		batch[i] = exit{p.pid, p.status}
		pids[i] = strconv.Itoa(p.pid)
	}
	s.m.reaped(batch)
	return "reap [" + strings.Join(pids, " ") + "]"
}

// sent checks each signal the core sends a child.
func (s *sim) sent(p *fproc, sig syscall.Signal) {
	m := s.m
	if sig == m.cfg.stopSig && p.gotStop.IsZero() {
		p.gotStop, p.stopStep = s.w.clock, s.step
		s.checkOverlapStop(p)
	}
	if !slices.Contains(forwardable, sig) {
		return
	}
	c := m.byPid(p.pid)
	if m.phase != stopping && m.phase != ended && (c == nil || !c.ready) {
		s.fail("%v delivered to pid %d, which is not ready", signalName(sig), p.pid)
	}
	s.deliveries[sig] = append(s.deliveries[sig], s.step)
}

// checkOverlapStop: an older child is never asked to stop while a newer
// one that is not ready lives, but on a stop for good.
func (s *sim) checkOverlapStop(p *fproc) {
	if s.m.phase == stopping || p.dead {
		return
	}
	for _, c := range s.m.kids {
		if q := s.w.procs[c.pid]; q.start > p.start && !q.dead && !c.ready {
			s.fail("pid %d stopped while its replacement pid %d is not ready", p.pid, q.pid)
		}
	}
}

func (s *sim) dropped(text string) {
	for _, sig := range forwardable {
		if strings.Contains(text, signalName(sig)) {
			s.drops = append(s.drops, heldEntry{sig, s.step})
		}
	}
}

func (s *sim) event(e Event) {
	switch e.Kind {
	case Restarted, Ready:
		if e.Gap < 0 {
			s.fail("%v with a negative gap %v", e.Kind, e.Gap)
		}
		if c := s.m.byPid(e.Pid); c == nil || !c.ready {
			s.fail("%v for pid %d, which is not ready", e.Kind, e.Pid)
		} else {
			s.readyEnvs[c.hash] = true
		}
	case RolledBack:
		p := s.w.procs[e.Pid]
		if e.Code >= 0 && (!p.dead || p.bySent) {
			s.fail("environment of pid %d rejected for an exit it did not make by itself (dead %v, by a signal sent %v)", e.Pid, p.dead, p.bySent)
		}
	}
}

// check tests the invariants after a step.
func (s *sim) check() {
	m, w := s.m, s.w
	if len(m.kids) > 2 {
		s.fail("%d children", len(m.kids))
	}
	notReady := 0
	for _, c := range m.kids {
		if !c.ready {
			notReady++
		}
		s.checkWaits(c)
	}
	if notReady > 1 {
		s.fail("%d children not ready", notReady)
	}
	s.checkShape()
	if m.good != nil && !s.readyEnvs[hashEnv(m.good)] {
		s.fail("last known good %v was never ready", m.good)
	}
	for _, p := range w.procs {
		if p.dead || p.gotStop.IsZero() {
			continue
		}
		if w.clock.After(p.gotStop.Add(m.cfg.grace)) {
			s.fail("pid %d still alive %v after its stop signal", p.pid, w.clock.Sub(p.gotStop))
		}
		if p.stopped && p.stopStep == s.step {
			s.fail("pid %d got its stop signal but is still stopped", p.pid)
		}
	}
	if m.terminated && m.phase != ended {
		for _, p := range w.procs {
			if p.ours && !p.dead && p.gotStop.IsZero() {
				s.fail("pid %d did not get the stop signal after a terminating signal", p.pid)
			}
		}
	}
	if m.done() {
		s.checkDone()
	}
}

// shapes are the children each phase has (docs/architecture.md): their
// roles, oldest first, and whether each has passed its checks (ready and
// past its rollback window).
var shapes = map[phase]string{
	starting: "serving-", running: "serving+", restarting: "retiring", verifying: "candidate-",
	rollingBack: "retiring", overlapping: "serving+ candidate-", draining: "serving+ retiring", ended: "",
}

// checkShape: the children are what the phase says, and a change is only
// held while some child is not ready or two live.
func (s *sim) checkShape() {
	m := s.m
	want, ok := shapes[m.phase]
	if !ok {
		return // stopping: any
	}
	var got []string
	kids := slices.Clone(m.kids)
	slices.SortFunc(kids, func(a, b *child) int { return cmp.Compare(a.role, b.role) })
	for _, c := range kids {
		switch {
		case c.role == retiring:
			got = append(got, "retiring")
		case c.ready && c.lived:
			got = append(got, c.role.String()+"+")
		default:
			got = append(got, c.role.String()+"-")
		}
	}
	if g := strings.Join(got, " "); g != want {
		s.fail("children %q in %v; want %q", g, m.phase, want)
	}
	if m.phase == running && m.pending != nil {
		s.fail("a change held while running")
	}
}

// checkWaits: every wait of c has a deadline.
func (s *sim) checkWaits(c *child) {
	m := s.m
	switch {
	case c.exited:
	case c.asked() && c.graceBy.IsZero() && c.handoverBy.IsZero() && !s.w.procs[c.pid].dead:
		s.fail("pid %d asked to stop without a deadline", c.pid)
	case m.cfg.checked && !c.ready && c.role != retiring && m.phase != stopping && !c.checking():
		s.fail("pid %d not ready and not checked", c.pid)
	case c.role == candidate && !c.lived && c.liveBy.IsZero():
		s.fail("candidate pid %d without its rollback window", c.pid)
	}
}

// checkDone: when Run would return, nothing is left, and every held
// signal reached a ready child or was logged as dropped.
func (s *sim) checkDone() {
	for _, p := range s.w.procs {
		if !p.dead {
			s.fail("pid %d (a child: %v) still alive when Run returns", p.pid, p.ours)
		}
		if p.ours && !p.reaped {
			s.fail("child pid %d never reaped", p.pid)
		}
	}
	for _, e := range s.ledger {
		ok := slices.ContainsFunc(s.deliveries[e.sig], func(st int) bool { return st >= e.step }) ||
			slices.ContainsFunc(s.drops, func(d heldEntry) bool { return d.sig == e.sig && d.step >= e.step })
		if !ok {
			s.fail("%v of step %d neither reached a ready child nor was logged as dropped", signalName(e.sig), e.step)
		}
	}
}

// end stops the run as a terminating signal would, and lets the world
// run by itself (reaping, time passing) until Run would return.
func (s *sim) end() {
	s.step++
	s.m.signal(syscall.SIGTERM)
	s.check()
	for i := 0; i < 100 && s.failure == "" && !s.m.done(); i++ {
		s.reap(0)
		if d := s.m.deadline(); d.After(s.w.clock) {
			s.w.clock = d
		} else {
			s.w.clock = s.w.clock.Add(time.Second)
		}
		s.m.fire(s.w.clock)
		s.check()
	}
	if s.failure == "" && !s.m.done() {
		s.fail("Run does not return after SIGTERM (phase %v, %d children, %d leftovers)", s.m.phase, len(s.m.kids), len(s.m.left))
	}
}

// shrink finds a shorter schedule that still fails, removing steps.
func shrink(data []byte) []byte {
	best := data
	for chunk := (len(best) - 2) / 2; chunk >= 1; chunk /= 2 {
		for i := 2; i+2*chunk <= len(best); {
			cand := append(slices.Clone(best[:i]), best[i+2*chunk:]...)
			if f, _, _ := runSchedule(cand, false); f != "" {
				best = cand
			} else {
				i += 2 * chunk
			}
		}
	}
	return best
}

func reportFailure(t *testing.T, what string, data []byte) {
	t.Helper()
	small := shrink(data)
	f, _, log := runSchedule(small, true)
	cfg, handover := simConfig(at(small, 0), at(small, 1))
	t.Fatalf("%s\nshortest failing schedule (%d steps), replay with PARAMEXEC_SIM_SCHEDULE=%s:\nconfig: restart %v, rollback %v, window %v, checked %v, handover %v, on-change %v, grace %v\n%s\nfailure: %s",
		what, len(log), hex.EncodeToString(small), cfg.restart, cfg.rollback, cfg.window, cfg.checked, handover, cfg.onChange, cfg.grace, strings.Join(log, "\n"), f)
}

// TestSimulation runs random schedules, at least a million steps (a
// tenth with -short), checking the invariants after each. A failure
// prints its seed and the shortest schedule found; PARAMEXEC_SIM_SEED
// replays a seed, PARAMEXEC_SIM_SCHEDULE one schedule, and
// PARAMEXEC_SIM_STEPS sets the number of steps.
func TestSimulation(t *testing.T) {
	if hx := os.Getenv("PARAMEXEC_SIM_SCHEDULE"); hx != "" {
		data, err := hex.DecodeString(hx)
		if err != nil {
			t.Fatal(err)
		}
		if f, _, _ := runSchedule(data, false); f != "" {
			reportFailure(t, "replayed schedule fails", data)
		}
		return
	}
	budget := 1_000_000
	if testing.Short() {
		budget = 100_000
	}
	if v := os.Getenv("PARAMEXEC_SIM_STEPS"); v != "" {
		var err error
		if budget, err = strconv.Atoi(v); err != nil {
			t.Fatal(err)
		}
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("PARAMEXEC_SIM_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	coverage = map[[2]phase]int{}
	defer func() { coverage = nil }()
	steps, runs := 0, 0
	for steps < budget {
		data := make([]byte, 2+2*(20+rng.IntN(300)))
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		f, n, _ := runSchedule(data, false)
		steps += n
		runs++
		if f != "" {
			reportFailure(t, fmt.Sprintf("seed %d, run %d: %s", seed, runs, f), data)
		}
	}
	t.Logf("seed %d: %d schedules, %d steps", seed, runs, steps)
	var seen []string
	for from, tos := range transitions {
		for _, to := range tos {
			seen = append(seen, fmt.Sprintf("%v->%v: %d", from, to, coverage[[2]phase{from, to}]))
		}
	}
	slices.Sort(seen)
	t.Logf("phase changes seen from one step to the next:\n%s", strings.Join(seen, "\n"))
}

// FuzzSchedule takes the schedule as bytes.
func FuzzSchedule(f *testing.F) {
	f.Add([]byte{0x1b, 0, 0x03, 0x00, 0x10, 0x00, 0x15, 0x00, 0x0a, 0x01, 0x1c, 0x01})
	f.Add([]byte{0x0a, 0, 0x00, 0x01, 0x04, 0x00, 0x0e, 0x00, 0x1d, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		if fail, _, _ := runSchedule(data, false); fail != "" {
			reportFailure(t, fail, data)
		}
	})
}
