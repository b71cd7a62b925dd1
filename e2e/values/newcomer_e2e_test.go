package values

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/paramexec/paramexec/internal/harness"
)

// Without credentials off EC2, the SDK's default chain ends at instance
// metadata. Here a local stand-in refuses the IMDSv2 token (so the SDK
// falls back to IMDSv1 and says so) and knows no role. With --log-format
// json every line paramexec writes, the SDK's warning included, is JSON,
// and the error says what to set.
func TestMissingCredentialsSayWhatToSetInJSON(t *testing.T) {
	harness.ParallelE2E(t)
	var tokens, roles int
	var mu sync.Mutex
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/latest/api/token":
			tokens++
			http.Error(w, "forbidden", http.StatusForbidden)
		case strings.HasPrefix(r.URL.Path, "/latest/meta-data/iam/security-credentials"):
			roles++
			http.NotFound(w, r)
		default:
			http.NotFound(w, r)
		}
	}))
	defer imds.Close()
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"AWS_ENDPOINT_URL=" + harness.Moto.URL,
		"AWS_REGION=us-east-1",
		"AWS_EC2_METADATA_SERVICE_ENDPOINT=" + imds.URL,
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
	}
	r := harness.RunBinary(t, env, "--log-format", "json", "--startup-timeout", "5s", "--path", "/app", "--print")
	if r.Code != harness.ExitSource {
		t.Errorf("exit %d, want %d; stderr:\n%s", r.Code, harness.ExitSource, r.Stderr)
	}
	var sdkWarned, hinted bool
	for _, line := range strings.Split(strings.TrimSuffix(r.Stderr, "\n"), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("a stderr line is not JSON (%v): %q", err, line)
			continue
		}
		msg, _ := rec["msg"].(string)
		if rec["from"] == "aws-sdk" && strings.Contains(msg, "IMDSv1") {
			sdkWarned = true
		}
		if e, _ := rec["error"].(string); strings.Contains(e, "no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give the task or instance an IAM role") {
			hinted = true
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if tokens == 0 || roles == 0 {
		t.Fatalf("the stand-in was not asked (%d token, %d role requests): the test proves nothing; stderr:\n%s", tokens, roles, r.Stderr)
	}
	if !sdkWarned {
		t.Errorf("the SDK's IMDSv1 fallback warning did not come through the logger; stderr:\n%s", r.Stderr)
	}
	if !hinted {
		t.Errorf("the error does not say what to set; stderr:\n%s", r.Stderr)
	}
}

// Usage errors all have one shape, "paramexec: …" and the --help hint,
// and say what a value should look like.
func TestUsageErrorsHaveOneShape(t *testing.T) {
	harness.ParallelE2E(t)
	for _, tc := range []struct {
		env  []string
		args []string
		want string
	}{
		{nil, []string{"--interval", "banana", "--", "true"}, `--interval "banana": want a duration such as 30s, 5m, 1h`},
		{[]string{"PARAMEXEC_INTERVAL=banana"}, []string{"--", "true"}, `PARAMEXEC_INTERVAL="banana": want a duration such as 30s, 5m, 1h`},
		{nil, []string{"--discover-every", "x", "--", "true"}, `--discover-every "x": want a whole number`},
		{nil, []string{"--on-change", "reboot", "--", "true"}, `--on-change "reboot": want restart, exit or signal:NAME`},
		{nil, []string{"--format", "json", "--", "true"}, `--format only goes with --print`},
		{nil, []string{"--reveal", "--", "true"}, `--reveal only goes with --print`},
		{nil, []string{"--bogus", "--", "true"}, `unknown flag --bogus`},
		{nil, []string{"--log-format", "xml", "--", "true"}, `--log-format "xml": want text or json`},
		{nil, []string{"--log-level", "loud", "--", "true"}, `--log-level "loud": want debug, info, warn or error`},
		{nil, []string{"--param", "a b", "--", "true"}, `--param "a b": invalid parameter name`},
	} {
		r := harness.RunBinary(t, append(harness.BaseEnv(""), tc.env...), tc.args...)
		want := "paramexec: " + tc.want
		if r.Code != harness.ExitUsage || !strings.HasPrefix(r.Stderr, want) || !strings.HasSuffix(r.Stderr, "\nRun 'paramexec --help' for usage.\n") {
			t.Errorf("%v %v: exit %d, stderr %q; want exit %d and %q, then the --help hint", tc.env, tc.args, r.Code, r.Stderr, harness.ExitUsage, want)
		}
		if n := strings.Count(r.Stderr, "\n"); n != 2 {
			t.Errorf("%v: %d lines, want the error and the hint", tc.args, n)
		}
		if strings.Contains(r.Stderr, "on-change \"reboot\": on-change") {
			t.Errorf("%v: the setting named twice: %q", tc.args, r.Stderr)
		}
	}
}
