package fetch

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/paramexec/paramexec/internal/filewatch"
)

// An Update is a new environment and what differs from the previous one.
type Update struct {
	Env []string
	// Changed names the variables added, removed or given a new value,
	// sorted. Never values.
	Changed []string
	// Vars are the variables Env was made of, with their provenance and
	// rank, for a caller that delivers some of them by other means.
	Vars []Var
}

// Reason says in words what an update changed, for logs.
func (u Update) Reason() string {
	return strings.Join(u.Changed, ", ") + " changed"
}

// Watcher polls sources for new versions and reports each new environment.
type Watcher struct {
	Sources    []Source // as given to LoadWithRetry
	Inherited  []string // the environment the sources are merged over
	NoOverride bool
	// Interval is the mean time between polls; every wait is jittered so
	// that a fleet started together spreads its calls out.
	Interval time.Duration
	// DiscoverEvery makes every Nth poll list paths to find added
	// parameters; the polls between only check the versions of known names.
	DiscoverEvery int
	// Debounce folds the burst of events a save makes into one change of
	// the --env-file files, each of which (a regular file among Sources) is
	// watched for edits between polls.
	Debounce time.Duration
	// Settle holds a change until the polls have seen no further change for
	// this long, polling faster meanwhile (see settler.pollEvery), so that
	// edits made one after another reach onUpdate as one update; at most
	// SettleMax from the first change (zero: four times Settle). Splay then
	// holds it a random time in [0, Splay) more, so that a fleet that saw
	// a change at once does not act on it at once. Changes seen while a
	// change is held join it. All zero, each change is handed on at once.
	Settle, SettleMax, Splay time.Duration
	Log                      *slog.Logger

	clock clock // nil: the real one
}

// Run polls until ctx is done, starting from the layers LoadWithRetry returned
// for w.Sources. Each time the merged environment differs from the last
// one handed on, it calls onUpdate, which may block: at once, or with
// Settle or Splay once the settler says so. A failed or partial poll never
// reaches onUpdate. It returns ctx's error; a file watch that fails only
// leaves the polls to see edits.
func (w *Watcher) Run(ctx context.Context, layers []Layer, onUpdate func(context.Context, Update)) error {
	log := w.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := w.newRun(layers, log, onUpdate)
	var stopFiles func()
	r.fileEvents, r.fileErr, stopFiles = w.watchFiles(ctx, log)
	defer stopFiles()
	defer r.stop()
	for {
		if err := r.step(ctx); err != nil {
			return err
		}
	}
}

// newRun is the state of a Run starting from layers, its first poll due.
func (w *Watcher) newRun(layers []Layer, log *slog.Logger, onUpdate func(context.Context, Update)) *run {
	r := &run{w: w, log: log, onUpdate: onUpdate, polls: newPoller(w.Sources, layers, log), clock: w.clock}
	if r.clock == nil {
		r.clock = realClock{}
	}
	_, r.current = Merge(w.Inherited, layers, w.NoOverride)
	r.handed = r.current
	r.timer = r.clock.NewTimer(w.firstWait())
	r.hold, r.holdTimer = w.newSettler(r.clock, log)
	return r
}

// stop stops the run's timers.
func (r *run) stop() {
	r.timer.Stop()
	r.holdTimer.Stop()
}

// A run is the state of one Watcher.Run between its steps.
type run struct {
	w        *Watcher
	log      *slog.Logger
	onUpdate func(context.Context, Update)
	polls    *poller
	clock    clock

	current []Var // the variables the polls read last
	handed  []Var // what onUpdate was last given
	count   int   // timed polls made, for DiscoverEvery

	timer, holdTimer timer
	hold             *settler
	fileEvents       <-chan []string
	fileErr          <-chan error
}

