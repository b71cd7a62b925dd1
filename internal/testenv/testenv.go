// Package testenv holds what the tests share about the machine they run on.
// CI machines are set up to run every test, so a missing capability fails there.
package testenv

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

// ProcStatus returns /proc/PID/status as a map of field to value, as the
// tests that check a process's ids, capabilities and namespaces read it.
func ProcStatus(t testing.TB, pid int) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		st[k] = strings.TrimSpace(v)
	}
	return st
}
