package values

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/faultproxy"
	"github.com/paramexec/paramexec/internal/harness"
)

// These tests check that --startup-timeout is a deadline, kept in both
// directions: start-up ends no sooner than its budget while errors are
// transient, and no later than the budget plus a margin for stopping the
// attempt in flight and the process exiting. The upper bound is loose (3 s
// over the budget, on a shared, loaded machine) because it tells a kept
// deadline from one outlived by a 15 s HTTP timeout or a hung credentials
// fetch, not a fast start-up from a slow one: this is the correctness of a
// deadline, not a speed benchmark.
const deadlineMargin = 3 * time.Second

// hungServer accepts connections and reads requests but never answers, as a
// black-holed endpoint or an overloaded agent does. It serves answers
// instead while serve is set.
type hungServer struct {
	*httptest.Server
	serve   atomic.Pointer[http.HandlerFunc]
	release chan struct{}
}

func startHungServer(t *testing.T) *hungServer {
	h := &hungServer{release: make(chan struct{})}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if serve := h.serve.Load(); serve != nil {
			(*serve)(w, r)
			return
		}
		select {
		case <-r.Context().Done():
		case <-h.release:
		}
	}))
	t.Cleanup(func() {
		close(h.release)
		h.Close()
	})
	return h
}

// answer makes the server answer with f; nil makes it hang again.
func (h *hungServer) answer(f http.HandlerFunc) {
	if f == nil {
		h.serve.Store(nil)
		return
	}
	h.serve.Store(&f)
}

// timedRun runs paramexec to completion and says how long it took.
func timedRun(t *testing.T, env []string, args ...string) (harness.Result, time.Duration) {
	t.Helper()
	began := time.Now()
	r := harness.RunBinary(t, env, args...)
	return r, time.Since(began)
}

func checkDeadline(t *testing.T, r harness.Result, took, budget time.Duration, lowerBound bool) {
	t.Helper()
	t.Logf("exit %d after %s; stderr:\n%s", r.Code, took, r.Stderr)
	if r.Code != harness.ExitSource {
		t.Fatalf("exit %d, want %d; stderr:\n%s", r.Code, harness.ExitSource, r.Stderr)
	}
	if took > budget+deadlineMargin {
		t.Errorf("start-up took %s with --startup-timeout %s: the deadline was not kept; stderr:\n%s", took, budget, r.Stderr)
	}
	if lowerBound && took < budget {
		t.Errorf("start-up gave up after %s, before its --startup-timeout %s; stderr:\n%s", took, budget, r.Stderr)
	}
	if want := "gave up after " + budget.String(); !strings.Contains(r.Stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, r.Stderr)
	}
}

func TestStartupTimeoutHungEndpoint(t *testing.T) {
	harness.E2E(t)
	h := startHungServer(t)
	args, rec := harness.ChildArgs(t, "-exit", "0")
	r, took := timedRun(t, harness.BaseEnv(h.URL), append([]string{"--path", "/app", "--startup-timeout", "1s"}, args...)...)
	// Hung for the whole budget: no attempt ever failed fast, so the
	// budget is both bounds.
	checkDeadline(t, r, took, time.Second, true)
	if len(harness.ReadRecords(t, rec)) != 0 {
		t.Error("the command ran without its configuration")
	}
}

func TestStartupTimeoutKeptOnFastErrors(t *testing.T) {
	harness.E2E(t)
	const budget = 2 * time.Second
	for _, fault := range []faultproxy.Fault{faultproxy.Unavailable, faultproxy.ExpiredToken} {
		t.Run(fault.String(), func(t *testing.T) {
			p := harness.Proxied(t)
			p.Inject(faultproxy.Rule{Fault: fault})
			args, _ := harness.ChildArgs(t, "-exit", "0")
			r, took := timedRun(t, harness.BaseEnv(p.URL()), append([]string{"--path", "/app", "--startup-timeout", budget.String()}, args...)...)
			checkDeadline(t, r, took, budget, true)
			// The last wait was shortened, not skipped: more than the first
			// attempt was made, and the budget held them all.
			if n := p.Counts().Total; n < 2 {
				t.Errorf("%d attempts in %s", n, budget)
			}
		})
	}
}

// credentialsEnv is baseEnv with credentials from a container credentials
// endpoint (loopback http is allowed by the SDK) instead of the environment.
func credentialsEnv(endpoint, credentialsURL string) []string {
	env := slices.DeleteFunc(harness.BaseEnv(endpoint), func(kv string) bool {
		return strings.HasPrefix(kv, "AWS_ACCESS_KEY_ID=") || strings.HasPrefix(kv, "AWS_SECRET_ACCESS_KEY=")
	})
	return append(env, "AWS_CONTAINER_CREDENTIALS_FULL_URI="+credentialsURL+"/creds")
}

