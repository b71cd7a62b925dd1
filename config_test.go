package main

import (
	"slices"
	"testing"
)

func TestSplitChecks(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"tcp:8080", []string{"tcp:8080"}},
		{"tcp:8080, notify ,http://h:1/up", []string{"tcp:8080", "notify", "http://h:1/up"}},
		{"exec:/bin/check a,b,tcp:1", []string{"exec:/bin/check a,b", "tcp:1"}},
		{"http://h:1/up?x=1,2", []string{"http://h:1/up?x=1,2"}},
		{"bogus,tcp:1", []string{"bogus", "tcp:1"}},
	} {
		if got := splitChecks(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("splitChecks(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
