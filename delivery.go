package main

import (
	"crypto/rand"
	"errors"
	"log/slog"
	"slices"
	"sync"

	"github.com/paramexec/paramexec/exec"
	"github.com/paramexec/paramexec/fetch"
	"github.com/paramexec/paramexec/internal/environ"
	"github.com/paramexec/paramexec/internal/secretfiles"
)

// A delivery takes each merged environment to the child as the sources'
// policies say (see filesflags.go): the values of sources delivered as
// files written to the files directory, those delivered only as files
// taken out of the environment, and a change turned into a restart, a
// reload signal or nothing. The watcher's hand-on (update) and the
// supervisor's starts (prepare) share it under mu.
//
// Files of sources that say restart are kept per generation (sets) and
// follow the environment a child starts with, so that a rollback restores
// them too; files of sources that say reload or none (live) always hold
// the newest poll's values (see deliverygen.go).
type delivery struct {
	cfg filesConfig
	w   *secretfiles.Writer
	log *slog.Logger
	key []byte // keys the generation ids

	mu      sync.Mutex
	last    map[string]fetch.Var         // the variables handed on last, by name
	live    map[string]string            // files of reload and none sources
	sets    map[string]map[string]string // files of restart sources, by generation
	order   []string                     // the generations in sets, oldest first
	running string                       // the generation of the child started last
	serving string                       // the generation of the child that serves
	written map[string]string            // the set the files hold now
	// failed says a change was dropped because its files could not be
	// written: the next change restarts, so that nothing dropped is lost.
	failed bool
}

// openDelivery opens the files directory; nil (and no error) when no
// source is delivered as files. Close it on every way out.
func openDelivery(cfg filesConfig, log *slog.Logger) (*delivery, error) {
	if !cfg.anyFiles() {
		return nil, nil
	}
	w, err := secretfiles.Open(cfg.dir, cfg.mode)
	if err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, errors.Join(err, w.Close())
	}
	log.Info("values delivered as files", "dir", cfg.dir)
	return &delivery{cfg: cfg, w: w, log: log, key: key, sets: map[string]map[string]string{}}, nil
}

// startDelivery opens the delivery of cfg and writes the first child's
// files; it returns the child's environment, or paramexec's exit code
// when it cannot (the files, if any, removed again).
func startDelivery(cfg filesConfig, env []string, vars []fetch.Var, log *slog.Logger) (*delivery, []string, int) {
	d, err := openDelivery(cfg, log)
	if err != nil {
		log.Error("--files-dir", "error", err)
		return nil, nil, exitUsage
	}
	if env, err = d.start(env, vars); err != nil {
		d.close()
		log.Error("cannot deliver values as files", "error", err)
		return nil, nil, exitSource
	}
	return d, env, 0
}

// close removes the files (and the directory, when paramexec made it).
func (d *delivery) close() {
	if d == nil {
		return
	}
	if err := d.w.Close(); err != nil {
		d.log.Error("cannot remove the value files", "error", err)
	}
}

// start writes the first child's files and returns its environment.
func (d *delivery) start(env []string, vars []fetch.Var) ([]string, error) {
	if d == nil {
		return env, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	snap, live := d.split(vars)
	gen := d.keep(snap)
	d.live, d.last, d.running, d.serving = live, byName(vars), gen, gen
	if err := d.write(union(snap, live)); err != nil {
		return nil, err
	}
	return d.childEnv(env, vars, gen), nil
}

// childEnv is env without the values delivered only as files, with
// NAME_FILE for each file under --name-file, and the generation of the
// restart sources' files.
func (d *delivery) childEnv(env []string, vars []fetch.Var, gen string) []string {
	var drop, pointers []string
	for _, v := range vars {
		p := d.cfg.policy(v.Rank)
		if !p.envToo() {
			drop = append(drop, v.Name)
		}
		if p.filesToo() && d.cfg.nameFile {
			// NAME_FILE is paramexec's to set: whatever held the name
			// before gives way.
			drop = append(drop, v.Name+"_FILE")
			pointers = append(pointers, v.Name+"_FILE="+d.w.Path(v.Name))
		}
	}
	drop = append(drop, generationVar)
	out := environ.Filter(env, func(name string) bool { return !slices.Contains(drop, name) })
	return append(append(out, pointers...), generationVar+"="+gen)
}

// update writes the files of u and says what the supervisor is to do: a
// restart with the child's new environment when any changed value is in
// the environment or its source says restart; a reload signal when every
// changed value is in files only and its source says reload (or none);
// nothing (send false) when every source says none. The live files are
// written at once, so that a signalled child reads them; a restart
// source's files when the child that is to read them starts (prepare).
func (d *delivery) update(u fetch.Update) (c exec.Change, send bool, err error) {
	if d == nil {
		return exec.Change{Env: u.Env, Reason: u.Reason()}, true, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	snap, live := d.split(u.Vars)
	if err := d.write(union(d.sets[d.running], live)); err != nil {
		d.failed = true
		return exec.Change{}, false, err
	}
	d.live = live
	restart, reload := d.failed, false
	d.failed = false
	now := byName(u.Vars)
	for _, name := range u.Changed {
		for _, v := range []fetch.Var{d.last[name], now[name]} {
			switch p := d.cfg.policy(v.Rank); {
			case v.Name == "" || p.action == actNone:
			case p.action == actReload && !p.envToo():
				reload = true
			default:
				restart = true
			}
		}
	}
	d.last = now
	switch {
	case restart:
		return exec.Change{Env: d.childEnv(u.Env, u.Vars, d.keep(snap)), Reason: u.Reason()}, true, nil
	case reload:
		return exec.Change{Reload: d.cfg.reloadSig, Reason: u.Reason()}, true, nil
	}
	d.log.Info("change not acted on: its sources say --on-change-of none; the next restart takes it", "changed", u.Changed)
	return exec.Change{}, false, nil
}

// byName indexes vars by name.
func byName(vars []fetch.Var) map[string]fetch.Var {
	m := make(map[string]fetch.Var, len(vars))
	for _, v := range vars {
		m[v.Name] = v
	}
	return m
}