// serveCredentials answers like the ECS agent. The SDK takes credentials as
// expired five minutes before their Expiration; these are then good for
// validFor, so that the next call made after that refreshes them.
func serveCredentials(validFor time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"AccessKeyId":     "testing",
			"SecretAccessKey": "testing",
			"Token":           "testing",
			"Expiration":      time.Now().Add(5*time.Minute + validFor).UTC().Format(time.RFC3339),
		})
	}
}

func TestHungCredentialsEndpointAtStartup(t *testing.T) {
	harness.E2E(t)
	creds := startHungServer(t)
	const budget = 2 * time.Second
	args, rec := harness.ChildArgs(t, "-exit", "0")
	r, took := timedRun(t, credentialsEnv(harness.Moto.URL, creds.URL), append([]string{"--path", "/app", "--startup-timeout", budget.String()}, args...)...)
	checkDeadline(t, r, took, budget, true)
	if !strings.Contains(r.Stderr, "credentials") {
		t.Errorf("the error does not say credentials were the trouble:\n%s", r.Stderr)
	}
	if len(harness.ReadRecords(t, rec)) != 0 {
		t.Error("the command ran without its configuration")
	}
}

// A credentials refresh that hangs while polling is a failed poll, logged and
// retried; polling goes on once the endpoint answers again.
func TestHungCredentialsRefreshWhilePolling(t *testing.T) {
	harness.E2E(t)
	creds := startHungServer(t)
	creds.answer(serveCredentials(2 * time.Second))
	path := harness.UniquePath(t)
	harness.Moto.PutParameter(t, path+"/TOKEN", harness.Val("one"), "String")
	args, rec := harness.ChildArgs(t)
	pe := harness.StartBinary(t, credentialsEnv(harness.Moto.URL, creds.URL), append([]string{"--path", path, "--interval", "1s"}, args...)...)
	harness.WaitStarts(t, rec, 1)

	creds.answer(nil) // the next refresh, at most 2 s away, hangs
	harness.WaitFor(t, "a failed poll logged while credentials hang", func() bool {
		return strings.Contains(pe.Stderr.String(), "poll failed")
	})
	if !strings.Contains(pe.Stderr.String(), "credentials") {
		t.Errorf("the failed poll does not say credentials were the trouble:\n%s", pe.Stderr.String())
	}

	creds.answer(serveCredentials(time.Minute))
	harness.Moto.PutParameter(t, path+"/TOKEN", harness.Val("two"), "String")
	if got := harness.WaitStarts(t, rec, 2)[1].Env["TOKEN"]; got != harness.Val("two") {
		t.Errorf("after the credentials came back, TOKEN=%q, want %q", got, harness.Val("two"))
	}
	if !strings.Contains(pe.Stderr.String(), "poll recovered") {
		t.Errorf("no recovery logged:\n%s", pe.Stderr.String())
	}
	pe.Signal(syscall.SIGTERM)
	if code := pe.Wait(); code != 0 {
		t.Errorf("exit %d after SIGTERM; stderr:\n%s", code, pe.Stderr.String())
	}
}

// Instance metadata that sends its headers and then nothing (the SDK's
// own IMDS timeouts cover only the connection and the headers) cannot
// hold start-up past its budget while paramexec asks it for the Region.
func TestStalledRegionLookupKeepsTheBudget(t *testing.T) {
	harness.E2E(t)
	imds := startHungServer(t)
	imds.answer(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-imds.release:
		}
	})
	env := slices.DeleteFunc(harness.BaseEnv(harness.Moto.URL), func(kv string) bool {
		return strings.HasPrefix(kv, "AWS_REGION=") || strings.HasPrefix(kv, "AWS_EC2_METADATA_DISABLED=")
	})
	env = append(env, "AWS_EC2_METADATA_SERVICE_ENDPOINT="+imds.URL, "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
	// Below the SDK's own 5 s bound on a metadata call, which is what held
	// start-up before the budget did.
	const budget = time.Second
	args, rec := harness.ChildArgs(t, "-exit", "0")
	r, took := timedRun(t, env, append([]string{"--path", "/app", "--startup-timeout", budget.String()}, args...)...)
	t.Logf("exit %d after %s; stderr:\n%s", r.Code, took, r.Stderr)
	if r.Code != harness.ExitUsage || !strings.Contains(r.Stderr, "no AWS region") {
		t.Errorf("exit %d, want %d and 'no AWS region'; stderr:\n%s", r.Code, harness.ExitUsage, r.Stderr)
	}
	if took > budget+deadlineMargin {
		t.Errorf("start-up took %s with --startup-timeout %s", took, budget)
	}
	if len(harness.ReadRecords(t, rec)) != 0 {
		t.Error("the command ran without its configuration")
	}
}
