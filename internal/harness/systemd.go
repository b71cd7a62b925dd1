package harness

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// FakeSystemd is a real unixgram socket standing in for systemd's
// NOTIFY_SOCKET; it keeps every datagram paramexec sends.
type FakeSystemd struct {
	Path string
	mu   sync.Mutex
	msgs []string
}

func ListenSystemd(t *testing.T) *FakeSystemd {
	t.Helper()
	sd := &FakeSystemd{Path: filepath.Join(t.TempDir(), "notify.sock")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sd.Path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			sd.mu.Lock()
			sd.msgs = append(sd.msgs, string(buf[:n]))
			sd.mu.Unlock()
		}
	}()
	return sd
}

func (sd *FakeSystemd) Received() []string {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	return slices.Clone(sd.msgs)
}

// Count is how many datagrams hold the line.
func (sd *FakeSystemd) Count(line string) int {
	n := 0
	for _, m := range sd.Received() {
		if slices.Contains(strings.Split(m, "\n"), line) {
			n++
		}
	}
	return n
}

// With reports whether some datagram has a line starting with prefix.
func (sd *FakeSystemd) With(prefix string) bool {
	for _, m := range sd.Received() {
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, prefix) {
				return true
			}
		}
	}
	return false
}

// Served is what the test server's / answers.
type Served struct {
	Pid   int    `json:"pid"`
	Value string `json:"value"`
}

// Get asks the test server on port who it is; ok is false if nothing answers.
func Get(port string) (Served, bool) {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://127.0.0.1:" + port + "/")
	if err != nil {
		return Served{}, false
	}
	defer resp.Body.Close()
	var s Served
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&s) != nil {
		return Served{}, false
	}
	return s, true
}

var childStartedRe = regexp.MustCompile(`msg="child started" app=paramexec pid=(\d+)`)

// ChildPids lists the children paramexec's log says it started, in order.
func ChildPids(log string) []int {
	var out []int
	for _, m := range childStartedRe.FindAllStringSubmatch(log, -1) {
		n, _ := strconv.Atoi(m[1])
		out = append(out, n)
	}
	return out
}
