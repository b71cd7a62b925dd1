package ready

import (
	"os"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		spec     string
		kind     Kind
		addr     string
		url      string
		insecure bool
	}{
		{spec: "tcp:8080", kind: TCP, addr: "127.0.0.1:8080"},
		{spec: "tcp:localhost:80", kind: TCP, addr: "localhost:80"},
		{spec: "tcp:[::1]:65535", kind: TCP, addr: "[::1]:65535"},
		{spec: "tcp:{port}", kind: TCP, addr: "127.0.0.1:{port}"},
		{spec: "http://127.0.0.1:8080/up", kind: HTTP, url: "http://127.0.0.1:8080/up"},
		{spec: "http://localhost/", kind: HTTP, url: "http://localhost/"},
		{spec: "http://127.0.0.1:{port}/up?deep=1", kind: HTTP, url: "http://127.0.0.1:{port}/up?deep=1"},
		{spec: "https://example.internal:8443/health", kind: HTTP, url: "https://example.internal:8443/health"},
		{spec: "https+insecure://127.0.0.1:8443/up", kind: HTTP, url: "https://127.0.0.1:8443/up", insecure: true},
		{spec: "notify", kind: Notify},
	} {
		c, err := Parse(tc.spec)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.spec, err)
			continue
		}
		if c.Kind() != tc.kind || c.addr != tc.addr || c.url != tc.url || c.insecure != tc.insecure || c.String() != tc.spec {
			t.Errorf("Parse(%q) = %v %q %q insecure=%v spec %q; want %v %q %q insecure=%v",
				tc.spec, c.Kind(), c.addr, c.url, c.insecure, c.String(), tc.kind, tc.addr, tc.url, tc.insecure)
		}
	}
}

func TestParseExec(t *testing.T) {
	c, err := Parse("exec:sh  -c \t 'exit 0'")
	if err != nil {
		t.Fatal(err)
	}
	// White space splits; quotes are characters like any other.
	if want := []string{"-c", "'exit", "0'"}; c.Kind() != Exec || !slices.Equal(c.argv[1:], want) {
		t.Errorf("argv = %q, want [sh %q]", c.argv, want)
	}
	if !strings.HasPrefix(c.argv[0], "/") {
		t.Errorf("argv[0] = %q, want the path PATH gave", c.argv[0])
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if c, err := Parse("exec:" + self + " --port={port}"); err != nil || c.argv[0] != self {
		t.Errorf("Parse(exec:absolute) = %q, %v", c.argv, err)
	}
}

func TestParseErrors(t *testing.T) {
	for spec, want := range map[string]string{
		"":                                "want tcp:PORT",
		"tcp:":                            "port",
		"tcp:0":                           "port \"0\"",
		"tcp:65536":                       "want 1-65535",
		"tcp:http":                        "port \"http\"",
		"tcp:+80":                         "port",
		"tcp::80":                         "empty host",
		"tcp:a:b:c":                       "want tcp:PORT",
		"udp:53":                          "want tcp:PORT",
		"http://":                         "no host",
		"http://:80/":                     "no host",
		"http://127.0.0.1:/":              "empty port",
		"http://127.0.0.1:99999/":         "port",
		"http://user:pw@127.0.0.1/":       "user information",
		"http://127.0.0.1/#x":             "fragment",
		"http://{port}/":                  "only stands for the port",
		"http://127.0.0.1:1/{port}":       "only stands for the port",
		"ftp://127.0.0.1/":                "want tcp:PORT",
		"HTTP://127.0.0.1/":               "want tcp:PORT",
		"notify:1":                        "want tcp:PORT",
		"exec:":                           "needs a command",
		"exec:   ":                        "needs a command",
		"exec:paramexec-no-such-command":  "executable file not found",
		"exec:{port}":                     "command's name",
		"https+insecure://u@127.0.0.1:1/": "user information",
	} {
		_, err := Parse(spec)
		if err == nil {
			t.Errorf("Parse(%q) = nil error", spec)
			continue
		}
		if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--ready") {
			t.Errorf("Parse(%q) = %q; want it to name --ready and say %q", spec, err, want)
		}
	}
}

func TestWithPort(t *testing.T) {
	for spec, want := range map[string]string{
		"tcp:{port}":                    "tcp:41234",
		"tcp:127.0.0.2:{port}":          "tcp:127.0.0.2:41234",
		"http://127.0.0.1:{port}/up":    "http://127.0.0.1:41234/up",
		"https+insecure://h:{port}/":    "https+insecure://h:41234/",
		"exec:sh -c true --port={port}": "exec:sh -c true --port=41234",
		"tcp:8080":                      "tcp:8080",
		"notify":                        "notify",
	} {
		c, err := Parse(spec)
		if err != nil {
			t.Fatal(err)
		}
		if c.UsesPort() != strings.Contains(spec, "{port}") {
			t.Errorf("%q: UsesPort() = %v", spec, c.UsesPort())
		}
		got := c.WithPort(41234)
		if got.String() != want || got.UsesPort() {
			t.Errorf("%q.WithPort = %q (UsesPort %v), want %q", spec, got, got.UsesPort(), want)
		}
		if strings.Contains(got.addr+got.url+strings.Join(got.argv, " "), "{port}") {
			t.Errorf("%q.WithPort left {port} in %q %q %q", spec, got.addr, got.url, got.argv)
		}
		if c.String() != spec {
			t.Errorf("WithPort changed the original: %q", c)
		}
	}
	c, _ := Parse("exec:sh --port={port}")
	if got := c.WithPort(1); got.argv[1] != "--port=1" || c.argv[1] != "--port={port}" {
		t.Errorf("argv %q, original %q: want a copy with the port", got.argv, c.argv)
	}
}
