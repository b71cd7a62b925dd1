package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
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
	layers = slices.Clone(layers)
	_, current := Merge(w.Inherited, layers, w.NoOverride)

	fileEvents, fileErr, stopFiles := w.watchFiles(ctx, log)
	defer stopFiles()

	timer := time.NewTimer(w.firstWait())
	defer timer.Stop()
	hold, holdTimer := w.newSettler(log)
	defer holdTimer.Stop()
	handed := current // what onUpdate was last given
	var polls, failures int
	pending := make(map[int]map[string]string)
	for {
		var which []int
		discover := false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-fileErr:
			// The file watch only makes edits quicker; polling goes on.
			fileErr, fileEvents = nil, nil
			log.Warn("file watch stopped; edits to --env-file files are seen at the next poll", "error", err, "interval", w.Interval)
			continue
		case paths := <-fileEvents:
			which = w.fileSources(paths)
			log.Debug("file changed", "files", paths)
		case <-timer.C:
			polls++
			discover = w.DiscoverEvery > 0 && polls%w.DiscoverEvery == 0
			which = allIndexes(len(w.Sources))
		case <-holdC(hold, holdTimer):
			if hold.expired(time.Now()) {
				handed = w.handOn(ctx, layers, handed, log, onUpdate)
			}
			rearm(hold, holdTimer)
			continue
		}
		began := time.Now()
		pollCtx, cancel := context.WithTimeout(ctx, w.pollTimeout())
		next, err := w.poll(pollCtx, layers, which, discover, pending)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			failures++
			wait := w.retryWait(failures)
			attrs := []any{"error", err}
			if code := errorCode(err); code != "" {
				attrs = append(attrs, "code", code)
			}
			attrs = append(attrs, "retry_in", wait.Round(time.Millisecond))
			msg := "poll failed; keeping the current environment"
			if fileEvents != nil {
				// A broken file is fixed by saving it again, and the file
				// watch reads it then, without waiting for retry_in.
				msg += " until the next poll, or the next save of an --env-file"
			}
			log.Warn(msg, attrs...)
			timer.Reset(wait)
			continue
		}
		if failures > 0 {
			log.Info("poll recovered", "after_failures", failures)
			failures = 0
		}
		full := which != nil && len(which) == len(w.Sources)
		if full {
			// Polls start an interval apart, not an interval after the last
			// one ended, so a long poll does not stretch the wait for a
			// change; but never closer than half an interval.
			period := hold.pollEvery(w.wait())
			timer.Reset(max(period-time.Since(began), period/2))
		}
		layers = next
		_, effective := Merge(w.Inherited, layers, w.NoOverride)
		changed := diffVars(current, effective)
		if len(changed) == 0 {
			log.Debug("poll: no change", "discover", discover)
			if full && hold.quiet(began) {
				handed = w.handOn(ctx, layers, handed, log, onUpdate)
			}
			rearm(hold, holdTimer)
			continue
		}
		current = effective
		if hold.seen(began, changed) {
			handed = w.handOn(ctx, layers, handed, log, onUpdate)
		} else if hold.state == settling {
			timer.Reset(hold.pollEvery(w.wait()))
		}
		rearm(hold, holdTimer)
	}
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
	onUpdate(ctx, Update{Env: env, Changed: changed})
	return effective
}

// poll checks the sources at the given indexes and refreshes those that
// changed. It is all or nothing: if any source fails, the old layers stay,
// so a half-read configuration never reaches the child.
//
// pending holds the sources seen to change whose refresh has not yet taken
// effect, with the versions that were seen. They are read again without
// being checked again, so that a retry under throttling or faults spends
// its calls on the refresh alone.
func (w *Watcher) poll(ctx context.Context, layers []Layer, which []int, discover bool, pending map[int]map[string]string) ([]Layer, error) {
	var errs []error
	refreshed := make(map[int]Layer)
	for _, i := range which {
		src := w.Sources[i]
		now, seen := pending[i]
		if !seen {
			var err error
			if now, err = src.Versions(ctx, layers[i], discover); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", src, err))
				continue
			}
			if maps.Equal(now, layers[i].Versions) {
				continue
			}
			pending[i] = now
		}
		layer, err := src.Refresh(ctx, layers[i], now)
		if err == nil {
			err = checkValues(layer.Vars)
		}
		if err != nil {
			if errors.Is(err, errStale) {
				delete(pending, i) // what the check saw is gone: check again
			}
			errs = append(errs, fmt.Errorf("%s: %w", src, err))
			continue
		}
		refreshed[i] = layer
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(refreshed) == 0 {
		return layers, nil
	}
	next := slices.Clone(layers)
	for i, layer := range refreshed {
		next[i] = layer
		delete(pending, i)
	}
	return next, nil
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