// step waits for the next thing to do (a timed poll, a file event, the
// settler's deadline) and does it. It returns ctx's error once ctx is done.
func (r *run) step(ctx context.Context) error {
	w := r.w
	var which []int
	discover, timed := false, false
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-r.fileErr:
		// The file watch only makes edits quicker; polling goes on.
		r.fileErr, r.fileEvents = nil, nil
		r.log.Warn("file watch stopped; edits to --env-file files are seen at the next poll", "error", err, "interval", w.Interval)
		return nil
	case paths := <-r.fileEvents:
		which = w.fileSources(paths)
		r.log.Debug("file changed", "files", paths)
	case <-r.timer.C():
		r.count++
		discover = w.DiscoverEvery > 0 && r.count%w.DiscoverEvery == 0
		which, timed = allIndexes(len(w.Sources)), true
	case <-holdC(r.hold, r.holdTimer):
		if r.hold.expired(r.clock.Now()) {
			r.handed = w.handOn(ctx, r.polls.layers, r.handed, r.log, r.onUpdate)
		}
		rearm(r.clock, r.hold, r.holdTimer)
		return nil
	}
	began := r.clock.Now()
	pollCtx, cancel := r.clock.WithTimeout(ctx, w.pollTimeout())
	err := r.polls.poll(pollCtx, which, discover)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.failed(err, which, timed)
		return nil
	}
	if timed {
		// Polls start an interval apart, not an interval after the last
		// one ended, so a long poll does not stretch the wait for a
		// change; but never closer than half an interval.
		period := r.hold.pollEvery(w.wait())
		r.timer.Reset(max(period-r.clock.Now().Sub(began), period/2))
	}
	r.polled(ctx, began, which, discover)
	return nil
}

// failed logs a failed poll. Only a timed poll backs off: a poll made for
// a file event leaves the timed polls' schedule alone, and the backoff is
// that of the sources that failed, each counting its own failures.
func (r *run) failed(err error, which []int, timed bool) {
	attrs := []any{"error", err}
	if code := errorCode(err); code != "" {
		attrs = append(attrs, "code", code)
	}
	if timed {
		wait := r.w.retryWait(max(1, r.polls.worst(which)))
		attrs = append(attrs, "retry_in", wait.Round(time.Millisecond))
		r.timer.Reset(wait)
	}
	msg := "poll failed; keeping the current environment"
	if r.fileEvents != nil {
		// A broken file is fixed by saving it again, and the file
		// watch reads it then, without waiting for retry_in.
		msg += " until the next poll, or the next save of an --env-file"
	}
	r.log.Warn(msg, attrs...)
}

// polled takes what a successful poll read: a change goes to the settler,
// and quiet may release what it holds.
func (r *run) polled(ctx context.Context, began time.Time, which []int, discover bool) {
	_, effective := Merge(r.w.Inherited, r.polls.layers, r.w.NoOverride)
	changed := diffVars(r.current, effective)
	if len(changed) == 0 {
		r.log.Debug("poll: no change", "discover", discover)
		// Quiet is the word of a poll of every source: a timed one, or a
		// file event's when the files are all there is.
		if len(which) == len(r.w.Sources) && r.hold.quiet(began) {
			r.handed = r.w.handOn(ctx, r.polls.layers, r.handed, r.log, r.onUpdate)
		}
		rearm(r.clock, r.hold, r.holdTimer)
		return
	}
	r.current = effective
	if r.hold.seen(began, changed) {
		r.handed = r.w.handOn(ctx, r.polls.layers, r.handed, r.log, r.onUpdate)
	} else if r.hold.state == settling {
		r.timer.Reset(r.hold.pollEvery(r.w.wait()))
	}
	rearm(r.clock, r.hold, r.holdTimer)
}

