package values

import (
	"crypto/sha1"
	"encoding/hex"
	"html"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unicode/utf8"

	"github.com/paramexec/paramexec/internal/harness"
	"github.com/paramexec/paramexec/internal/motoserver"
)

// credentialsHome is a HOME of the test's own with an AWS config file, and
// the environment that makes paramexec read it: moto for SSM, no keys in
// the environment (they would win over any profile), no instance metadata.
func credentialsHome(t *testing.T, config string, extra ...string) (home string, env []string) {
	t.Helper()
	home = t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".aws"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(home, ".aws", "config")
	if err := os.WriteFile(cfgFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + home,
		"AWS_ENDPOINT_URL=" + harness.Moto.URL, "AWS_REGION=" + motoserver.Region,
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + cfgFile,
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, ".aws", "credentials"),
	}
	return home, append(env, extra...)
}

// writeFile writes data to path with mode, making its directory.
func writeFile(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

// Every credential provider that reads something a secret may be in (a
// process's output, a token file, the SSO cache) fails with that text
// kept out of paramexec's log, and with a message that names the provider
// and the profile, so that the user knows where to look. The seeded
// values carry harness.ValueMark, so the suite's log scan (logScan) checks every
// run here as well.
func TestCredentialProvidersNeverLogWhatTheyRead(t *testing.T) {
	harness.ParallelE2E(t)
	path := harness.UniquePath(t)
	harness.Moto.PutParameter(t, path+"/TOKEN", harness.Val("creds-param"), "String")

	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) []string // the run's environment
		want  []string                    // words the error must hold
		code  int                         // exit code; 0: harness.ExitSource
	}{
		{
			// The case of the issue: a notice line before valid JSON. The
			// SDK's error quoted the whole output, keys and token included.
			name: "credential_process notice before JSON",
			setup: func(t *testing.T) []string {
				script := filepath.Join(t.TempDir(), "creds.sh")
				writeFile(t, script, "#!/bin/sh\necho 'notice: "+harness.Val("cp-notice")+" expires soon'\n"+
					`echo '{"Version": 1, "AccessKeyId": "AKIA`+harness.Val("cpkey")+`", "SecretAccessKey": "`+harness.Val("cp-secret")+
					`", "SessionToken": "`+harness.Val("cp-session")+`"}'`+"\n", 0o700)
				_, env := credentialsHome(t, "[profile leaks-cp]\ncredential_process = "+script+"\n", "AWS_PROFILE=leaks-cp")
				return env
			},
			want: []string{"credential_process", "profile leaks-cp", "not the JSON"},
		},
		{
			name: "credential_process garbage only",
			setup: func(t *testing.T) []string {
				script := filepath.Join(t.TempDir(), "creds.sh")
				writeFile(t, script, "#!/bin/sh\nprintf '"+harness.Val("cp-garbage")+"\\001\\377 }{'\n", 0o700)
				_, env := credentialsHome(t, "[profile leaks-garbage]\ncredential_process = "+script+"\n", "AWS_PROFILE=leaks-garbage")
				return env
			},
			want: []string{"credential_process", "profile leaks-garbage"},
		},
		{
			// A token file of junk, which STS (here a server in its place)
			// refuses and quotes back in its error message.
			name: "web identity token file with junk",
			setup: func(t *testing.T) []string {
				tokenFile := filepath.Join(t.TempDir(), "token")
				writeFile(t, tokenFile, harness.Val("jwt-junk")+"\x01\xff not a JWT", 0o600)
				sts := httptest.NewServer(http.HandlerFunc(echoSTS))
				t.Cleanup(sts.Close)
				_, env := credentialsHome(t, "", "AWS_WEB_IDENTITY_TOKEN_FILE="+tokenFile,
					"AWS_ROLE_ARN=arn:aws:iam::123456789012:role/leaks", "AWS_ENDPOINT_URL_STS="+sts.URL)
				return env
			},
			want: []string{"web identity token file", "AssumeRoleWithWebIdentity", "InvalidIdentityToken"},
		},
		{
			// A cached SSO token with a field that does not parse: the SDK
			// quoted the field's text.
			name: "SSO cache with junk",
			setup: func(t *testing.T) []string {
				const startURL = "https://leaks.example/start"
				home, env := credentialsHome(t, "[profile leaks-sso]\nsso_start_url = "+startURL+
					"\nsso_region = "+motoserver.Region+"\nsso_account_id = 123456789012\nsso_role_name = leaks\n",
					"AWS_PROFILE=leaks-sso")
				sum := sha1.Sum([]byte(startURL))
				writeFile(t, filepath.Join(home, ".aws", "sso", "cache", hex.EncodeToString(sum[:])+".json"),
					`{"accessToken": "`+harness.Val("sso-token")+`", "expiresAt": "`+harness.Val("sso-not-a-time")+
						`", "region": "`+motoserver.Region+`", "startUrl": "`+startURL+`"}`, 0o600)
				return env
			},
			want: []string{"SSO", "profile leaks-sso", "aws sso login"},
		},
		{
			// The SDK quotes a configuration line it cannot parse
			// ("account_id_endpoint_mode=…"); the files hold secret keys.
			name: "configuration file with a bad value",
			setup: func(t *testing.T) []string {
				_, env := credentialsHome(t, "[profile leaks-cfg]\naccount_id_endpoint_mode = "+harness.Val("cfg-bad")+"\n", "AWS_PROFILE=leaks-cfg")
				return env
			},
			want: []string{"AWS configuration", "profile leaks-cfg"},
			code: harness.ExitUsage,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args, rec := harness.ChildArgs(t, "-exit", "0")
			r := harness.RunBinary(t, tc.setup(t), append([]string{"--path", path, "--startup-timeout", "3s"}, args...)...)
			want := harness.ExitSource
			if tc.code != 0 {
				want = tc.code
			}
			if r.Code != want || len(harness.ReadRecords(t, rec)) != 0 {
				t.Errorf("exit %d (want %d, command not run); stderr:\n%s", r.Code, want, r.Stderr)
			}
			t.Logf("stderr:\n%s", r.Stderr)
			if strings.Contains(r.Stdout+r.Stderr, harness.ValueMark) {
				t.Errorf("the output holds what the provider read:\n%s", r.Stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.Stderr, w) {
					t.Errorf("the error does not say %q:\n%s", w, r.Stderr)
				}
			}
		})
	}
}

