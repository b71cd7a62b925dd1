package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildDeadline bounds the two builds (a cold cache compiles the AWS SDK),
// deadline every wait after them; they measure nothing.
const (
	buildDeadline = 5 * time.Minute
	deadline      = 60 * time.Second
)

// build compiles the package at dir (relative to this one) into out.
func build(t *testing.T, ctx context.Context, dir, out string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, dir)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", dir, err, b)
	}
}

// lockedBuffer is paramexec's stderr, read while it writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestServesBehindListenAndRestarts runs the example as its doc comment
// says, behind the real paramexec with --listen, --restart overlap and
// --ready notify: it serves on the inherited socket, a .env change brings a
// new process with the new value on the same socket, and SIGTERM ends both
// with exit 0.
func TestServesBehindListenAndRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs paramexec")
	}
	dir := t.TempDir()
	bctx, bcancel := context.WithTimeout(context.Background(), buildDeadline)
	defer bcancel()
	build(t, bctx, "../..", filepath.Join(dir, "paramexec"))
	build(t, bctx, ".", filepath.Join(dir, "gofilelistener"))
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()

	envFile := filepath.Join(dir, "app.env")
	writeEnv := func(greeting string) {
		tmp := envFile + ".tmp"
		if err := os.WriteFile(tmp, []byte("GREETING="+greeting+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, envFile); err != nil { // as an editor saves
			t.Fatal(err)
		}
	}
	writeEnv("hello")

	// A unix socket: no port to pick, none to race for.
	sock := filepath.Join(dir, "app.sock")
	pe := exec.CommandContext(ctx, filepath.Join(dir, "paramexec"),
		"--env-file", envFile, "--interval", "1m", "--listen", "unix://"+sock,
		"--restart", "overlap", "--ready", "notify", "--grace", "5s",
		"--", filepath.Join(dir, "gofilelistener"))
	var stderr lockedBuffer
	pe.Stderr = &stderr
	pe.WaitDelay = 10 * time.Second
	if err := pe.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- pe.Wait() }()
	defer func() {
		if pe.ProcessState == nil {
			pe.Process.Kill()
			<-exited
		}
	}()

	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", sock)
			},
			DisableKeepAlives: true,
		},
	}
	get := func() (string, error) {
		resp, err := client.Get("http://app/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	// waitFor polls until an answer ends with want; paramexec binds the
	// socket before the first child, so an early request waits, not fails.
	waitFor := func(want string) string {
		t.Helper()
		for {
			got, err := get()
			if err == nil && strings.HasSuffix(got, ": "+want+"\n") {
				return got
			}
			if ctx.Err() != nil {
				t.Fatalf("no answer with %q before the deadline (last: %q, %v)\nparamexec:\n%s", want, got, err, stderr.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	first := waitFor("hello")
	writeEnv("bye")
	// On a shared socket the new child serves as soon as it accepts, while
	// the old one still may: the overlap is over when the old one exited.
	for !strings.Contains(stderr.String(), `msg="old child exited"`) {
		if ctx.Err() != nil {
			t.Fatalf("the old child never exited:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	oldExited := `msg="old child exited" .*pid=` + strings.TrimPrefix(pidOf(first), "pid ") + " code=0 "
	for _, want := range []string{`msg="overlap begun"`, `msg=switched`, oldExited} {
		if !regexp.MustCompile(want).MatchString(stderr.String()) {
			t.Errorf("paramexec's log lacks %s:\n%s", want, stderr.String())
		}
	}
	second := waitFor("bye")
	if pidOf(first) == pidOf(second) {
		t.Errorf("the same process answered before and after the change: %q, %q", first, second)
	}

	if err := pe.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err != nil {
		t.Fatalf("paramexec after SIGTERM: %v\n%s", err, stderr.String())
	}
}

// pidOf is the "pid N" an answer starts with.
func pidOf(answer string) string {
	pid, _, _ := strings.Cut(answer, ":")
	return pid
}
