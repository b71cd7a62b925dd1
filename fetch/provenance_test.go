package fetch

import (
	"context"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestChangeLogNamesSourceAndVersions: the Watcher's change log gives,
// for each changed variable, a line with its source, item (and JSON key)
// and old and new version: a parameter's new version, a secret's new
// version id, a variable another source now wins (the source it had, and
// the one it has), and variables added and removed. The log holds no value, and Update.Reason, what
// the supervisor's Change carries, stays names only.
func TestChangeLogNamesSourceAndVersions(t *testing.T) {
	u := uniq(t)
	dir := "/" + u + "/p"
	moto.PutParameter(t, dir+"/A", "a-value-1", "String")
	arn, v1 := createSecret(t, u+"/s", `{"k":"s-value-1"}`, nil)
	file := filepath.Join(t.TempDir(), "app.env")
	mustWrite(t, file, "X=x-value-1\nZ=z-value-1\n")

	clients := clientsFor(direct())
	path, err := newPathSource(dir, clients.SSM(clients.Region), 1)
	if err != nil {
		t.Fatal(err)
	}
	sources := []Source{
		&EnvFileSource{Path: file, Rank: 0},
		path,
		&secretSource{Secrets: []Secret{{ID: u + "/s", Prefix: "S_", Rank: 2}}, Clients: clients},
	}
	layers, err := loadAll(t.Context(), sources)
	if err != nil {
		t.Fatal(err)
	}
	oldX := varsOf(layers[0])["X"].From.Version

	log := &lockedBuffer{}
	w := &Watcher{Sources: sources, Interval: time.Second, DiscoverEvery: 1, Debounce: 50 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(log, nil))}
	ctx, cancel := context.WithCancel(t.Context())
	updates := make(chan Update, 10)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, layers, func(_ context.Context, u Update) { updates <- u }) }()
	defer func() {
		cancel()
		<-done
	}()

	moto.PutParameter(t, dir+"/A", "a-value-2", "String")
	v2 := moto.PutSecretValue(t, u+"/s", `{"k":"s-value-2"}`)
	moto.PutParameter(t, dir+"/X", "x-value-2", "String") // --path now wins X over the file

	want := map[string][]string{
		"A":   {`change=updated source="--path ` + dir + `" item=` + dir + `/A old_version=1 new_version=2`},
		"S_K": {`change=updated source="--secret ` + u + `/s=S_" item=` + arn + ` key=k old_version=` + v1 + ` new_version=` + v2},
		"X": {`change=updated source="--path ` + dir + `" item=` + dir + `/X`,
			`old_source="--env-file ` + file + `" old_item=` + file + `:1 old_version=` + oldX + ` new_version=1`},
		"Y": {`change=added source="--env-file ` + file + `" item=` + file + `:2 new_version=`},
		"Z": {`change=removed source="--env-file ` + file + `" item=` + file + `:2 old_version=` + oldX},
	}
	waitChangeLines(t, log, []string{"A", "S_K", "X"})
	// Then, the file's X aside (its version moves with the file's), Y
	// added and Z removed.
	mustWrite(t, file, "X=x-value-1\nY=y-value-1\n")
	lines := waitChangeLines(t, log, []string{"A", "S_K", "X", "Y", "Z"})
	for name, words := range want {
		for _, word := range words {
			if !strings.Contains(lines[name], word) {
				t.Errorf("%s: the change line does not say %s:\n%s", name, word, lines[name])
			}
		}
	}
	if strings.Contains(lines["Y"], "old_version") || strings.Contains(lines["Z"], "new_version") {
		t.Errorf("an added variable has no old version, a removed one no new one:\n%s\n%s", lines["Y"], lines["Z"])
	}
	for _, v := range []string{"a-value", "s-value", "x-value", "y-value", "z-value"} {
		if strings.Contains(log.String(), v) {
			t.Errorf("the log holds a value (%s…):\n%s", v, log.String())
		}
	}
	for len(updates) > 0 {
		u := <-updates
		if r := u.Reason(); strings.Contains(r, "version") || strings.Contains(r, "--") {
			t.Errorf("Update.Reason %q: names only, want no source or version", r)
		}
	}
}

