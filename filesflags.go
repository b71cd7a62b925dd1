package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strings"
	"syscall"

	"github.com/paramexec/paramexec/exec"
	"github.com/paramexec/paramexec/internal/secretfiles"
)

// How a source's values reach the child. The zero value is today's: the
// environment only.
type deliverHow int

const (
	deliverEnv deliverHow = iota
	deliverFiles
	deliverBoth
	// deliverDocument is deliverFiles with a JSON secret kept whole: one
	// file holding the document, not one per key.
	deliverDocument
)

// What a change of a source's values does. The zero value is today's: a
// restart (or whatever --on-change says).
type changeAction int

const (
	actRestart changeAction = iota
	actReload
	actNone
)

// A sourcePolicy is what --deliver and --on-change-of say of one source.
type sourcePolicy struct {
	how    deliverHow
	action changeAction
}

// filesToo and envToo say where the source's values go.
func (p sourcePolicy) filesToo() bool { return p.how != deliverEnv }
func (p sourcePolicy) envToo() bool   { return p.how == deliverEnv || p.how == deliverBoth }

// filesFlags are the flags of values as files, as given.
type filesFlags struct {
	dir        string
	mode       string
	deliver    listFlag
	onChangeOf listFlag
	reloadSig  string
	nameFile   bool
	// given names the flags set by hand (or by their variable), so that
	// one that would do nothing is refused rather than ignored.
	given map[string]bool
}

// register adds the flags to fs, with their defaults.
func (f *filesFlags) register(fs *flag.FlagSet) {
	f.mode, f.reloadSig, f.given = "0400", "HUP", map[string]bool{}
	fs.StringVar(&f.dir, "files-dir", "", "")
	fs.Func("files-mode", "", f.set(&f.mode, "files-mode"))
	fs.Var(&f.deliver, "deliver", "")
	fs.Var(&f.onChangeOf, "on-change-of", "")
	fs.Func("reload-signal", "", f.set(&f.reloadSig, "reload-signal"))
	fs.BoolVar(&f.nameFile, "name-file", false, "")
}

// set is a flag's Set that keeps the value in dst and notes it was given.
func (f *filesFlags) set(dst *string, name string) func(string) error {
	return func(v string) error {
		*dst, f.given[name] = v, true
		return nil
	}
}

// filesConfig is the parsed form: policies by source index (the order of
// config.sources, which is each fetched variable's Rank).
type filesConfig struct {
	dir       string
	mode      fs.FileMode
	policies  map[int]sourcePolicy
	reloadSig syscall.Signal
	nameFile  bool
	// modeGiven and sigGiven say --files-mode and --reload-signal were
	// given: see checkFiles.
	modeGiven, sigGiven bool
}

// policy is the policy of the source of rank (a reference's negative
// rank has none: it is delivered and acted on as today).
func (c *filesConfig) policy(rank int) sourcePolicy { return c.policies[rank] }

// anyFiles reports whether some source is delivered as files.
func (c *filesConfig) anyFiles() bool {
	for _, p := range c.policies {
		if p.filesToo() {
			return true
		}
	}
	return false
}

// finish parses f against the source flags.
func (f *filesFlags) finish(sources []sourceFlag) (filesConfig, error) {
	c := filesConfig{dir: f.dir, policies: map[int]sourcePolicy{}, nameFile: f.nameFile, modeGiven: f.given["files-mode"], sigGiven: f.given["reload-signal"]}
	switch f.mode {
	case "0400", "400":
		c.mode = 0o400
	case "0600", "600":
		c.mode = 0o600
	default:
		return c, fmt.Errorf("--files-mode %q: want 0400 or 0600", f.mode)
	}
	var err error
	if c.reloadSig, err = exec.ParseSignal(f.reloadSig); err != nil {
		return c, fmt.Errorf("--reload-signal: %w", err)
	}
	hows := map[string]deliverHow{"env": deliverEnv, "files": deliverFiles, "both": deliverBoth, "document": deliverDocument}
	if err := eachSelector("--deliver", f.deliver, sources, func(word string, ranks []int) error {
		how, ok := hows[word]
		if !ok {
			return errors.New("want env, files, both or document before the source")
		}
		for _, r := range ranks {
			if how == deliverDocument && sources[r].kind != "secret" {
				return errors.New("document keeps a JSON secret whole: a --secret only")
			}
			p := c.policies[r]
			p.how = how
			c.policies[r] = p
		}
		return nil
	}); err != nil {
		return c, err
	}
	acts := map[string]changeAction{"restart": actRestart, "reload": actReload, "none": actNone}
	err = eachSelector("--on-change-of", f.onChangeOf, sources, func(word string, ranks []int) error {
		act, ok := acts[word]
		if !ok {
			return errors.New("want restart, reload or none before the source")
		}
		for _, r := range ranks {
			p := c.policies[r]
			p.action = act
			c.policies[r] = p
		}
		return nil
	})
	return c, err
}

