package main

import (
	"math"
	"runtime/debug"
	"strings"
	"testing"
)

func TestReleaseStartupPages(t *testing.T) {
	n, err := releaseStartupPages()
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("released nothing: the executable's read-only mappings were not found")
	}
	// The released code and data fault back in: the program goes on.
	if got := strings.Repeat("ok", 2); got != "okok" {
		t.Fatal("the program does not run after releasing its pages")
	}
}

func TestLimitMemory(t *testing.T) {
	defer debug.SetMemoryLimit(math.MaxInt64)
	limit := limitMemory()
	if limit < 4<<20 || limit > 1<<30 {
		t.Errorf("limit %d bytes: want room for the live heap plus at least 4 MiB, and sane", limit)
	}
	if got := debug.SetMemoryLimit(-1); got != limit {
		t.Errorf("runtime limit is %d, want %d", got, limit)
	}
	t.Setenv("GOMEMLIMIT", "64MiB")
	if got := limitMemory(); got != -1 {
		t.Errorf("with GOMEMLIMIT set, limitMemory set %d; the user's limit must win", got)
	}
}
