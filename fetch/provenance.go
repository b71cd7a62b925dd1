package fetch

import (
	"log/slog"
	"strings"
)

// InheritedSource is the Source of a value paramexec was given in its own
// environment, which a fetched variable may override.
const InheritedSource = "inherited environment"

// Provenance says where a variable's value came from, for --print's
// explain view and the change log. It never holds a value: every field
// names a flag, an item or a version.
type Provenance struct {
	// Source is the flag or reference that asked for the variable, in a
	// canonical spelling of what was given: "--path /app/prd",
	// "--secret prod/db=DB_", "reference DB=ssm:/app/db",
	// "--env-file .env"; or InheritedSource.
	Source string
	// Item is what was read: a parameter's name or ARN, a secret's ARN
	// (its name when the answer carried none), or a file and line.
	Item string
	// Key is the JSON key of a secret the value was taken from.
	Key string
	// Selector is what the source follows: "latest", "label prod",
	// "version 3" (pinned), "stage AWSCURRENT", "version id …" (pinned).
	Selector string
	// Version is the version read: a parameter's version number, a
	// secret's version id, a dotenv file's keyed content hash (see
	// EnvFileSource.parse). Modified is when a parameter's version was
	// written, when the answer said.
	Version, Modified string
}

// String is the provenance in one line of words, as --print --explain
// shows it: "--path /app/prd: /app/prd/db (latest, version 3, modified …)".
func (p Provenance) String() string {
	if p.Item == "" {
		return p.Source
	}
	item := p.Item
	if p.Key != "" {
		item += " key " + p.Key
	}
	var details []string
	if p.Selector != "" {
		details = append(details, p.Selector)
	}
	if p.Version != "" {
		details = append(details, "version "+p.Version)
	}
	if p.Modified != "" {
		details = append(details, "modified "+p.Modified)
	}
	if len(details) == 0 {
		return p.Source + ": " + item
	}
	return p.Source + ": " + item + " (" + strings.Join(details, ", ") + ")"
}

// splitIdentity splits a parameter's identity (see identity) into its
// version number and the time it was written.
func splitIdentity(id string) (version, modified string) {
	version, modified, _ = strings.Cut(id, "@")
	return version, modified
}

// stamp fills in what a source left out of its variables' provenance:
// the source's name, the item (the variable's Origin) and the item's
// version when the layer keys its versions by Origin (as a source that
// names its items by ARN does). The variables are copied, so that a layer
// a source keeps (a read-once file's) is never written to.
func stamp(src Source, layer Layer) Layer {
	vars := make([]Var, len(layer.Vars))
	for i, v := range layer.Vars {
		if v.From.Source == "" {
			v.From.Source = src.String()
		}
		if v.From.Item == "" {
			v.From.Item = v.Origin
		}
		if v.From.Version == "" && v.From.Modified == "" {
			// A parameter's identity (the only version with an "@")
			// splits into its number and its time.
			v.From.Version, v.From.Modified = splitIdentity(layer.Versions[v.Origin])
		}
		vars[i] = v
	}
	layer.Vars = vars
	return layer
}

// logChanges writes one line for each changed variable: its source, item
// and old and new version, never a value. before and after are Merge's
// effective variables; changed names those that differ (diffVars).
func logChanges(log *slog.Logger, before, after []Var, changed []string) {
	old := byName(before)
	now := byName(after)
	for _, name := range changed {
		o, hadOld := old[name]
		n, hasNew := now[name]
		attrs := []any{"variable", name}
		switch {
		case !hadOld:
			attrs = append(attrs, "change", "added")
			attrs = append(attrs, provenanceAttrs("", n.From)...)
			attrs = append(attrs, "new_version", n.From.Version)
		case !hasNew:
			attrs = append(attrs, "change", "removed")
			attrs = append(attrs, provenanceAttrs("", o.From)...)
			attrs = append(attrs, "old_version", o.From.Version)
		default:
			attrs = append(attrs, "change", "updated")
			attrs = append(attrs, updateAttrs(o.From, n.From)...)
		}
		log.Info("variable changed", attrs...)
	}
}

// updateAttrs names the new provenance and, where the old one differs in
// source or item (another source now wins, or no longer does), the old one
// too; the versions always, old and new. Two versions with the same number
// (a parameter deleted and created again) are told apart by when they were
// written.
func updateAttrs(o, n Provenance) []any {
	attrs := provenanceAttrs("", n)
	if o.Source != n.Source || o.Item != n.Item || o.Key != n.Key {
		attrs = append(attrs, provenanceAttrs("old_", o)...)
	}
	ov, nv := o.Version, n.Version
	if ov == nv && o.Modified != n.Modified {
		ov, nv = ov+" (modified "+o.Modified+")", nv+" (modified "+n.Modified+")"
	}
	return append(attrs, "old_version", ov, "new_version", nv)
}

// provenanceAttrs are p's source, item and key as log attributes, each
// name after prefix, the empty ones left out.
func provenanceAttrs(prefix string, p Provenance) []any {
	var attrs []any
	for _, f := range []struct{ name, value string }{
		{"source", p.Source}, {"item", p.Item}, {"key", p.Key},
	} {
		if f.value != "" {
			attrs = append(attrs, prefix+f.name, f.value)
		}
	}
	return attrs
}

func byName(vars []Var) map[string]Var {
	m := make(map[string]Var, len(vars))
	for _, v := range vars {
		m[v.Name] = v
	}
	return m
}