// eachSelector parses each WORD:KIND:VALUE of a per-source flag and calls
// set with WORD and the indexes of the sources KIND:VALUE names. A source
// named twice by one flag is ambiguous and refused.
func eachSelector(flagName string, items []string, sources []sourceFlag, set func(word string, ranks []int) error) error {
	seen := map[string]bool{}
	for _, item := range items {
		word, sel, ok := strings.Cut(item, ":")
		if !ok {
			return fmt.Errorf("%s %q: want WORD:SOURCE, the source as KIND:VALUE, e.g. files:secret:prod/tls", flagName, item)
		}
		ranks, err := selectSources(sel, sources)
		if err != nil {
			return fmt.Errorf("%s %q: %w", flagName, item, err)
		}
		if seen[sel] {
			return fmt.Errorf("%s %q: %s is named twice", flagName, item, sel)
		}
		seen[sel] = true
		if err := set(word, ranks); err != nil {
			return fmt.Errorf("%s %q: %w", flagName, item, err)
		}
	}
	return nil
}

// selectSources finds the source flags KIND:VALUE names: KIND a source
// flag's name, VALUE its value exactly as given. The value may hold ":"
// and "=" itself (an ARN, a prefix): only the first ":" splits.
func selectSources(sel string, sources []sourceFlag) ([]int, error) {
	kind, value, ok := strings.Cut(sel, ":")
	if !ok || !isSourceKind(kind) {
		return nil, fmt.Errorf("the source is KIND:VALUE, KIND one of %s", strings.Join(sourceKinds, ", "))
	}
	var ranks []int
	for i, s := range sources {
		if s.kind == kind && s.value == value {
			ranks = append(ranks, i)
		}
	}
	if len(ranks) == 0 {
		return nil, fmt.Errorf("no --%s %s is given; name the source as its flag's value, exactly", kind, value)
	}
	return ranks, nil
}

// checkFiles refuses file settings that cannot work or say two things.
func (c *config) checkFiles() error {
	f := &c.files
	anyFiles := f.anyFiles()
	switch {
	case anyFiles && f.dir == "":
		return errors.New("--deliver files: give --files-dir, a private directory (a tmpfs) for the files")
	case !anyFiles && f.dir != "":
		return errors.New("--files-dir: no source is delivered as files; add --deliver files:KIND:VALUE")
	case !anyFiles && f.nameFile:
		return errors.New("--name-file: no source is delivered as files")
	case !anyFiles && f.modeGiven:
		return errors.New("--files-mode: no source is delivered as files")
	case f.sigGiven && !slices.ContainsFunc(slices.Collect(maps.Values(f.policies)), func(p sourcePolicy) bool { return p.action == actReload }):
		return errors.New("--reload-signal: no source says --on-change-of reload:KIND:VALUE")
	case len(f.policies) > 0 && c.onChange.Kind != exec.Restart && slices.ContainsFunc(slices.Collect(maps.Values(f.policies)), func(p sourcePolicy) bool { return p.action != actRestart }):
		return fmt.Errorf("--on-change-of: only goes with --on-change restart, not %s", c.onChange)
	}
	for i, p := range f.policies {
		s := c.sources[i]
		switch {
		case p.action == actReload && p.envToo():
			return fmt.Errorf("--on-change-of reload:%s:%s: a reload signal reaches a child that re-reads files; this source's values are in the environment, which only a restart changes: add --deliver files:%s:%s", s.kind, s.value, s.kind, s.value)
		case p.action != actRestart && c.interval == 0 && !c.print:
			return fmt.Errorf("--on-change-of %s:%s: only applies when watching; give --interval too", []string{"restart", "reload", "none"}[p.action], s.kind+":"+s.value)
		}
	}
	if f.dir != "" && !c.print {
		if err := secretfiles.CheckPrivate(f.dir); err != nil {
			return fmt.Errorf("--files-dir: %w", err)
		}
	}
	return nil
}