// watchFiles starts the file watch on the regular --env-file files among
// the sources, if any (one read once, a pipe say, cannot change). It is an
// accelerator: when it cannot start (inotify instances used up, say)
// polling still sees every edit, later, and a warning says so. events and
// failed are nil when nothing is watched; failed reports a watch that
// stopped. stop ends the watch and waits for it.
func (w *Watcher) watchFiles(ctx context.Context, log *slog.Logger) (events <-chan []string, failed <-chan error, stop func()) {
	var paths []string
	for _, src := range w.Sources {
		if f, ok := src.(*EnvFileSource); ok && !f.ReadOnce() {
			paths = append(paths, f.Path)
		}
	}
	if len(paths) == 0 {
		return nil, nil, func() {}
	}
	fw, err := filewatch.New(paths, w.Debounce, log)
	if err != nil {
		log.Warn("cannot watch --env-file files; edits are seen at the next poll", "error", err, "interval", w.Interval)
		return nil, nil, func() {}
	}
	fwCtx, cancel := context.WithCancel(ctx)
	ev := make(chan []string, 1)
	errc := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := fw.Run(fwCtx, ev); fwCtx.Err() == nil {
			errc <- err
		}
	}()
	return ev, errc, func() {
		cancel()
		<-done
		fw.Close()
	}
}

// handOn gives onUpdate the environment layers make, named by what differs
// from handed, the one it was given last, and returns the new one. Changes
// seen while a change was held may have undone it: then nothing is handed
// on.
func (w *Watcher) handOn(ctx context.Context, layers []Layer, handed []Var, log *slog.Logger, onUpdate func(context.Context, Update)) []Var {
	env, effective := Merge(w.Inherited, layers, w.NoOverride)
	changed := diffVars(handed, effective)
	if len(changed) == 0 {
		log.Info("the changes seen were undone while held; nothing to hand on")
		return handed
	}
	log.Info("change detected", "changed", changed)
	logChanges(log, handed, effective, changed)
	onUpdate(ctx, Update{Env: env, Changed: changed, Vars: effective})
	return effective
}

// fileSources returns the indexes of the dotenv sources for paths.
func (w *Watcher) fileSources(paths []string) []int {
	var out []int
	for i, src := range w.Sources {
		if f, ok := src.(*EnvFileSource); ok && slices.Contains(paths, f.Path) {
			out = append(out, i)
		}
	}
	return out
}

// firstWait spreads the first poll over [Interval/2, 3*Interval/2): a fleet
// deployed at once must not poll in lockstep from then on.
func (w *Watcher) firstWait() time.Duration {
	return w.Interval/2 + rand.N(w.Interval)
}

// retryWait is the wait after the given number of consecutive failed
// polls: at least an interval, plus full jitter over a span that doubles
// with each failure up to eight intervals. Most failures are throttling,
// and a fleet that retried sooner than it polls would ask for more of the
// quota exactly when it is spent; the fleet benchmark saw instances that
// retried within the interval double their rate and never converge.
func (w *Watcher) retryWait(failures int) time.Duration {
	return w.Interval + Backoff{Base: w.Interval, Max: 8 * w.Interval}.Delay(failures-1)
}

// pollTimeout bounds one poll, whatever hangs inside it (a call, a
// credentials refresh): it is a failed poll, logged and retried, rather than
// a watcher stalled without a word. One interval, so that a poll ends before
// the next is due, but at least 30 s, time for a thousand names' hundred
// calls on a slow link, and at most 2 minutes.
func (w *Watcher) pollTimeout() time.Duration {
	return min(max(w.Interval, 30*time.Second), 2*time.Minute)
}

// wait is Interval with ±10% jitter.
func (w *Watcher) wait() time.Duration {
	spread := w.Interval / 5
	if spread <= 0 {
		return w.Interval
	}
	return w.Interval - spread/2 + rand.N(spread)
}

func allIndexes(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// diffVars names the variables that were added, removed or changed value.
func diffVars(before, after []Var) []string {
	old := make(map[string]string, len(before))
	for _, v := range before {
		old[v.Name] = v.Value
	}
	var changed []string
	for _, v := range after {
		if prev, ok := old[v.Name]; !ok || prev != v.Value {
			changed = append(changed, v.Name)
		}
		delete(old, v.Name)
	}
	for name := range old {
		changed = append(changed, name)
	}
	slices.Sort(changed)
	return changed
}