var changeLine = regexp.MustCompile(`msg="variable changed" variable=(\S+) .*`)

// waitChangeLines waits up to 30 s, ample for the one-second polls, for a
// change line for each name, and returns the lines by name.
func waitChangeLines(t *testing.T, log *lockedBuffer, names []string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		lines := make(map[string]string)
		for _, m := range changeLine.FindAllStringSubmatch(log.String(), -1) {
			lines[m[1]] = m[0]
		}
		all := true
		for _, n := range names {
			all = all && lines[n] != ""
		}
		if all {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("no change line for each of %v within 30s:\n%s", names, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMergeRecordsOverrides: Merge says what each variable took the place
// of, lowest rank first, the inherited environment included; a reference
// resolving an inherited variable overrides nothing, and --no-override
// keeps the inherited value and records nothing.
func TestMergeRecordsOverrides(t *testing.T) {
	from := func(src string) Provenance { return Provenance{Source: src, Item: src + "-item"} }
	layers := []Layer{
		{Vars: []Var{{Name: "A", Value: "1", Rank: 0, From: from("file")}, {Name: "I", Value: "2", Rank: 0, From: from("file")}}},
		{Vars: []Var{{Name: "A", Value: "3", Rank: 1, From: from("path")}, {Name: "R", Value: "4", Rank: refRank, From: from("ref")}}},
		{Vars: []Var{{Name: "A", Value: "5", Rank: 2, From: from("secret")}}},
	}
	inherited := []string{"I=old", "R=ssm:/x"}
	_, vars := Merge(inherited, layers, false)
	got := varsOf(Layer{Vars: vars})
	if o := got["A"].Overrode; len(o) != 2 || o[0] != from("file") || o[1] != from("path") || got["A"].From != from("secret") {
		t.Errorf("A: from %v overrode %v; want from secret, over file then path", got["A"].From, o)
	}
	if o := got["I"].Overrode; len(o) != 1 || o[0].Source != InheritedSource {
		t.Errorf("I overrode %v, want the inherited environment", o)
	}
	if o := got["R"].Overrode; len(o) != 0 {
		t.Errorf("R, a reference resolved in place, overrode %v", o)
	}
	_, vars = Merge(inherited, layers, true)
	if got := varsOf(Layer{Vars: vars}); got["I"].Value != "" || len(got["A"].Overrode) != 2 {
		t.Errorf("--no-override: I %+v, A overrode %v", got["I"], got["A"].Overrode)
	}
	// The layers are not written to: Overrode lives on Merge's copies.
	for _, l := range layers {
		for _, v := range l.Vars {
			if v.Overrode != nil {
				t.Errorf("Merge wrote Overrode into the layer's %s", v.Name)
			}
		}
	}
}

// plain is a source that sets no provenance of its own, as a new source
// may not.
type plain struct{}

func (plain) String() string { return "--plain x" }
func (plain) Load(context.Context) (Layer, error) {
	return Layer{Vars: []Var{{Name: "P", Value: "p-value", Origin: "arn:p"}},
		Versions: map[string]string{"arn:p": "3@2026-01-02T03:04:05Z"}}, nil
}
func (plain) Versions(_ context.Context, last Layer, _ bool) (map[string]string, error) {
	return last.Versions, nil
}
func (p plain) Refresh(ctx context.Context, _ Layer, _ map[string]string) (Layer, error) {
	return p.Load(ctx)
}

// TestStampFillsWhatASourceLeftOut: a variable whose source set no
// provenance gets the source's name, its Origin as the item and the
// version its layer keys by Origin, a parameter identity split.
func TestStampFillsWhatASourceLeftOut(t *testing.T) {
	layers, err := loadAll(t.Context(), []Source{plain{}})
	if err != nil {
		t.Fatal(err)
	}
	want := Provenance{Source: "--plain x", Item: "arn:p", Version: "3", Modified: "2026-01-02T03:04:05Z"}
	if got := layers[0].Vars[0].From; got != want {
		t.Errorf("stamped %+v, want %+v", got, want)
	}
}
