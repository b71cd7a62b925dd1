package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"

	"github.com/paramexec/paramexec/exec"
	"github.com/paramexec/paramexec/fetch"
	"github.com/paramexec/paramexec/internal/environ"
	"github.com/paramexec/paramexec/internal/handoff"
)

// generationVar names, in the child's environment, the generation of the
// files of sources that say restart: an id keyed by a secret of this
// process, so that it tells sets apart and says nothing of their values.
// The supervisor compares environments, so a change of those files is a
// change of environment (and one that failed is known again); a child
// started again with an older environment (a rollback) gets that
// environment's files back.
const generationVar = "PARAMEXEC_FILES_GENERATION"

// keptGenerations bounds the sets kept for a rollback, which only ever
// goes back to the last environment that was ready.
const keptGenerations = 8

// split sorts the values of vars delivered as files by their source's
// action: restart (snap) or reload and none (live).
func (d *delivery) split(vars []fetch.Var) (snap, live map[string]string) {
	snap, live = map[string]string{}, map[string]string{}
	for _, v := range vars {
		switch p := d.cfg.policy(v.Rank); {
		case !p.filesToo():
		case p.action == actRestart:
			snap[v.Name] = v.Value
		default:
			live[v.Name] = v.Value
		}
	}
	return snap, live
}

// keep keeps snap as a generation and returns its id: the same set, the
// same id.
func (d *delivery) keep(snap map[string]string) string {
	mac := hmac.New(sha256.New, d.key)
	for _, name := range slices.Sorted(maps.Keys(snap)) {
		fmt.Fprintf(mac, "%d:%s%d:%s", len(name), name, len(snap[name]), snap[name])
	}
	gen := hex.EncodeToString(mac.Sum(nil)[:12])
	if _, ok := d.sets[gen]; !ok {
		d.sets[gen] = snap
		d.order = append(d.order, gen)
	}
	for i := 0; len(d.sets) > keptGenerations && i < len(d.order); {
		if old := d.order[i]; old != d.running && old != d.serving && old != gen {
			delete(d.sets, old)
			d.order = slices.Delete(d.order, i, i+1)
			continue
		}
		i++
	}
	return gen
}

// prepare, in the supervisor's PrepareEnv, makes the files those of the
// environment a child is about to start with: its generation's, and the
// newest live values.
func (d *delivery) prepare(env []string) error {
	gen, _ := environ.Lookup(env, generationVar)
	d.mu.Lock()
	defer d.mu.Unlock()
	snap, ok := d.sets[gen]
	if !ok {
		return fmt.Errorf("the value files of generation %q are no longer kept", gen)
	}
	if err := d.write(union(snap, d.live)); err != nil {
		return err
	}
	d.running = gen
	return nil
}

// attach sets sup's hooks for sockets (handoff.Attach) and, with files,
// makes each start write the child's files first.
func (d *delivery) attach(ctx context.Context, sockets *handoff.Handoff, sup *exec.Supervisor) {
	sockets.Attach(ctx, sup)
	if d == nil {
		return
	}
	next := sup.PrepareEnv
	sup.PrepareEnv = func(env []string) ([]string, error) {
		if err := d.prepare(env); err != nil || next == nil {
			return env, err
		}
		return next(env)
	}
	events := sup.OnEvent
	sup.OnEvent = func(e exec.Event) {
		d.follow(e)
		if events != nil {
			events(e)
		}
	}
}

// follow keeps the files with the child that serves. A child that became
// ready (or current, after a restart) serves with the generation it
// started with. After a rejected overlap the old child serves on: the
// candidate's start (prepare) had replaced the files with the rejected
// set, so the serving child's set comes back, with the newest live values.
// After a stop-first rollback the restored child's start already wrote
// that set, and the write is skipped as unchanged.
func (d *delivery) follow(e exec.Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case e.Kind == exec.Ready && e.Reason == "rolled back":
		d.running = d.serving
		if err := d.write(union(d.sets[d.serving], d.live)); err != nil {
			d.failed = true // the next change restarts, and writes them
			d.log.Error("cannot restore the value files of the child that serves", "pid", e.Pid, "error", err)
		}
	case e.Kind == exec.Ready, e.Kind == exec.Restarted:
		d.serving = d.running
	}
}

// union is a and b in one map; b wins.
func union(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, b)
	return out
}

// write makes the files hold set; an unchanged set is not written again.
func (d *delivery) write(set map[string]string) error {
	if d.written != nil && maps.Equal(set, d.written) {
		return nil
	}
	if err := d.w.Write(set); err != nil {
		return fmt.Errorf("writing the value files: %w", err)
	}
	d.written = set
	return nil
}
