package ready

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// deadline bounds a wait for something that should happen; it measures
// nothing. notYet is how long a check that must not pass is watched: it
// spans several tries (100–250 ms apart), which is what the test is about.
const (
	deadline = 30 * time.Second
	notYet   = 700 * time.Millisecond
)

func mustParse(t *testing.T, spec string) Check {
	t.Helper()
	c, err := Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitFor runs Wait bounded by d.
func waitFor(d time.Duration, opts Options, checks ...Check) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return Wait(ctx, checks, opts)
}

// notReady asserts err is a *NotReadyError for spec after at least one try
// (a notify check is not tried, it is waited for).
func notReady(t *testing.T, err error, spec string) *NotReadyError {
	t.Helper()
	var nr *NotReadyError
	if !errors.As(err, &nr) {
		t.Fatalf("Wait = %v, want a *NotReadyError", err)
	}
	if nr.Check.String() != spec || (nr.Tries < 1 && nr.Check.Kind() != Notify) || !strings.Contains(err.Error(), spec) {
		t.Fatalf("Wait = %v (check %q, %d tries), want check %q after ≥1 try", err, nr.Check, nr.Tries, spec)
	}
	return nr
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestNoChecks(t *testing.T) {
	if err := waitFor(deadline, Options{}); err != nil {
		t.Fatal(err)
	}
}

func TestTCP(t *testing.T) {
	port := freePort(t)
	spec := "tcp:" + strconv.Itoa(port)
	c := mustParse(t, spec)

	// Nobody listens: refused is "not yet", retried until the end.
	nr := notReady(t, waitFor(notYet, Options{}, c), spec)
	if !errors.Is(nr, syscall.ECONNREFUSED) || nr.Tries < 2 {
		t.Errorf("reason %v after %d tries, want ECONNREFUSED after several", nr.Err, nr.Tries)
	}

	// Start listening while Wait polls: it passes.
	res := make(chan error, 1)
	go func() { res <- waitFor(deadline, Options{}, c) }()
	select {
	case err := <-res:
		t.Fatalf("Wait returned %v before anyone listened", err)
	case <-time.After(300 * time.Millisecond):
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := <-res; err != nil {
		t.Fatal(err)
	}
}

func TestHTTP(t *testing.T) {
	const bodySecret = "body-must-not-leak-7b1f"
	var up atomic.Bool
	var keepAlive atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !r.Close {
			keepAlive.Add(1)
		}
		switch {
		case r.URL.Path == "/moved":
			http.Redirect(w, r, "/broken", http.StatusFound)
		case r.URL.Path == "/broken":
			http.Error(w, bodySecret, http.StatusInternalServerError)
		case !up.Load():
			http.Error(w, bodySecret, http.StatusServiceUnavailable)
		default:
			w.Write([]byte(bodySecret))
		}
	}))
	defer srv.Close()

	spec := srv.URL + "/up"
	c := mustParse(t, spec)
	nr := notReady(t, waitFor(notYet, Options{}, c), spec)
	if nr.Err == nil || nr.Err.Error() != "status 503" {
		t.Errorf("reason %v, want status 503", nr.Err)
	}
	if strings.Contains(nr.Error(), bodySecret) {
		t.Errorf("error %q shows the response body", nr)
	}
	up.Store(true)
	if err := waitFor(deadline, Options{}, c); err != nil {
		t.Fatal(err)
	}
	// A redirect is an answer; it is not followed (to a 500 here).
	if err := waitFor(deadline, Options{}, mustParse(t, srv.URL+"/moved")); err != nil {
		t.Errorf("3xx: %v", err)
	}
	if n := keepAlive.Load(); n != 0 {
		t.Errorf("%d requests allowed keep-alive; each try must use a new connection", n)
	}

	// A server that never answers: the per-try timeout ends each try.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	spec = "http://" + ln.Addr().String() + "/"
	nr = notReady(t, waitFor(1500*time.Millisecond, Options{TryTimeout: 200 * time.Millisecond}, mustParse(t, spec)), spec)
	if !errors.Is(nr, context.DeadlineExceeded) || nr.Tries < 2 {
		t.Errorf("silent server: %v after %d tries, want per-try timeouts", nr.Err, nr.Tries)
	}
}

func TestHTTPS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "https://")

	// httptest's certificate is signed by nobody this process trusts.
	spec := "https://" + addr + "/up"
	nr := notReady(t, waitFor(notYet, Options{}, mustParse(t, spec)), spec)
	if !strings.Contains(nr.Err.Error(), "certificate") {
		t.Errorf("reason %v, want a certificate error", nr.Err)
	}
	if err := waitFor(deadline, Options{}, mustParse(t, "https+insecure://"+addr+"/up")); err != nil {
		t.Fatal(err)
	}
}

func TestNotify(t *testing.T) {
	c := mustParse(t, "notify")
	nr := notReady(t, waitFor(notYet, Options{Notified: make(chan struct{})}, c), "notify")
	if !errors.Is(nr, errNotYet) {
		t.Errorf("reason %v, want %v", nr.Err, errNotYet)
	}
	var no *NotReadyError
	if err := waitFor(deadline, Options{}, c); !errors.As(err, &no) || !strings.Contains(err.Error(), "Options.Notified") {
		t.Errorf("notify without a channel: %v", err)
	}

	notified := make(chan struct{})
	res := make(chan error, 1)
	go func() { res <- waitFor(deadline, Options{Notified: notified}, c) }()
	select {
	case err := <-res:
		t.Fatalf("Wait returned %v before READY=1", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(notified)
	if err := <-res; err != nil {
		t.Fatal(err)
	}
}

// All must pass; the failure names the first one (in the order given) that
// did not, and a check that passed once stays passed.
func TestAllMustPass(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := mustParse(t, "tcp:"+ln.Addr().String())
	down := "tcp:" + strconv.Itoa(freePort(t))
	notified := make(chan struct{})
	checks := []Check{up, mustParse(t, "notify"), mustParse(t, down)}
	notReady(t, waitFor(notYet, Options{Notified: notified}, checks...), "notify")

	res := make(chan error, 1)
	go func() { res <- waitFor(deadline, Options{Notified: notified}, up, mustParse(t, "notify")) }()
	// up passes at once; closing its listener must not undo that.
	time.Sleep(300 * time.Millisecond)
	ln.Close()
	close(notified)
	if err := <-res; err != nil {
		t.Fatal(err)
	}
}

func TestUnfilledPort(t *testing.T) {
	c := mustParse(t, "tcp:{port}")
	start := time.Now()
	err := waitFor(deadline, Options{}, c)
	var nr *NotReadyError
	if !errors.As(err, &nr) || !strings.Contains(err.Error(), "{port}") {
		t.Fatalf("Wait = %v, want {port} not filled in", err)
	}
	// Not a timing assertion: the test would take the full deadline if Wait
	// polled a check that can never pass.
	if time.Since(start) > deadline/2 {
		t.Error("Wait polled an unfilled check until its deadline")
	}
	// Filled, it is a real check.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := waitFor(deadline, Options{}, c.WithPort(ln.Addr().(*net.TCPAddr).Port)); err != nil {
		t.Fatal(err)
	}
}

// Cancelling ctx ends Wait promptly even in the middle of a try.
func TestCancel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	// The server accepts and never answers: each try waits its full timeout.
	go func() {
		res <- Wait(ctx, []Check{mustParse(t, "http://"+ln.Addr().String()+"/")}, Options{TryTimeout: time.Hour})
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case err := <-res:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Wait = %v, want context.Canceled", err)
		}
	case <-time.After(deadline):
		t.Fatal("Wait did not return after cancel")
	}
}
