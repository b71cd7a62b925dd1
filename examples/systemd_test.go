package examples_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/testenv"
)

// A unitFile is a systemd unit: section → key → values (keys may repeat).
type unitFile map[string]map[string][]string

// parseUnit reads systemd's INI dialect: [Section] headers, Key=Value,
// "#" and ";" comment lines, and lines continued by a trailing backslash.
func parseUnit(t *testing.T, path string) unitFile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unitFile{}
	section := ""
	var pending string
	for i, raw := range strings.Split(string(data), "\n") {
		line := strings.TrimSpace(raw)
		if pending == "" && (line == "" || line[0] == '#' || line[0] == ';') {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			pending += strings.TrimSuffix(line, `\`) + " "
			continue
		}
		line, pending = pending+line, ""
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("%s:%d: %q is neither a [Section] nor Key=Value in one", path, i+1, line)
		}
		key = strings.TrimSpace(key)
		u[section][key] = append(u[section][key], strings.TrimSpace(value))
	}
	return u
}

// one returns the single value of a key, failing when it is missing or set
// more than once.
func (u unitFile) one(t *testing.T, section, key string) string {
	t.Helper()
	v := u[section][key]
	if len(v) != 1 {
		t.Fatalf("[%s] %s set %d times, want once", section, key, len(v))
	}
	return v[0]
}

// systemdDuration parses a systemd time span of the forms the example
// uses: "30", "30s", "1min", "2min 30s".
func systemdDuration(s string) (time.Duration, error) {
	var total time.Duration
	for _, f := range strings.Fields(s) {
		num := strings.TrimRight(f, "abcdefghijklmnopqrstuvwxyz")
		n, err := strconv.Atoi(num)
		if err != nil {
			return 0, err
		}
		unit := map[string]time.Duration{"": time.Second, "s": time.Second, "sec": time.Second, "ms": time.Millisecond, "m": time.Minute, "min": time.Minute, "h": time.Hour}[f[len(num):]]
		if unit == 0 {
			return 0, strconv.ErrSyntax
		}
		total += time.Duration(n) * unit
	}
	return total, nil
}

func TestSystemdUnit(t *testing.T) {
	path, err := filepath.Abs("paramexec.service")
	if err != nil {
		t.Fatal(err)
	}
	u := parseUnit(t, path)

	for key, want := range map[string]string{
		"Type":         "notify", // paramexec sends READY=1 (internal/sdnotify)
		"NotifyAccess": "main",   // only paramexec; its child never gets the socket
		"KillMode":     "mixed",  // systemd's SIGTERM to paramexec only; it forwards it once
		"Restart":      "always", // --on-change exit may exit 0 and must come back
	} {
		if got := u.one(t, "Service", key); got != want {
			t.Errorf("[Service] %s=%s, want %s", key, got, want)
		}
	}
	// paramexec exits 128+N for a child ended by signal N: after systemd's
	// SIGTERM that is 143, which systemd otherwise records as a failure.
	if !slices.Contains(strings.Fields(strings.Join(u["Service"]["SuccessExitStatus"], " ")), "143") {
		t.Error("SuccessExitStatus lacks 143: every systemctl stop would leave the unit failed")
	}
	if user := u.one(t, "Service", "User"); user == "" || user == "root" || user == "0" {
		t.Errorf("User=%s: run the app unprivileged", user)
	}
	if u.one(t, "Service", "NoNewPrivileges") != "yes" || u.one(t, "Service", "ProtectSystem") != "strict" {
		t.Error("want NoNewPrivileges=yes and ProtectSystem=strict")
	}
	if !strings.Contains(u.one(t, "Service", "RestrictAddressFamilies"), "AF_UNIX") {
		t.Error("RestrictAddressFamilies without AF_UNIX: paramexec could not reach NOTIFY_SOCKET")
	}
	if u.one(t, "Install", "WantedBy") == "" {
		t.Error("no WantedBy: systemctl enable would do nothing")
	}

	// ExecStart: an absolute paramexec, flags config.go defines, "--", and
	// an absolute command.
	line := strings.TrimLeft(u.one(t, "Service", "ExecStart"), "-@:+!")
	words, err := shellWords(line)
	if err != nil {
		t.Fatalf("ExecStart: %v", err)
	}
	if len(words) == 0 || !filepath.IsAbs(words[0]) || filepath.Clean(words[0]) != words[0] {
		t.Fatalf("ExecStart=%s: systemd wants an absolute, clean path to the binary", line)
	}
	flags := configFlags(t)
	var args []string
	set := map[string]string{}
	rest := words[1:]
	for len(rest) > 0 && rest[0] != "--" {
		w := rest[0]
		rest = rest[1:]
		if !strings.HasPrefix(w, "-") {
			t.Fatalf("ExecStart: %q before \"--\"; put the command after \"--\"", w)
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(w, "-"), "=")
		f, ok := flags[name]
		if !ok {
			t.Errorf("ExecStart passes %s, which config.go does not define", w)
			continue
		}
		args = append(args, w)
		if !f.bool && !hasValue {
			if len(rest) == 0 {
				t.Fatalf("ExecStart: %s needs a value", w)
			}
			value, rest = rest[0], rest[1:]
			args = append(args, value)
		}
		set[name] = value
	}
	if len(rest) < 2 || !filepath.IsAbs(rest[1]) {
		t.Errorf("ExecStart: want \"-- /absolute/command\" after the flags, got %q", rest)
	}

	// Type=notify needs paramexec to stay the parent; replaced by the app it
	// could send nothing.
	interval, _ := time.ParseDuration(set["interval"])
	initValue, hasInit := set["init"]
	if interval <= 0 && !(hasInit && (initValue == "" || initValue == "true")) {
		t.Error("ExecStart has neither --interval nor --init: paramexec would exec the app, and READY=1 would never come")
	}

	grace := defaultGrace
	if v, ok := set["grace"]; ok {
		if grace, err = time.ParseDuration(v); err != nil {
			t.Fatalf("--grace %s: %v", v, err)
		}
	}
	stop, err := systemdDuration(u.one(t, "Service", "TimeoutStopSec"))
	if err != nil {
		t.Fatalf("TimeoutStopSec: %v", err)
	}
	if stop <= grace {
		t.Errorf("TimeoutStopSec=%s is not above --grace %s: systemd would SIGKILL paramexec mid-grace", stop, grace)
	}

	// paramexec parses the flags itself: a value it refuses makes it exit 2
	// before --version is looked at.
	if code, out := runParamexec(t, append(args, "--version"), nil); code != 0 {
		t.Errorf("paramexec %s --version: exit %d: %s", strings.Join(args, " "), code, out)
	}

	t.Run("systemd-analyze verify", func(t *testing.T) {
		// systemd's own verdict, with the binary path pointing at a real
		// file (verify insists the ExecStart binary exists).
		analyze, err := exec.LookPath("systemd-analyze")
		if err != nil {
			testenv.SkipOrFailOnCI(t, "systemd-analyze not installed; the unit was checked by this test's parser only")
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		unit := strings.Replace(string(data), "ExecStart="+words[0], "ExecStart="+paramexecBinary(t), 1)
		file := filepath.Join(t.TempDir(), "myapp.service")
		if err := os.WriteFile(file, []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(analyze, "verify", file)
		cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0")
		// verify exits 0 for unknown keys and bad values, which it only
		// prints: any output is a finding.
		if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	})
}

func TestSystemdDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"30": 30 * time.Second, "30s": 30 * time.Second, "1min": time.Minute, "2min 30s": 150 * time.Second, "500ms": 500 * time.Millisecond,
	} {
		if got, err := systemdDuration(in); err != nil || got != want {
			t.Errorf("systemdDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := systemdDuration("5 fortnights"); err == nil {
		t.Error("systemdDuration accepted an unknown unit")
	}
}
