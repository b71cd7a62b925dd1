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

// LoadWithRetry loads every source, retrying the ones that fail with a
// transient error until budget has passed. A permanent error (access
// denied, a bad name) ends it at once: waiting would not change the answer.
func LoadWithRetry(ctx context.Context, sources []Source, budget time.Duration, log *slog.Logger) ([]Layer, error) {
	deadline := time.Now().Add(budget)
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
		var failed []int
		var transient []error
		for j, i := range pending {
			switch err := errs[j]; {
			case err == nil:
				layers[i] = got[j]
			case !Transient(err):
				return nil, err
			default:
				failed = append(failed, i)
				transient = append(transient, err)
			}
		}
		if len(failed) == 0 {
			return layers, nil
		}
		wait := backoff.Delay(failures)
		if time.Now().Add(wait).After(deadline) {
			return nil, fmt.Errorf("gave up after %s of retries: %w", budget, errors.Join(transient...))
		}
		for _, err := range transient {
			log.Warn("source not readable yet, retrying", "error", err, "retry_in", wait.Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		pending = failed
	}
}
