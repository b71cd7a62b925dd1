// Package testenv holds what the tests share about the machine they run on.
// CI machines are set up to run every test, so a missing capability fails there.
package testenv

import (
	"os"
	"testing"
)

// OnCI reports whether the tests run on CI (CI=true, as CI systems set it).
func OnCI() bool { return os.Getenv("CI") == "true" }

// SkipOrFailOnCI skips a test this machine cannot run, except on CI, where
// a test that does not run is a failure rather than a silent pass.
func SkipOrFailOnCI(t testing.TB, format string, args ...any) {
	t.Helper()
	if OnCI() {
		t.Fatalf("CI=true: "+format, args...)
	}
	t.Skipf(format, args...)
}
