package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paramexec/paramexec/bench/internal/kit"
	"github.com/paramexec/paramexec/internal/motoserver"
)

// These tests only check that the benchmark commands build and run at
// their tiny -quick size and that what they count adds up. They assert no
// speed: the figures come from real runs on purpose (see the README).

var srv *motoserver.Server

func TestMain(m *testing.M) { os.Exit(motoserver.Main(m, &srv)) }

func TestCommandsRunQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts dozens of processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	bin := t.TempDir()
	if _, err := kit.Build(ctx, bin, true); err != nil {
		t.Fatal(err)
	}

	t.Run("bench", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "results.json")
		var stdout, stderr bytes.Buffer
		code := run(ctx, []string{"-quick", "-moto", srv.URL, "-bin", bin, "-json", out,
			"-phases", "size,startup,steady,polls,rollback,zerodowntime"}, &stdout, &stderr)
		if code != 0 {
			t.Fatalf("bench -quick exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
		}
		for _, heading := range []string{"### Binary", "### Start-up", "### Supervisor memory", "### API calls per poll", "### Change latency", "### A bad value published to a fleet", "### Zero-downtime restarts", "### --proxy against a direct connection"} {
			if !strings.Contains(stdout.String(), heading) {
				t.Errorf("no %q table in the output:\n%s", heading, stdout.String())
			}
		}
		var res Results
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &res); err != nil {
			t.Fatal(err)
		}
		if res.Size == nil || !res.Size.Static || res.Size.ParamexecBytes == 0 {
			t.Errorf("size: %+v; want a static binary of some size", res.Size)
		}
		for _, r := range res.Startup {
			if len(r.Floor) != 2 || len(r.Paramexec) != 2 {
				t.Errorf("start-up at %d: %d floor and %d paramexec runs, want 2 each", r.Params, len(r.Floor), len(r.Paramexec))
			}
			if r.ParamexecRSS[0] < r.RunnerHWM {
				t.Errorf("start-up at %d: peak RSS %d KiB below the runner's own %d", r.Params, r.ParamexecRSS[0], r.RunnerHWM)
			}
		}
		if len(res.Steady) != 1 || len(res.Steady[0].RSS) == 0 {
			t.Errorf("steady: want one size with RSS samples, got %+v", res.Steady)
		}
		if len(res.Polls) != 3 {
			t.Fatalf("polls: %d configurations, want 3 (two sizes, one secret count)", len(res.Polls))
		}
		if res.Zero == nil || len(res.Zero.Rows) != 7 {
			t.Fatalf("zerodowntime: %+v; want 7 rows (one stop-first boot; --listen and --proxy, each stop-first and overlap; --proxy both ways with an app with no graceful stop)", res.Zero)
		}
		for _, r := range res.Zero.Rows {
			if r.Requests == 0 || r.Changes != 1 {
				t.Errorf("zerodowntime %s: %d requests across %d changes; want some across 1", r.Mode, r.Requests, r.Changes)
			}
		}
		if c := res.Zero.Cost; len(c.DirectMBps) != 3 || len(c.ProxyMBps) != 3 || c.CPURequests != 1000 || c.FdsAfter == 0 {
			t.Errorf("zerodowntime cost: %+v; want 3 transfers each side and 1000 requests counted", c)
		}
		for _, r := range res.Polls {
			if len(r.Idle) == 0 || len(r.Discovery) == 0 {
				t.Errorf("polls %d/%d: %d idle and %d discovery polls counted, want some of each", r.Params, r.Secrets, len(r.Idle), len(r.Discovery))
			}
			// Counts, not times: an idle poll must stay within its budget
			// and never read a value.
			for _, s := range r.Idle {
				if s.Total > r.Budget() || s.Decrypting != 0 || s.SecretValues != 0 {
					t.Errorf("polls %d/%d: an idle poll made %v (budget %d, decrypting %d, secret values %d)",
						r.Params, r.Secrets, s.Calls, r.Budget(), s.Decrypting, s.SecretValues)
				}
			}
			if len(r.Changes) != 1 || r.Changes[0].Latency <= 0 {
				t.Errorf("polls %d/%d: changes %+v, want one timed change", r.Params, r.Secrets, r.Changes)
			}
		}
		// Counts, not times: with --ready no supervisor exits over a bad
		// value and each rolls back; without, each crashes with its child.
		if len(res.Rollback) != 1 {
			t.Fatalf("rollback: %d results, want 1", len(res.Rollback))
		}
		if r := res.Rollback[0]; r.ReadyExited != 0 || r.RolledBack != r.N || r.BackOnGood != r.N ||
			r.PlainExited != r.N || r.ExitCodes[3] != r.N || len(r.Overhead) != r.N {
			t.Errorf("rollback: %+v; want none exited and all rolled back with --ready, all exited 3 without, one restart each after", r)
		}
	})

	// The fleet and soak commands are separate programs: build and run them.
	for _, name := range []string{"fleet", "soak"} {
		t.Run(name, func(t *testing.T) {
			exe := filepath.Join(bin, "cmd-"+name)
			build := exec.CommandContext(ctx, "go", "build", "-o", exe, kit.Module+"/bench/"+name)
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("go build bench/%s: %v\n%s", name, err, out)
			}
			args := []string{"-quick", "-moto", srv.URL, "-bin", bin}
			if name == "soak" {
				args = append(args, "-duration", "4s")
			}
			cmd := exec.CommandContext(ctx, exe, args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("bench/%s -quick: %v\nstdout:\n%s\nstderr:\n%s", name, err, stdout.String(), stderr.String())
			}
			want := map[string]string{"fleet": "| 3 | 1s |", "soak": "| verdict | PASS |"}[name]
			if !strings.Contains(stdout.String(), want) {
				t.Errorf("bench/%s output lacks %q:\n%s", name, want, stdout.String())
			}
		})
	}
}
