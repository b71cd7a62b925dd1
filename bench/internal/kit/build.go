// Package kit holds what paramexec's benchmarks share: building the binaries
// under test, a moto emulator with seeding, and readers for child records and logs.
package kit

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Binaries are the programs a benchmark runs, as absolute paths.
type Binaries struct {
	Paramexec string // the stripped static paramexec
	Floor     string // bench/floor: only the SDK calls paramexec makes at start-up
	Testchild string // internal/testchild: records its start, environment and exit
	// Testserver is internal/testserver: an HTTP child, for the
	// zero-downtime phase.
	Testserver string
	Runner     string // bench/internal/runner: times whole-process runs
}

// Module is the import path of paramexec's module.
const Module = "github.com/paramexec/paramexec"

// packages maps each binary to the package it is built from.
var packages = map[string]string{
	"paramexec":  Module,
	"floor":      Module + "/bench/floor",
	"testchild":  Module + "/internal/testchild",
	"testserver": Module + "/internal/testserver",
	"runner":     Module + "/bench/internal/runner",
}

// Build builds the binaries into dir the way a release is built: static
// (CGO_ENABLED=0), -trimpath, symbols and DWARF stripped (-s -w). With
// reuse, a binary already in dir is used as it is, so that a caller can
// hand in prebuilt ones (-bin DIR) and a test builds only once; without it
// every binary is rebuilt (from Go's build cache when nothing changed), so
// that a stale one is never measured.
func Build(ctx context.Context, dir string, reuse bool) (Binaries, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return Binaries{}, fmt.Errorf("build: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Binaries{}, fmt.Errorf("build: %w", err)
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return Binaries{}, err
	}
	b := Binaries{
		Paramexec:  filepath.Join(dir, "paramexec"),
		Floor:      filepath.Join(dir, "floor"),
		Testchild:  filepath.Join(dir, "testchild"),
		Testserver: filepath.Join(dir, "testserver"),
		Runner:     filepath.Join(dir, "runner"),
	}
	for name, out := range map[string]string{"paramexec": b.Paramexec, "floor": b.Floor, "testchild": b.Testchild, "testserver": b.Testserver, "runner": b.Runner} {
		if _, err := os.Stat(out); err == nil && reuse {
			continue
		}
		if err := goBuild(ctx, root, packages[name], out); err != nil {
			return Binaries{}, err
		}
	}
	return b, nil
}

// BuildFlags are the flags of a release build, as the README gives them:
// nethttpomithttp2 leaves net/http's HTTP/2 client out of every binary
// measured, the floor included, so that the floor stays what a release of
// the SDK alone would be.
var BuildFlags = []string{"-trimpath", "-tags", "nethttpomithttp2", "-ldflags=-s -w"}

func goBuild(ctx context.Context, root, pkg, out string) error {
	args := append([]string{"build"}, BuildFlags...)
	args = append(args, "-o", out, pkg)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// moduleRoot finds paramexec's module directory from the working directory,
// so that the benchmarks can be run from anywhere inside the checkout.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Path}} {{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("find the module (run inside the paramexec checkout, or pass prebuilt binaries): %w", err)
	}
	path, dir, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	if path != Module || dir == "" {
		return "", fmt.Errorf("find the module: the working directory is in %q, not %s", path, Module)
	}
	return dir, nil
}
