// Package motoserver runs a real moto_server on a loopback port for tests and
// seeds it with SSM parameters and Secrets Manager secrets.
package motoserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/paramexec/paramexec/internal/testenv"
)

// ErrNotInstalled is returned (wrapped) by Start when moto_server is not on PATH.
var ErrNotInstalled = errors.New("moto_server not installed")

// Region is the Region every client and child process is pointed at.
const Region = "us-east-1"

const (
	// readyTimeout bounds how long Start waits for moto to answer; its
	// start-up is a Python import storm that can take seconds on a busy box.
	readyTimeout = 30 * time.Second
	// logLimit keeps the tail of moto's output: one line per request adds up
	// in tests that make thousands of calls.
	logLimit = 1 << 20
	// callTimeout bounds each seeding call so a wedged server fails the test
	// instead of hanging it until go test's global timeout.
	callTimeout = 30 * time.Second
)

// Server is one running moto_server process.
type Server struct {
	URL string // http://127.0.0.1:PORT

	cmd  *exec.Cmd
	logs *tailBuffer
	http *http.Client

	done    chan struct{} // closed once the process has been waited for
	waitErr error         // valid after done is closed

	stopOnce sync.Once
	stopErr  error

	ssm *ssm.Client
	sm  *secretsmanager.Client
}

// errEarlyExit marks a moto_server that died before answering.
var errEarlyExit = errors.New("moto_server exited before it was ready")

// Start launches moto_server on a free loopback port and waits until it
// answers. The server outlives ctx, which only bounds the wait; call Stop.
func Start(ctx context.Context) (*Server, error) {
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		return nil, fmt.Errorf("start moto_server: %w: %w", ErrNotInstalled, err)
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()

	// Handing werkzeug a socket that is already listening leaves no window
	// in which a parallel test binary could take the port.
	s, err := launch(ctx, bin, true)
	if err == nil || !errors.Is(err, errEarlyExit) {
		return s, err
	}
	// A werkzeug that ignores the handed socket binds the port itself, finds
	// it taken by that very socket and exits: fall back to picking a port
	// and closing it first, retrying in case another process grabs it.
	for attempt := 0; attempt < 3 && ctx.Err() == nil; attempt++ {
		s, err = launch(ctx, bin, false)
		if err == nil || !errors.Is(err, errEarlyExit) {
			return s, err
		}
	}
	return nil, err
}

func launch(ctx context.Context, bin string, handoff bool) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start moto_server: reserve port: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port

	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", strconv.Itoa(port))
	cmd.Env = childEnv(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own group so Stop can kill everything it started, and
		// Pdeathsig so a test binary that dies (panic, go test timeout,
		// Ctrl-C) does not leave the server running.
		Setpgid:   true,
		Pdeathsig: syscall.SIGKILL,
	}
	if handoff {
		f, err := ln.(*net.TCPListener).File()
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("start moto_server: listener fd: %w", err)
		}
		defer f.Close()
		cmd.ExtraFiles = []*os.File{f} // fd 3
		cmd.Env = append(cmd.Env, "WERKZEUG_RUN_MAIN=true", "WERKZEUG_SERVER_FD=3")
	}
	// With handoff the child holds its own copy after Start; without it the
	// port must be free before moto binds it.
	defer ln.Close()
	if !handoff {
		ln.Close()
	}

	s := &Server{
		URL:  "http://127.0.0.1:" + strconv.Itoa(port),
		cmd:  cmd,
		logs: &tailBuffer{max: logLimit},
		http: &http.Client{Timeout: 10 * time.Second},
		done: make(chan struct{}),
	}
	cmd.Stdout = s.logs
	cmd.Stderr = s.logs
	cmd.WaitDelay = 5 * time.Second

	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the forking thread exits, not the process.
		// Holding this goroutine on that thread for the child's whole life
		// makes it mean "when the test binary dies".
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			s.waitErr = err
			close(s.done)
			started <- err
			return
		}
		started <- nil
		s.waitErr = cmd.Wait()
		close(s.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start moto_server: %w", err)
	}

	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	cfg := s.Config(ctx)
	s.ssm = ssm.NewFromConfig(cfg)
	s.sm = secretsmanager.NewFromConfig(cfg)
	return s, nil
}

