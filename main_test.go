package main

import (
	"os"
	"runtime/debug"
	"testing"

	"github.com/paramexec/paramexec/internal/harness"
	"github.com/paramexec/paramexec/internal/motoserver"
)

// The end-to-end tests live in e2e/; the root keeps the in-process tests
// and scratch_e2e_test.go, which runs on the same harness (the log scan
// included) through the few names below until it moves to e2e/container.
func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// moto is harness.Moto, set by parallelE2E: Main starts moto only once
// the package's variables are initialised.
var moto *motoserver.Server

func parallelE2E(t *testing.T) {
	t.Helper()
	moto = harness.Moto
	harness.ParallelE2E(t)
}

type (
	record     = harness.Record
	syncBuffer = harness.SyncBuffer
)

var (
	uniquePath  = harness.UniquePath
	val         = harness.Val
	readRecords = harness.ReadRecords
	starts      = harness.Starts
	waitFor     = harness.WaitFor
	logScan     = scan{}
)

// scan is harness.LogScan under the name the root's test uses.
type scan struct{}

func (scan) add(s string) { harness.LogScan.Add(s) }

func TestVersionOf(t *testing.T) {
	vcs := func(kv ...string) *debug.BuildInfo {
		info := &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}
		for i := 0; i+1 < len(kv); i += 2 {
			info.Settings = append(info.Settings, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return info
	}
	tagged := &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}
	for _, tc := range []struct {
		name    string
		stamped string
		info    *debug.BuildInfo
		want    string
	}{
		{"ldflags wins", "v9.9.9", tagged, "v9.9.9"},
		{"module version", "", tagged, "v1.4.0"},
		{"commit and time", "", vcs("vcs.revision", "6689fb3c07724a1b9d2e", "vcs.time", "2026-12-02T01:05:10Z", "vcs.modified", "false"), "(devel) 6689fb3c0772 2026-12-02T01:05:10Z"},
		{"uncommitted changes", "", vcs("vcs.revision", "6689fb3c0772", "vcs.modified", "true"), "(devel) 6689fb3c0772+dirty"},
		{"nothing to go on", "", vcs(), "(devel)"},
		{"no build info", "", nil, "(devel)"},
	} {
		if got := versionOf(tc.stamped, tc.info); got != tc.want {
			t.Errorf("%s: versionOf = %q, want %q", tc.name, got, tc.want)
		}
	}
}
