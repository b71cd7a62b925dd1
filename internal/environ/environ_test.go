package environ

import (
	"maps"
	"slices"
	"testing"
)

func TestLookupTakesTheLastValue(t *testing.T) {
	list := []string{"A=1", "B=2", "A=3", "NOEQUALS", "E="}
	for _, tc := range []struct {
		name, want string
		ok         bool
	}{
		{"A", "3", true},
		{"B", "2", true},
		{"E", "", true},
		{"NOEQUALS", "", false},
		{"C", "", false},
		{"", "", false},
	} {
		if got, ok := Lookup(list, tc.name); got != tc.want || ok != tc.ok {
			t.Errorf("Lookup(%q) = %q, %v; want %q, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
	want := map[string]string{"A": "3", "B": "2", "E": ""}
	if got := Last(list); !maps.Equal(got, want) {
		t.Errorf("Last = %v, want %v", got, want)
	}
}

func TestFilterKeepsOrder(t *testing.T) {
	list := []string{"A=1", "DROP=x", "B=2=3", "DROP=y", "C"}
	got := Filter(list, func(name string) bool { return name != "DROP" })
	if want := []string{"A=1", "B=2=3", "C"}; !slices.Equal(got, want) {
		t.Errorf("Filter = %v, want %v", got, want)
	}
}

// Moved from fetch's TestValidVarName, with the cases of dotenv's own
// validator, which this one replaces.
func TestValidName(t *testing.T) {
	for _, s := range []string{"A", "_", "DB_HOST", "a1", "_1", "DB_PASSWORD", "_9"} {
		if !ValidName(s) {
			t.Errorf("ValidName(%q) = false", s)
		}
	}
	for _, s := range []string{"", "1A", "A-B", "A.B", "A B", "É", "Ä", "A="} {
		if ValidName(s) {
			t.Errorf("ValidName(%q) = true", s)
		}
	}
}

func TestWithoutDropsEveryEntryOfTheName(t *testing.T) {
	got := Without([]string{"A=1", "NOTIFY_SOCKET=/run/a", "B=2", "NOTIFY_SOCKET=/run/b", "NOTIFY_SOCKETX=3"}, "NOTIFY_SOCKET")
	if want := []string{"A=1", "B=2", "NOTIFY_SOCKETX=3"}; !slices.Equal(got, want) {
		t.Errorf("Without = %q, want %q", got, want)
	}
}
