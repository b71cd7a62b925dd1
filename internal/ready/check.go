// Package ready decides when a supervised child is ready: it parses the
// --ready checks (tcp:, http(s)://, notify, exec:) and polls them until all pass.
//
// Design, for the supervisor that drives it from its one goroutine:
//
//   - Parse turns a spec into a Check; a bad spec is an error that names the
//     spec and what is wrong with it, for the caller to turn into a usage
//     error (exit 2). Specs name hosts, ports, paths and commands: they are
//     logged as given, so they must not carry secrets (a URL with user
//     information is refused for that reason).
//   - In --proxy mode a spec may hold {port}; Check.WithPort fills it in for
//     each child. A check with {port} left in fails at once in Wait.
//   - Wait(ctx, checks, opts) polls every check in its own goroutine until
//     each has passed once (a pass is kept: a child that answered once is
//     ready, a later blip is not a failed start) or ctx ends, then returns nil
//     or a *NotReadyError naming the first check, in the order given, that
//     never passed, its tries and its last reason. The caller runs it as
//     `go func() { res <- ready.Wait(ctx, checks, opts) }()` and selects on
//     res; cancelling ctx makes Wait return promptly, with no process left.
//   - Every try is fresh: a new TCP connection, HTTP without keep-alive or
//     proxy (a pooled connection could reach the previous child), one
//     per-try timeout (Options.TryTimeout). A refused connection is "not
//     yet". The period starts at 100 ms and grows by a fifth per try to
//     250 ms. An HTTP body is read only to be discarded, never reported.
//   - notify passes when Options.Notified is closed: the supervisor owns the
//     notify socket (sdnotify.Receiver), filters messages by the current
//     child's pid and closes the channel on its READY=1.
//   - exec: runs the command, split on white space (no shell, no quoting, no
//     expansion; the first word is looked up in PATH by Parse), in its own
//     process group, stdin from /dev/null, output to Options.Output or
//     /dev/null, with Options.ExecTimeout per try. See Procs for why the
//     process is not started with os/exec and who reaps it.
package ready

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
)

// Kind is what a check does.
type Kind int

const (
	TCP    Kind = iota + 1 // a TCP connect succeeds
	HTTP                   // a GET answers 2xx or 3xx
	Notify                 // the child sent READY=1
	Exec                   // a command exits 0
)

