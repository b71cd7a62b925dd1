package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
)

// A poller holds what the polls of a Watcher's sources have read: the
// layers the environment is made of, refreshes a failed poll could not
// hand on yet, and each source's run of failures. It is the Watcher's poll
// without its timers, so that the whole poll path can be driven by a test.
type poller struct {
	sources []Source
	log     *slog.Logger

	// layers are what the last successful poll left, one per source.
	layers []Layer
	// staged holds, by source, a refresh read by a poll that failed on
	// another source. It is never handed on as it is: the next poll checks
	// its versions again, like any layer's, and reads again only if they
	// moved, so that a retry under throttling spends no second read on a
	// refresh that is still current, and a version superseded since (a
	// secret's AWSCURRENT moved on) never reaches the child.
	staged map[int]Layer
	// failures counts each source's consecutive failed checks or reads.
	// A source recovers on its own: a save of an --env-file does not
	// reset the backoff of an AWS source, nor a failed one lengthen it.
	failures []int
}

func newPoller(sources []Source, layers []Layer, log *slog.Logger) *poller {
	return &poller{
		sources:  sources,
		log:      log,
		layers:   slices.Clone(layers),
		staged:   make(map[int]Layer),
		failures: make([]int, len(sources)),
	}
}

// poll checks the sources at the given indexes and refreshes those that
// changed. It is all or nothing: if any source fails, the layers stay as
// they were, so a half-read configuration never reaches the child; what
// the others read is staged for the next poll to check.
func (p *poller) poll(ctx context.Context, which []int, discover bool) error {
	var errs []error
	read := make(map[int]Layer)
	for _, i := range which {
		layer, moved, err := p.pollSource(ctx, i, discover)
		if err != nil {
			p.failures[i]++
			errs = append(errs, fmt.Errorf("%s: %w", p.sources[i], err))
			continue
		}
		if n := p.failures[i]; n > 0 {
			p.log.Info("poll recovered", "source", p.sources[i].String(), "after_failures", n)
			p.failures[i] = 0
		}
		if moved {
			read[i] = layer
		}
	}
	if len(errs) > 0 {
		maps.Copy(p.staged, read)
		return errors.Join(errs...)
	}
	for i, layer := range read {
		p.layers[i] = layer
		delete(p.staged, i)
	}
	return nil
}

// pollSource checks source i against its staged refresh, if any, or its
// layer, and reads again what moved. moved reports a layer that differs
// from the one in p.layers.
func (p *poller) pollSource(ctx context.Context, i int, discover bool) (layer Layer, moved bool, err error) {
	src := p.sources[i]
	base, staged := p.staged[i]
	if !staged {
		base = p.layers[i]
	}
	now, err := src.Versions(ctx, base, discover)
	if err != nil {
		return Layer{}, false, err
	}
	if maps.Equal(now, base.Versions) {
		return base, staged, nil
	}
	layer, err = src.Refresh(ctx, base, now)
	if err == nil {
		err = checkValues(layer.Vars)
	}
	if err != nil {
		return Layer{}, false, err
	}
	return stamp(src, layer), true, nil
}

// worst is the longest run of failures among the given sources: the one
// the next timed poll backs off for.
func (p *poller) worst(which []int) int {
	n := 0
	for _, i := range which {
		n = max(n, p.failures[i])
	}
	return n
}
