package ready

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"
)

// Poll timing. Tries are cheap (a loopback connect), so the period is short:
// readiness is seen at most one period late.
const (
	firstPeriod        = 100 * time.Millisecond
	maxPeriod          = 250 * time.Millisecond
	defaultTryTimeout  = time.Second
	defaultExecTimeout = 5 * time.Second
	// bodyLimit bounds what is read of an HTTP answer before the connection
	// is dropped; the body is discarded unseen.
	bodyLimit = 64 << 10
)

// Options says how Wait runs the checks. The zero value serves tcp and
// http checks.
type Options struct {
	// TryTimeout bounds one tcp or http try; default 1s.
	TryTimeout time.Duration
	// ExecTimeout bounds one exec try; default 5s. The process group is
	// killed when it runs out.
	ExecTimeout time.Duration
	// Notified is closed when the current child has sent READY=1; required
	// for a notify check.
	Notified <-chan struct{}
	// Procs starts exec checks; required for an exec check.
	Procs *Procs
	// Env is the environment of exec checks; nil: this process's.
	Env []string
	// Output receives the stdout and stderr of exec checks; nil: /dev/null
	// (an output may hold anything, and is never logged by paramexec).
	Output *os.File
}

// NotReadyError says which check did not pass before Wait's ctx ended.
type NotReadyError struct {
	Check Check
	Tries int   // tries made; 0 if ctx ended first, and for notify (waited for, not tried)
	Err   error // the last try's reason; ctx.Err() if no try ended
}

func (e *NotReadyError) Error() string {
	return fmt.Sprintf("ready check %s did not pass (%d tries): %v", e.Check, e.Tries, e.Err)
}

func (e *NotReadyError) Unwrap() error { return e.Err }

// errNotYet is the reason of a notify check before READY=1.
var errNotYet = errors.New("no READY=1 from the child yet")

// Wait polls every check until each has passed once, and returns nil; or
// returns a *NotReadyError for the first check (in the order given) that had
// not passed when ctx ended. It returns once every goroutine it started has
// ended and every exec check's process has been sent SIGKILL. No checks: nil
// at once.
func Wait(ctx context.Context, checks []Check, opts Options) error {
	if opts.TryTimeout <= 0 {
		opts.TryTimeout = defaultTryTimeout
	}
	if opts.ExecTimeout <= 0 {
		opts.ExecTimeout = defaultExecTimeout
	}
	if opts.Env == nil {
		opts.Env = os.Environ()
	}
	client := &http.Client{
		Transport: &http.Transport{
			Proxy:             nil, // HTTP_PROXY must not take a loopback check elsewhere
			DisableKeepAlives: true,
			DialContext:       (&net.Dialer{}).DialContext,
			TLSClientConfig:   &tls.Config{}, // per check, see tryHTTP
		},
		// A 3xx is an answer: the app is up.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	insecure := &http.Client{
		Transport: &http.Transport{
			Proxy:             nil,
			DisableKeepAlives: true,
			DialContext:       (&net.Dialer{}).DialContext,
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // asked for by https+insecure://
		},
		CheckRedirect: client.CheckRedirect,
	}
	defer client.CloseIdleConnections()
	defer insecure.CloseIdleConnections()

	fails := make([]*NotReadyError, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := prober{opts: opts, client: client}
			if c.insecure {
				p.client = insecure
			}
			fails[i] = p.poll(ctx, c)
		}()
	}
	wg.Wait()
	for _, f := range fails {
		if f != nil {
			return f
		}
	}
	return nil
}

type prober struct {
	opts   Options
	client *http.Client
}

// poll tries c until it passes (nil) or ctx ends.
func (p prober) poll(ctx context.Context, c Check) *NotReadyError {
	fail := &NotReadyError{Check: c}
	if c.UsesPort() {
		fail.Err = errors.New("{port} was not filled in")
		return fail
	}
	if c.kind == Exec && p.opts.Procs == nil {
		fail.Err = errors.New("no process registry (ready.Options.Procs)")
		return fail
	}
	if c.kind == Notify {
		// Not polled: the supervisor closes Notified on READY=1.
		if p.opts.Notified == nil {
			fail.Err = errors.New("no notify socket (ready.Options.Notified)")
			return fail
		}
		select {
		case <-p.opts.Notified:
			return nil
		case <-ctx.Done():
			fail.Err = errNotYet
			return fail
		}
	}
	period := firstPeriod
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			if fail.Err == nil {
				fail.Err = ctx.Err()
			}
			return fail
		case <-timer.C:
		}
		err := p.try(ctx, c)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil && fail.Tries > 0 {
			// A try cut short by the end says nothing new.
			return fail
		}
		fail.Tries++
		fail.Err = err
		timer.Reset(period)
		period = min(period+period/5, maxPeriod)
	}
}

func (p prober) try(ctx context.Context, c Check) error {
	switch c.kind {
	case TCP:
		ctx, cancel := context.WithTimeout(ctx, p.opts.TryTimeout)
		defer cancel()
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", c.addr)
		if err != nil {
			return err
		}
		return conn.Close()
	case HTTP:
		return p.tryHTTP(ctx, c)
	case Exec:
		return p.opts.Procs.run(ctx, c.argv, p.opts.Env, p.opts.Output, p.opts.ExecTimeout)
	}
	return fmt.Errorf("not a check (kind %v)", c.kind)
}

func (p prober) tryHTTP(ctx context.Context, c Check) error {
	ctx, cancel := context.WithTimeout(ctx, p.opts.TryTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "paramexec-ready")
	resp, err := p.client.Do(req)
	if err != nil {
		return cleanURLError(err)
	}
	// Read a little so the server is not reset mid-answer; never look at it.
	io.Copy(io.Discard, io.LimitReader(resp.Body, bodyLimit))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// cleanURLError drops the *url.Error wrapper, whose text repeats the URL
// that NotReadyError already names.
func cleanURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
