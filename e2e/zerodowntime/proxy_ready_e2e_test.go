package zerodowntime

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/harness"
)

// With --proxy and no --ready, a connect to the child's port is its
// readiness check, bounded by --ready-timeout as any check is. An app that
// listens only after 65 s (a JVM on a small Fargate task), beyond the
// default 60 s, is served once it listens when --ready-timeout gives it
// 120 s: a request sent through the proxy during the boot is held and
// answered, and so is one sent afterwards. (Before, the proxy gave up on
// the child after a fixed 60 s and never sent it anything.)
func TestProxyServesASlowAppWithinReadyTimeout(t *testing.T) {
	harness.ParallelE2E(t)
	port := harness.FreePort(t)
	env := append(harness.BaseEnv(""), "VALUE="+harness.Val("slow"), "TESTSERVER_BOOT_DELAY=65s", "TESTSERVER_PORT_ENV=APP_PORT")
	pe := harness.StartBinary(t, env, "--proxy", fmt.Sprintf("127.0.0.1:%d=APP_PORT", port), "--ready-timeout", "120s", "--", harness.ServerBin)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	harness.WaitFor(t, "the proxy to listen", func() bool { return strings.Contains(pe.Stderr.String(), `msg="proxy listening"`) })

	client := &http.Client{Timeout: 115 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	begun := time.Now()
	for i, what := range []string{"held during the boot", "sent once served"} {
		got, err := getServed(client, url)
		if err != nil || got.Value != harness.Val("slow") {
			t.Fatalf("request %d (%s), %s after the start: %v, %+v; log:\n%s", i+1, what, time.Since(begun).Round(time.Second), err, got, pe.Stderr.String())
		}
	}
	if took := time.Since(begun); took < 60*time.Second {
		t.Errorf("answered after %s: the app was to boot for 65 s", took.Round(time.Second))
	}
	pe.Signal(syscall.SIGTERM)
	if code := pe.Wait(); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0; log:\n%s", code, pe.Stderr.String())
	}
}

// A first child that never listens on its --proxy port is judged as
// --ready judges one that is never ready: stopped at --ready-timeout, and
// paramexec exits 4 (not a proxy that holds every connection for ever).
func TestProxyChildThatNeverListensExitsNotReady(t *testing.T) {
	harness.ParallelE2E(t)
	port := harness.FreePort(t)
	env := append(harness.BaseEnv(""), "VALUE="+harness.Val("hang"), "TESTSERVER_HANG_IF=VALUE="+harness.Val("hang"), "TESTSERVER_PORT_ENV=APP_PORT")
	pe := harness.StartBinary(t, env, "--proxy", fmt.Sprintf("127.0.0.1:%d=APP_PORT", port), "--ready-timeout", "3s", "--grace", "2s", "--", harness.ServerBin)
	select {
	case <-pe.Done():
	case <-time.After(45 * time.Second):
		// 3 s to be ready and 2 s of grace: 45 s is far beyond any
		// scheduling delay, so still running means it waits for ever.
		t.Fatalf("paramexec still runs 45 s after a 3 s --ready-timeout; log:\n%s", pe.Stderr.String())
	}
	log := pe.Stderr.String()
	if code := pe.Code(); code != 4 {
		t.Fatalf("exit %d, want 4 (not ready); log:\n%s", code, log)
	}
	pids := harness.ChildPids(log)
	if len(pids) != 1 || !harness.Gone(pids[0]) {
		t.Errorf("children %v: want one, gone with paramexec", pids)
	}
	if !strings.Contains(log, "child not ready in time") {
		t.Errorf("the log does not say the child was not ready:\n%s", log)
	}
}

// getServed asks the test server behind the proxy who it is.
func getServed(client *http.Client, url string) (harness.Served, error) {
	var s harness.Served
	resp, err := client.Get(url)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("status %s", resp.Status)
	}
	return s, json.NewDecoder(resp.Body).Decode(&s)
}
