package exec

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// docTable returns the rows of the table between <!-- name --> and
// <!-- /name --> in docs/architecture.md, each as the backquoted words of
// each cell.
func docTable(t *testing.T, name string) [][][]string {
	t.Helper()
	b, err := os.ReadFile("../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	start, end := strings.Index(s, "<!-- "+name+" -->"), strings.Index(s, "<!-- /"+name+" -->")
	if start < 0 || end < start {
		t.Fatalf("docs/architecture.md has no %s table", name)
	}
	word := regexp.MustCompile("`([a-zA-Z]+)`")
	var rows [][][]string
	for line := range strings.Lines(s[start:end]) {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		var row [][]string
		for _, cell := range strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|") {
			var words []string
			for _, m := range word.FindAllStringSubmatch(cell, -1) {
				words = append(words, m[1])
			}
			row = append(row, words)
		}
		rows = append(rows, row)
	}
	return rows
}

var docPhases = map[string]phase{
	"starting": starting, "running": running, "restarting": restarting, "verifying": verifying,
	"rollingBack": rollingBack, "overlapping": overlapping, "draining": draining, "stopping": stopping, "ended": ended,
}

var docRoles = map[string]role{"serving": serving, "candidate": candidate, "retiring": retiring}

// The architecture doc's tables are the code's: the legal transitions,
// and the exits the dispatcher takes.
func TestArchitectureDocTables(t *testing.T) {
	doc := map[phase][]phase{}
	for _, row := range docTable(t, "transitions") {
		from, ok := docPhases[row[0][0]]
		if !ok {
			t.Fatalf("unknown phase %q in the doc", row[0][0])
		}
		for _, w := range row[2] {
			to, ok := docPhases[w]
			if !ok {
				t.Fatalf("unknown phase %q in the doc", w)
			}
			doc[from] = append(doc[from], to)
		}
	}
	for p := range docPhases {
		from := docPhases[p]
		want, got := slices.Sorted(slices.Values(transitions[from])), slices.Sorted(slices.Values(doc[from]))
		if !slices.Equal(want, got) {
			t.Errorf("from %v: the code allows %v, the doc says %v", from, want, got)
		}
	}
	seen := map[exitKey]bool{}
	for _, row := range docTable(t, "exits") {
		k := exitKey{docPhases[row[0][0]], docRoles[row[1][0]]}
		if _, ok := exitDispatch[k]; !ok {
			t.Errorf("the doc lists the exit of a %v child in %v; the code does not take it", k.role, k.phase)
		}
		seen[k] = true
	}
	for k := range exitDispatch {
		if !seen[k] {
			t.Errorf("the code takes the exit of a %v child in %v; the doc does not list it", k.role, k.phase)
		}
	}
}