// childEnv drops variables that would change how moto binds or which port it
// reports, in case the test binary inherited them.
func childEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "WERKZEUG_RUN_MAIN", "WERKZEUG_SERVER_FD", "MOTO_PORT":
			continue
		}
		out = append(out, kv)
	}
	return out
}

func (s *Server) waitReady(ctx context.Context) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.ping(ctx) == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("%w (%v); log tail:\n%s", errEarlyExit, s.waitErr, s.logTail(20))
		case <-ctx.Done():
			return fmt.Errorf("wait for moto_server at %s: %w; log tail:\n%s", s.URL, ctx.Err(), s.logTail(20))
		case <-tick.C:
		}
	}
}

func (s *Server) ping(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/moto-api/", nil)
	if err != nil {
		return err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /moto-api/: %s", resp.Status)
	}
	return nil
}

// Stop kills moto_server's whole process group and waits for it. It reports
// an error if the server had already died on its own. Safe to call twice.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		select {
		case <-s.done:
			s.stopErr = fmt.Errorf("moto_server exited before Stop: %v", s.waitErr)
		default:
		}
		// Kill the group even if the leader is gone, to catch stragglers.
		if err := syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) && s.stopErr == nil {
			s.stopErr = fmt.Errorf("kill moto_server: %w", err)
		}
		<-s.done
	})
	return s.stopErr
}

// Pid is moto_server's process id, which is also its process group id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Logs returns the tail (up to 1 MiB) of moto_server's stdout and stderr.
func (s *Server) Logs() string { return s.logs.String() }

func (s *Server) logTail(lines int) string {
	l := strings.Split(strings.TrimRight(s.Logs(), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// Reset wipes all of moto's state: every parameter, secret and version.
func (s *Server) Reset() error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/moto-api/reset", nil)
	if err != nil {
		return fmt.Errorf("reset moto: %w", err)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return fmt.Errorf("reset moto: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("reset moto: %s", resp.Status)
	}
	return nil
}

// Env returns the environment a child process (such as the paramexec
// binary) needs to talk to this server, to append to a base environment.
func (s *Server) Env() []string { return Env(s.URL) }

// Env returns the child-process environment for an AWS endpoint at url, such
// as a faultproxy in front of the server.
func Env(url string) []string {
	return []string{
		"AWS_ENDPOINT_URL=" + url,
		"AWS_ACCESS_KEY_ID=testing",
		"AWS_SECRET_ACCESS_KEY=testing",
		"AWS_REGION=" + Region,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// Config returns an SDK config for in-process clients of this server. It is
// built directly rather than by config.LoadDefaultConfig so that the
// developer's environment and ~/.aws files cannot leak into tests; ctx is
// accepted for symmetry with LoadDefaultConfig.
func (s *Server) Config(ctx context.Context) aws.Config {
	return aws.Config{
		Region:       Region,
		Credentials:  credentials.NewStaticCredentialsProvider("testing", "testing", ""),
		BaseEndpoint: aws.String(s.URL),
	}
}

// SSM is a client of this server with the SDK's default retryer.
func (s *Server) SSM() *ssm.Client { return s.ssm }

// SecretsManager is a client of this server with the SDK's default retryer.
func (s *Server) SecretsManager() *secretsmanager.Client { return s.sm }

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// Main runs a test binary's tests against a fresh moto_server: call it as
// os.Exit(motoserver.Main(m, &srv)) from TestMain. Without moto_server it
// skips every test, except on CI (CI=true) where it fails loudly.
func Main(m *testing.M, srv **Server) int {
	return runMain(Start, m.Run, testenv.OnCI(), os.Stdout, os.Stderr, srv)
}

func runMain(start func(context.Context) (*Server, error), run func() int, ci bool, stdout, stderr io.Writer, srv **Server) int {
	s, err := start(context.Background())
	if errors.Is(err, ErrNotInstalled) {
		if ci {
			fmt.Fprintf(stderr, "FAIL: moto_server is not installed but CI=true: these tests must run on CI (%v)\n", err)
			return 1
		}
		fmt.Fprintln(stdout, "SKIP: moto_server not installed")
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "FAIL: %v\n", err)
		return 1
	}
	*srv = s
	defer func() {
		if err := s.Stop(); err != nil {
			fmt.Fprintf(stderr, "motoserver: %v\n", err)
		}
	}()
	code := run()
	if code != 0 {
		fmt.Fprintf(stderr, "moto_server log tail:\n%s\n", s.logTail(40))
	}
	return code
}
