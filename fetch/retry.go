package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Backoff is capped exponential backoff with full jitter: the delay before
// attempt n is uniform in [0, min(Max, Base*2^n)), which spreads a fleet
// that failed together instead of having it retry in lockstep.
type Backoff struct {
	Base, Max time.Duration
}

// Delay returns the wait after the given number of consecutive failures.
func (b Backoff) Delay(failures int) time.Duration {
	ceiling := b.Max
	if failures < 30 {
		if d := b.Base << failures; d > 0 && d < b.Max {
			ceiling = d
		}
	}
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling) + 1
}

// lastTry is how much of the start-up budget the last attempt is given, at
// most a fifth of it: the last wait is shortened to leave it rather than
// skipped, so that a transient error does not end start-up before its
// budget, and a source that comes up late in the budget is still read.
const lastTry = time.Second

// LoadWithRetry loads every source, retrying the ones that fail with a
// transient error until the budget is spent. The budget is a deadline on
// ctx, so it bounds every attempt, the credentials and metadata an attempt
// waits for included: LoadWithRetry returns within a few milliseconds
// after it (the time to stop the attempts in flight), and, unless ctx
// already had an earlier deadline, not before it while errors are
// transient. A permanent error (access denied, a bad name) ends it at
// once: waiting would not change the answer. A budget of 0 is one attempt,
// bounded by the clients' own timeouts, and no retry.
func LoadWithRetry(ctx context.Context, sources []Source, budget time.Duration, log *slog.Logger) ([]Layer, error) {
	if budget <= 0 {
		layers, errs := loadEach(ctx, sources)
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		return layers, nil
	}
	reserve := min(lastTry, budget/5)
	// The caller may have set the same deadline already, to bound what
	// comes before (loading the AWS configuration); only a cancellation of
	// its context stops start-up other than by the budget.
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	deadline, _ := ctx.Deadline()
	// Quick at first: a container often starts a moment before its network
	// or its credentials are ready.
	backoff := Backoff{Base: 250 * time.Millisecond, Max: 5 * time.Second}
	layers := make([]Layer, len(sources))
	pending := allIndexes(len(sources))
	for failures := 0; ; failures++ {
		failed, transient, err := attempt(ctx, sources, pending, layers)
		if stopped(parent) {
			return nil, parent.Err()
		}
		if err != nil {
			return nil, err
		}
		if len(failed) == 0 {
			return layers, nil
		}
		// Only ever called once the deadline has passed: the message is
		// true to the letter.
		giveUp := func() error {
			return fmt.Errorf("gave up after %s of retries: %w", budget, errors.Join(transient...))
		}
		// With too little left for another attempt, the budget is waited
		// out (a nil channel), so that start-up never gives up before it.
		var next <-chan time.Time
		if wait, ok := startupWait(backoff, failures, time.Until(deadline), reserve); ok {
			for _, err := range transient {
				log.Warn("source not readable yet, retrying", "error", err, "retry_in", wait.Round(time.Millisecond))
			}
			next = time.After(wait)
		}
		select {
		case <-ctx.Done():
			if stopped(parent) {
				return nil, parent.Err()
			}
			return nil, giveUp()
		case <-next:
		}
		pending = failed
	}
}

// startupWait is the wait before the next start-up attempt, with remaining
// of the budget left: the backoff's, shortened to leave reserve for the
// last attempt. ok is false when no attempt fits any more.
func startupWait(b Backoff, failures int, remaining, reserve time.Duration) (wait time.Duration, ok bool) {
	wait = b.Delay(failures)
	switch {
	case remaining <= reserve:
		return 0, false
	case wait < remaining-reserve:
		return wait, true
	}
	return remaining - reserve, true
}

// attempt loads the sources at pending into layers and returns those that
// failed with a transient error and their errors, or a permanent error.
func attempt(ctx context.Context, sources []Source, pending []int, layers []Layer) (failed []int, transient []error, err error) {
	batch := make([]Source, len(pending))
	for j, i := range pending {
		batch[j] = sources[i]
	}
	got, errs := loadEach(ctx, batch)
	// An attempt cut short by the deadline can fail in ways that do not
	// read as transient (a credentials error wrapping it); it is still the
	// budget that ended it.
	expired := ctx.Err() != nil
	for j, i := range pending {
		switch err := errs[j]; {
		case err == nil:
			layers[i] = got[j]
		case !expired && !Transient(err):
			return nil, nil, err
		default:
			failed = append(failed, i)
			transient = append(transient, err)
		}
	}
	return failed, transient, nil
}

// stopped reports whether ctx was cancelled, rather than timed out.
func stopped(ctx context.Context) bool {
	return errors.Is(ctx.Err(), context.Canceled)
}
