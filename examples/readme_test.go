package examples_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// readmeSection is the text of the README's "## title" section, up to the
// next section of the same level.
func readmeSection(t *testing.T, title string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n## "+title+"\n")
	if !ok {
		t.Fatalf("README.md has no ## %s section", title)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	return section
}

// The README's table of flags is what a newcomer reads instead of --help:
// its first column names every flag config.go defines, and no other.
func TestREADMEFlagTableListsEveryFlag(t *testing.T) {
	flags := configFlags(t)
	section := readmeSection(t, "Flags")
	listed := map[string]bool{}
	for _, row := range regexp.MustCompile(`(?m)^\| (.*?) \|`).FindAllStringSubmatch(section, -1) {
		for _, m := range regexp.MustCompile("`--([a-z][a-z0-9-]*)").FindAllStringSubmatch(row[1], -1) {
			listed[m[1]] = true
		}
	}
	for name := range flags {
		if !listed[name] {
			t.Errorf("the README's flag table lacks --%s", name)
		}
	}
	for name := range listed {
		if _, ok := flags[name]; !ok {
			t.Errorf("the README's flag table names --%s, which config.go does not define", name)
		}
	}
}

// The README's first two commands are the ones CI runs: the demo, and the
// test command, a line of .ci/run as it stands. A README that drifted from CI would send a
// newcomer down a path nobody checks.
func TestREADMETopCommandsAreCIs(t *testing.T) {
	section := readmeSection(t, "Two commands for a newcomer")
	blocks := regexp.MustCompile("(?s)```\n(.*?)\n```").FindAllStringSubmatch(section, -1)
	if len(blocks) < 2 {
		t.Fatalf("want two command blocks in the README's first section, found %d", len(blocks))
	}
	if got := blocks[0][1]; got != "./examples/demo.sh" {
		t.Errorf("the README's first command is %q, want ./examples/demo.sh", got)
	}
	ci, err := os.ReadFile(filepath.Join(repoRoot(t), ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	test := blocks[1][1]
	if !slices.Contains(strings.Split(string(ci), "\n"), test) {
		t.Errorf("the README's test command is %q, which .ci/run does not run as a line of its own", test)
	}
}
