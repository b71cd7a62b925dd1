package main

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"

	"github.com/paramexec/paramexec/exec"
	"github.com/paramexec/paramexec/fetch"
	"github.com/paramexec/paramexec/internal/environ"
	"github.com/paramexec/paramexec/internal/secretfiles"
)

// generationVar tells a child started for a change of values delivered
// only as files which set of files it was started with. It also makes
// that child's environment differ from its predecessor's, which the
// supervisor needs to see a change at all.
const generationVar = "PARAMEXEC_FILES_GENERATION"

// A delivery takes each merged environment to the child as the sources'
// policies say (see filesflags.go): the values of sources delivered as
// files written to the files directory, those delivered only as files
// taken out of the environment, and a change turned into a restart, a
// reload signal or nothing. It is used by one goroutine at a time: the
// start-up, then the watcher's hand-on.
type delivery struct {
	cfg     filesConfig
	w       *secretfiles.Writer
	log     *slog.Logger
	last    map[string]fetch.Var // the variables handed on last, by name
	written map[string]string    // the set the files hold now
	gen     int                  // restarts for files-only values so far
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
	log.Info("values delivered as files", "dir", cfg.dir)
	return &delivery{cfg: cfg, w: w, log: log}, nil
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

// start writes the files of the first child and returns its environment.
func (d *delivery) start(env []string, vars []fetch.Var) ([]string, error) {
	if d == nil {
		return env, nil
	}
	if err := d.write(vars); err != nil {
		return nil, err
	}
	d.last = byName(vars)
	return d.childEnv(env, vars), nil
}

// write makes the files hold the values of vars whose source is delivered
// as files, as one set; an unchanged set is not written again.
func (d *delivery) write(vars []fetch.Var) error {
	set := map[string]string{}
	for _, v := range vars {
		if d.cfg.policy(v.Rank).filesToo() {
			set[v.Name] = v.Value
		}
	}
	if d.written != nil && maps.Equal(set, d.written) {
		return nil
	}
	if err := d.w.Write(set); err != nil {
		return fmt.Errorf("writing the value files: %w", err)
	}
	d.written = set
	return nil
}

// childEnv is env without the values delivered only as files, with
// NAME_FILE for each file under --name-file, and the generation after a
// restart for files-only values.
func (d *delivery) childEnv(env []string, vars []fetch.Var) []string {
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
	out := environ.Filter(env, func(name string) bool { return !slices.Contains(drop, name) })
	out = append(out, pointers...)
	if d.gen > 0 {
		out = append(environ.Without(out, generationVar), generationVar+"="+strconv.Itoa(d.gen))
	}
	return out
}

// update writes the files of u and says what the supervisor is to do: a
// restart with the child's new environment when any changed value is in
// the environment or its source says restart; a reload signal when every
// changed value is in files only and its source says reload (or none);
// nothing (send false) when every source says none. The files are
// written first: a restarted child reads the new set, and so does one
// signalled.
func (d *delivery) update(u fetch.Update) (c exec.Change, send bool, err error) {
	if d == nil {
		return exec.Change{Env: u.Env, Reason: u.Reason()}, true, nil
	}
	if err := d.write(u.Vars); err != nil {
		d.failed = true
		return exec.Change{}, false, err
	}
	now := byName(u.Vars)
	restart, filesOnly, reload := d.failed, d.failed, false
	d.failed = false
	for _, name := range u.Changed {
		for _, v := range []fetch.Var{d.last[name], now[name]} {
			if v.Name == "" {
				continue
			}
			p := d.cfg.policy(v.Rank)
			switch {
			case p.action == actNone:
			case p.action == actReload && !p.envToo():
				reload = true
			default:
				restart = true
				filesOnly = filesOnly || !p.envToo()
			}
		}
	}
	d.last = now
	switch {
	case restart:
		if filesOnly {
			d.gen++
		}
		return exec.Change{Env: d.childEnv(u.Env, u.Vars), Reason: u.Reason()}, true, nil
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