// echoSTS answers AssumeRoleWithWebIdentity as STS does a token it
// refuses, but quoting the token, as a hostile or broken endpoint could.
func echoSTS(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	token := html.EscapeString(strings.Map(func(r rune) rune {
		if r < ' ' || r == utf8.RuneError {
			return -1
		}
		return r
	}, r.Form.Get("WebIdentityToken")))
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(http.StatusBadRequest)
	_, _ = w.Write([]byte(`<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>` +
		`<Code>InvalidIdentityToken</Code><Message>Token ` + token + ` is not valid</Message></Error>` +
		`<RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>`))
}

// While polling, credentials that expire are fetched again: a
// credential_process that then prints garbage around its keys fails each
// poll, and the "poll failed" lines name the provider, never what it
// printed. The process's first credentials expire 3 s after they are
// printed; the test watches until a poll has failed on the garbage.
func TestCredentialProcessGarbageWhilePolling(t *testing.T) {
	harness.ParallelE2E(t)
	path := harness.UniquePath(t)
	harness.Moto.PutParameter(t, path+"/TOKEN", harness.Val("poll-param"), "String")
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken")
	script := filepath.Join(dir, "creds.sh")
	writeFile(t, script, `#!/bin/sh
if [ -e `+broken+` ]; then
	echo 'warning: `+harness.Val("poll-notice")+`'
	echo '{"Version": 1, "AccessKeyId": "AKIA`+harness.Val("pollkey")+`", "SecretAccessKey": "`+harness.Val("poll-secret")+`"}'
	exit 0
fi
echo "{\"Version\": 1, \"AccessKeyId\": \"AKIAGOOD\", \"SecretAccessKey\": \"good\", \"Expiration\": \"$(date -u -d '+3 seconds' +%Y-%m-%dT%H:%M:%SZ)\"}"
`, 0o700)
	_, env := credentialsHome(t, "[profile leaks-poll]\ncredential_process = "+script+"\n", "AWS_PROFILE=leaks-poll")
	args, rec := harness.ChildArgs(t)
	pe := harness.StartBinary(t, env, append([]string{"--path", path, "--interval", "1s"}, args...)...)
	harness.WaitStarts(t, rec, 1)
	writeFile(t, broken, "", 0o600)
	harness.WaitFor(t, "a poll failed on the credential_process's garbage", func() bool {
		return strings.Contains(pe.Stderr.String(), "not the JSON credentials document")
	})
	pe.Signal(syscall.SIGTERM)
	pe.Wait()
	out := pe.Stderr.String()
	if strings.Contains(out, harness.ValueMark) {
		t.Errorf("the log holds what the process printed:\n%s", out)
	}
	if !strings.Contains(out, "profile leaks-poll") {
		t.Errorf("the failed poll does not name the profile:\n%s", out)
	}
}
