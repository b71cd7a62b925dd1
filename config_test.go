package main

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSplitChecks(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"tcp:8080", []string{"tcp:8080"}},
		{"tcp:8080, notify ,http://h:1/up", []string{"tcp:8080", "notify", "http://h:1/up"}},
		{"exec:/bin/check a,b,tcp:1", []string{"exec:/bin/check a,b", "tcp:1"}},
		{"http://h:1/up?x=1,2", []string{"http://h:1/up?x=1,2"}},
		{"bogus,tcp:1", []string{"bogus", "tcp:1"}},
	} {
		if got := splitChecks(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("splitChecks(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// usageErr is what run reports of args and env before it starts anything:
// nil when they are valid.
func usageErr(args, env []string) error {
	cfg, err := configure(args, env)
	if err != nil {
		return err
	}
	_, sink, err := newLogger(cfg.logFormat, cfg.logLevel, io.Discard)
	if sink != nil {
		sink.Close(time.Second)
	}
	return err
}

// The flag rules, in-process, so that go test -short checks them: each
// case is refused with a message that names the setting (the e2e packages
// check the same through the binary, with its exit code and shape).
func TestFlagRules(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		args []string
		want string
	}{
		{nil, []string{}, "no command given"},
		{nil, []string{"--no-such-flag", "true"}, "--no-such-flag"},
		{nil, []string{"--path", "relative", "true"}, "--path: a path starts with /"},
		{nil, []string{"--format", "xml", "--print"}, `--format "xml": want dotenv, json or shell`},
		{nil, []string{"--on-change", "explode", "true"}, `--on-change "explode"`},
		{nil, []string{"--stop-signal", "SIGNOPE", "true"}, "--stop-signal"},
		{nil, []string{"--reveal", "true"}, "--reveal only goes with --print"},
		{nil, []string{"--interval", "10ms", "true"}, "--interval 10ms: at least 1s"},
		{nil, []string{"--interval", "banana", "--", "true"}, `--interval "banana": want a duration such as 30s, 5m, 1h`},
		{[]string{"PARAMEXEC_INTERVAL=banana"}, []string{"--", "true"}, `PARAMEXEC_INTERVAL="banana": want a duration such as 30s, 5m, 1h`},
		{nil, []string{"--discover-every", "x", "--", "true"}, `--discover-every "x": want a whole number`},
		{nil, []string{"--on-change", "reboot", "--", "true"}, `--on-change "reboot": want restart, exit or signal:NAME`},
		{nil, []string{"--format", "json", "--", "true"}, `--format only goes with --print`},
		{nil, []string{"--bogus", "--", "true"}, `unknown flag --bogus`},
		{nil, []string{"--log-format", "xml", "--", "true"}, `--log-format "xml": want text or json`},
		{nil, []string{"--log-level", "loud", "--", "true"}, `--log-level "loud": want debug, info, warn or error`},
		{nil, []string{"--param", "a b", "--", "true"}, `--param "a b": invalid parameter name`},
		{nil, []string{"--interval", "1s", "--settle", "-1s", "true"}, "--settle -1s: must not be negative"},
		{nil, []string{"--interval", "1s", "--splay", "-2s", "true"}, "--splay -2s: must not be negative"},
		{nil, []string{"--interval", "1s", "--settle", "5s", "--settle-max", "-1s", "true"}, "--settle-max -1s: must not be negative"},
		{nil, []string{"--interval", "1s", "--settle", "5s", "--settle-max", "4s", "true"}, "--settle-max 4s: below --settle 5s"},
		{nil, []string{"--interval", "1s", "--settle-max", "4s", "true"}, "--settle-max 4s: bounds --settle, which is not given"},
		{nil, []string{"--settle", "5s", "true"}, "--settle 5s: only applies when watching; give --interval too"},
		{nil, []string{"--init", "--splay", "5s", "true"}, "--splay 5s: only applies when watching"},
		{[]string{"PARAMEXEC_SPLAY=-1s"}, []string{"--interval", "1s", "true"}, "--splay -1s: must not be negative"},
		{nil, []string{"--ready", "bogus", "true"}, "--ready"},
		{nil, []string{"--ready", "tcp:0", "true"}, "--ready"},
		{nil, []string{"--ready", "http://127.0.0.1:{port}/", "true"}, "--proxy"},
		{nil, []string{"--ready", "tcp:80", "--ready-timeout", "0s", "true"}, "--ready-timeout 0s: must be more than 0"},
		{nil, []string{"--rollback-window", "-1s", "true"}, "--rollback-window"},
		{[]string{"PARAMEXEC_READY=tcp:80,bogus"}, []string{"true"}, "bogus"},
		{[]string{"PARAMEXEC_READY_TIMEOUT=soon"}, []string{"true"}, "PARAMEXEC_READY_TIMEOUT"},
		{nil, []string{"--restart", "overlap", "--interval", "1m", "true"}, "needs --ready"},
		{nil, []string{"--restart", "overlap", "--ready", "exec:true", "true"}, "give --interval"},
		{nil, []string{"--restart", "overlap", "--ready", "exec:true", "--interval", "1m", "--on-change", "exit", "true"}, "--on-change restart"},
		{nil, []string{"--restart", "rolling", "true"}, "want stop-first or overlap"},
		{[]string{"PARAMEXEC_RESTART=both"}, []string{"true"}, "PARAMEXEC_RESTART"},
		{nil, []string{"--proxy-protocol", "true"}, "--proxy-protocol only goes with --proxy"},
		{nil, []string{"--proxy", "127.0.0.1:1=A", "--proxy", "127.0.0.1:2=A", "true"}, "two proxies give the child its port in A"},
	} {
		err := usageErr(tc.args, tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: %v, want an error with %q", tc.env, tc.args, err, tc.want)
		}
	}
	// What is allowed.
	for _, tc := range []struct{ env, args []string }{
		{[]string{"PARAMEXEC_SETTLE=2s", "PARAMEXEC_SETTLE_MAX=2s", "PARAMEXEC_SPLAY=1s"}, []string{"--interval", "1s", "--print"}},
		{nil, []string{"--version"}},
		{nil, []string{"--proxy", "127.0.0.1:1=PORT", "--ready-timeout", "2m", "--", "true"}},
		{nil, []string{"--restart", "overlap", "--ready", "tcp:80", "--interval", "1m", "true"}},
		{nil, []string{"--path", "arn:aws:ssm:us-east-1:111122223333:parameter/org/prd", "--print"}},
	} {
		if err := usageErr(tc.args, tc.env); err != nil {
			t.Errorf("%v %v: refused: %v", tc.env, tc.args, err)
		}
	}
}

// One default, in one place: --ready-timeout's is what bounds readiness
// in exec and the proxies' hold of a connection.
func TestReadyTimeoutDefaultReachesTheProxies(t *testing.T) {
	cfg, err := configure([]string{"--proxy", "127.0.0.1:1=PORT", "true"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.readyTimeout != 60*time.Second || cfg.handoff().HoldTimeout != cfg.readyTimeout {
		t.Errorf("--ready-timeout %s, the proxies' hold %s: want both the documented 60s", cfg.readyTimeout, cfg.handoff().HoldTimeout)
	}
}
