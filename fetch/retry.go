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
	pending := make([]int, len(sources))
	for i := range pending {
		pending[i] = i
	}
	for failures := 0; ; failures++ {
		batch := make([]Source, len(pending))
		for j, i := range pending {
			batch[j] = sources[i]
		}
		got, errs := loadEach(ctx, batch)
		if stopped(parent) {
			return nil, parent.Err()
		}
		// An attempt cut short by the deadline can fail in ways that do
		// not read as transient (a credentials error wrapping it); it is
		// still the budget that ended it.
		expired := ctx.Err() != nil
		var failed []int
		var transient []error
		for j, i := range pending {
			switch err := errs[j]; {
			case err == nil:
				layers[i] = got[j]
			case !expired && !Transient(err):
				return nil, err
			default:
				failed = append(failed, i)
				transient = append(transient, err)
			}
		}
		if len(failed) == 0 {
			return layers, nil
		}
		// Only ever called once the deadline has passed: the message is
		// true to the letter.
		giveUp := func() error {
			return fmt.Errorf("gave up after %s of retries: %w", budget, errors.Join(transient...))
		}
		remaining := time.Until(deadline)
		wait := backoff.Delay(failures)
		switch {
		case remaining <= 0:
			return nil, giveUp()
		case wait < remaining-reserve:
		case remaining > reserve:
			wait = remaining - reserve
		default:
			// Too little left for another attempt: wait out the budget, so
			// that start-up never gives up before it.
			<-ctx.Done()
			if stopped(parent) {
				return nil, parent.Err()
			}
			return nil, giveUp()
		}
		for _, err := range transient {
			log.Warn("source not readable yet, retrying", "error", err, "retry_in", wait.Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			if stopped(parent) {
				return nil, parent.Err()
			}
			return nil, giveUp()
		case <-time.After(wait):
		}
		pending = failed
	}
}

// stopped reports whether ctx was cancelled, rather than timed out.
func stopped(ctx context.Context) bool {
	return errors.Is(ctx.Err(), context.Canceled)
}
