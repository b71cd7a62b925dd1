package ready

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/paramexec/paramexec/internal/harness"
)

// TestSystemdNotify runs paramexec as a Type=notify unit would, with a real
// unixgram socket standing in for systemd.
func TestSystemdNotify(t *testing.T) {
	harness.ParallelE2E(t)
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var mu sync.Mutex
	var msgs []string
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			mu.Lock()
			msgs = append(msgs, string(buf[:n]))
			mu.Unlock()
		}
	}()
	received := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), msgs...)
	}
	has := func(prefix string) func() bool {
		return func() bool {
			for _, m := range received() {
				if strings.HasPrefix(m, prefix) {
					return true
				}
			}
			return false
		}
	}

	file := filepath.Join(t.TempDir(), "app.env")
	os.WriteFile(file, []byte("SETTING="+harness.Val("one")+"\n"), 0o600)
	args, rec := harness.ChildArgs(t)
	pe := harness.StartBinary(t, append(harness.BaseEnv(""), "NOTIFY_SOCKET="+sock), append([]string{"--env-file", file, "--interval", "1h"}, args...)...)
	first := harness.WaitStarts(t, rec, 1)[0]
	harness.WaitFor(t, "READY=1", has("READY=1"))
	if _, leaked := first.Env["NOTIFY_SOCKET"]; leaked {
		t.Error("the child saw NOTIFY_SOCKET: it could report readiness for paramexec")
	}

	os.WriteFile(file, []byte("SETTING="+harness.Val("two")+"\n"), 0o600)
	harness.WaitStarts(t, rec, 2)
	harness.WaitFor(t, "READY=1 after the restart", func() bool {
		n := 0
		for _, m := range received() {
			if strings.HasPrefix(m, "READY=1") {
				n++
			}
		}
		return n == 2
	})
	pe.Signal(syscall.SIGTERM)
	pe.Wait()
	harness.WaitFor(t, "STOPPING=1", has("STOPPING=1"))

	// The order systemd needs: ready, reloading, ready again, stopping.
	var kinds []string
	for _, m := range received() {
		kind, _, _ := strings.Cut(m, "\n")
		if kind != "" && !strings.HasPrefix(kind, "STATUS=") {
			kinds = append(kinds, kind)
		}
		if strings.Contains(m, harness.ValueMark) {
			t.Errorf("a notification holds a value: %q", m)
		}
	}
	if got := strings.Join(kinds, " "); got != "READY=1 RELOADING=1 READY=1 STOPPING=1" {
		t.Errorf("notifications: %s", got)
	}
	for _, m := range received() {
		if strings.HasPrefix(m, "RELOADING=1") && (!strings.Contains(m, "MONOTONIC_USEC=") || !strings.Contains(m, "SETTING")) {
			t.Errorf("RELOADING=1 lacks MONOTONIC_USEC or the changed name: %q", m)
		}
	}
}

// TestRegionFromIMDS plays EC2's instance metadata service (IMDSv2: a token
// first, then the identity document) with no AWS_REGION set.
func TestRegionFromIMDS(t *testing.T) {
	harness.ParallelE2E(t)
	const region = "eu-west-3"
	var tokens, documents int
	var mu sync.Mutex
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/latest/api/token":
			tokens++
			w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds"))
			w.Write([]byte("test-token"))
		case r.URL.Path == "/latest/dynamic/instance-identity/document" && r.Header.Get("X-Aws-Ec2-Metadata-Token") == "test-token":
			documents++
			w.Write([]byte(`{"region":"` + region + `","availabilityZone":"` + region + `a"}`))
		default:
			http.Error(w, "unauthorized", http.StatusUnauthorized)
		}
	}))
	defer imds.Close()

	cfg := harness.Moto.Config(context.Background())
	cfg.Region = region
	path := harness.UniquePath(t)
	_, err := ssm.NewFromConfig(cfg).PutParameter(t.Context(), &ssm.PutParameterInput{
		Name: aws.String(path + "/WHERE"), Value: aws.String(harness.Val("paris")), Type: types.ParameterTypeString,
	})
	if err != nil {
		t.Fatal(err)
	}
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"AWS_ENDPOINT_URL=" + harness.Moto.URL,
		"AWS_ACCESS_KEY_ID=testing", "AWS_SECRET_ACCESS_KEY=testing",
		"AWS_EC2_METADATA_SERVICE_ENDPOINT=" + imds.URL,
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
	}
	r := harness.RunBinary(t, env, "--path", path, "--print")
	if r.Code != 0 || !strings.Contains(r.Stdout, "WHERE=") {
		t.Fatalf("exit %d, stdout %q, stderr: %q", r.Code, r.Stdout, r.Stderr)
	}
	mu.Lock()
	defer mu.Unlock()
	if tokens == 0 || documents == 0 {
		t.Errorf("IMDSv2 not used: %d token and %d document requests", tokens, documents)
	}
}