func (k Kind) String() string {
	switch k {
	case TCP:
		return "tcp"
	case HTTP:
		return "http"
	case Notify:
		return "notify"
	case Exec:
		return "exec"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// PortPlaceholder stands for the child's port in --proxy mode.
const PortPlaceholder = "{port}"

// insecureScheme is https without certificate verification. It is spelled
// into the URL, not a separate flag, so that the choice sits next to the
// address it weakens and shows in every log line that names the check.
const insecureScheme = "https+insecure"

// Check is one parsed --ready spec. The zero value is not a valid check.
type Check struct {
	kind     Kind
	spec     string   // as given, for logs and errors
	addr     string   // TCP: host:port
	url      string   // HTTP: the URL to GET (scheme http or https)
	insecure bool     // HTTP: skip certificate verification
	argv     []string // Exec: argv[0] is the resolved path
}

// Parse reads one --ready spec:
//
//	tcp:PORT                     connect to 127.0.0.1:PORT
//	tcp:HOST:PORT                connect to HOST:PORT ([::1]:PORT for IPv6)
//	http://HOST[:PORT]/PATH      GET answers 2xx or 3xx (redirects are not followed)
//	https://HOST[:PORT]/PATH     the same over TLS, certificate verified
//	https+insecure://HOST…       the same over TLS, certificate not verified
//	notify                       the child sends READY=1 to NOTIFY_SOCKET
//	exec:COMMAND ARG…            the command exits 0; split on white space, no shell
//
// PORT may be {port} (--proxy mode; see WithPort), in any spec but notify.
func Parse(spec string) (Check, error) {
	c, err := parse(spec)
	if err != nil {
		return Check{}, fmt.Errorf("--ready %q: %w", spec, err)
	}
	return c, nil
}

func parse(spec string) (Check, error) {
	c := Check{spec: spec}
	switch {
	case spec == "notify":
		c.kind = Notify
		return c, nil
	case strings.HasPrefix(spec, "tcp:"):
		return c.parseTCP(strings.TrimPrefix(spec, "tcp:"))
	case strings.HasPrefix(spec, "http://"), strings.HasPrefix(spec, "https://"),
		strings.HasPrefix(spec, insecureScheme+"://"):
		return c.parseHTTP(spec)
	case strings.HasPrefix(spec, "exec:"):
		return c.parseExec(strings.TrimPrefix(spec, "exec:"))
	}
	return Check{}, errors.New("want tcp:PORT, tcp:HOST:PORT, http://HOST:PORT/PATH, https://…, https+insecure://…, notify or exec:COMMAND")
}

// parseTCP is parse for tcp:PORT and tcp:HOST:PORT, rest without "tcp:".
func (c Check) parseTCP(rest string) (Check, error) {
	c.kind = TCP
	if !strings.Contains(rest, ":") {
		rest = net.JoinHostPort("127.0.0.1", rest)
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil {
		return Check{}, fmt.Errorf("want tcp:PORT or tcp:HOST:PORT: %w", err)
	}
	if host == "" {
		return Check{}, errors.New("want tcp:PORT or tcp:HOST:PORT: empty host")
	}
	if err := checkPort(port, false); err != nil {
		return Check{}, err
	}
	c.addr = net.JoinHostPort(host, port)
	return c, nil
}

// parseHTTP is parse for http://, https:// and https+insecure:// URLs.
func (c Check) parseHTTP(spec string) (Check, error) {
	c.kind = HTTP
	raw := spec
	if strings.HasPrefix(spec, insecureScheme+"://") {
		c.insecure = true
		raw = "https" + strings.TrimPrefix(spec, insecureScheme)
	}
	// url.Parse refuses "{port}" as a port: check a stand-in, keep the text.
	u, err := url.Parse(strings.ReplaceAll(raw, PortPlaceholder, "1"))
	if err != nil {
		return Check{}, fmt.Errorf("bad URL: %w", err)
	}
	switch {
	case u.User != nil:
		return Check{}, errors.New("user information in a --ready URL is not supported: checks are logged as given")
	case u.Hostname() == "":
		return Check{}, errors.New("URL has no host")
	case u.Fragment != "":
		return Check{}, errors.New("URL has a #fragment")
	}
	if p := u.Port(); p != "" {
		if err := checkPort(p, false); err != nil {
			return Check{}, err
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return Check{}, errors.New("URL has an empty port")
	}
	if n := strings.Count(raw, PortPlaceholder); n > 0 {
		_, rest, _ := strings.Cut(raw, "://")
		hostport, _, _ := strings.Cut(rest, "/")
		hostport, _, _ = strings.Cut(hostport, "?")
		if n > 1 || !strings.HasSuffix(hostport, ":"+PortPlaceholder) {
			return Check{}, errors.New("{port} only stands for the port")
		}
	}
	c.url = raw
	return c, nil
}

// parseExec is parse for exec:COMMAND, command without "exec:".
func (c Check) parseExec(command string) (Check, error) {
	c.kind = Exec
	argv := strings.Fields(command)
	if len(argv) == 0 {
		return Check{}, errors.New("exec: needs a command")
	}
	if strings.Contains(argv[0], PortPlaceholder) {
		return Check{}, errors.New("{port} cannot stand in the command's name")
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return Check{}, err
	}
	argv[0] = path
	c.argv = argv
	return c, nil
}

// checkPort accepts 1–65535, or {port} unless filled is set.
func checkPort(p string, filled bool) error {
	if p == PortPlaceholder && !filled {
		return nil
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
		return fmt.Errorf("port %q: want 1-65535", p)
	}
	return nil
}

// Kind says what the check does.
func (c Check) Kind() Kind { return c.kind }

// String is the spec as given; with {port} filled in after WithPort.
func (c Check) String() string { return c.spec }

// UsesPort reports whether the spec holds {port}: only --proxy mode has a
// port to put there, so the caller refuses it otherwise (a usage error).
func (c Check) UsesPort() bool { return strings.Contains(c.spec, PortPlaceholder) }

// WithPort returns the check with {port} replaced by port. A check without
// {port} comes back unchanged.
func (c Check) WithPort(port int) Check {
	if !c.UsesPort() {
		return c
	}
	p := strconv.Itoa(port)
	r := strings.NewReplacer(PortPlaceholder, p)
	out := c
	out.spec = r.Replace(c.spec)
	out.addr = r.Replace(c.addr)
	out.url = r.Replace(c.url)
	if c.argv != nil {
		out.argv = make([]string, len(c.argv))
		for i, a := range c.argv {
			out.argv[i] = r.Replace(a)
		}
	}
	return out
}
