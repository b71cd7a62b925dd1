package proxy

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/paramexec/paramexec/internal/listen"
)

// Spec is one parsed --proxy LISTEN=TARGET_ENV value.
type Spec struct {
	// Listen is the HOST:PORT paramexec listens on (HOST empty: all).
	Listen string
	// TargetEnv is the variable that tells each child its port.
	TargetEnv string
}

// ParseSpec parses LISTEN=TARGET_ENV, where LISTEN is tcp://HOST:PORT,
// HOST:PORT or :PORT and TARGET_ENV a variable name ([A-Za-z_][A-Za-z0-9_]*).
// Errors wrap listen.ErrUsage.
func ParseSpec(value string) (Spec, error) {
	eq := strings.LastIndexByte(value, '=')
	if eq < 0 {
		return Spec{}, fmt.Errorf("--proxy %q: want LISTEN=TARGET_ENV, e.g. :8080=PORT: %w", value, listen.ErrUsage)
	}
	addr, env := value[:eq], value[eq+1:]
	if !validEnvName(env) {
		return Spec{}, fmt.Errorf("--proxy %q: %q is not a variable name: %w", value, env, listen.ErrUsage)
	}
	if strings.Contains(addr, "=") {
		return Spec{}, fmt.Errorf("--proxy %q: LISTEN takes no name: %w", value, listen.ErrUsage)
	}
	ls, err := listen.Parse(addr, 0)
	if err != nil {
		return Spec{}, fmt.Errorf("--proxy %q: %w", value, err)
	}
	if ls.Network != "tcp" {
		return Spec{}, fmt.Errorf("--proxy %q: LISTEN must be TCP: %w", value, listen.ErrUsage)
	}
	return Spec{Listen: ls.Address, TargetEnv: env}, nil
}

func validEnvName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '_' && (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return s != ""
}

// Listen binds spec's address. Errors wrap listen.ErrBind (exit 3), as a
// --listen address the machine refuses.
func Listen(ctx context.Context, spec Spec) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", spec.Listen)
	if err != nil {
		return nil, fmt.Errorf("--proxy %s: %w: %w", spec.Listen, listen.ErrBind, err)
	}
	return ln, nil
}

// FreePort returns a loopback TCP port nobody listens on, for a child to
// bind: it binds 127.0.0.1:0, reads the port the kernel chose and closes.
//
// The port is free when FreePort returns; between then and the child's bind
// any other process may take it. Linux (4.6 and later) gives bind(0) ports
// of the parity that connect(2) avoids, so outgoing connections, including
// the proxy's own, seldom do. Readiness covers the rest: a child that cannot
// bind exits or never becomes ready, and is a failed start; but a TCP-connect
// readiness check cannot tell the child's listener from a stranger's, so
// the caller should prefer a check that only the app answers (an HTTP path).
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free loopback port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
