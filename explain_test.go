package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/paramexec/paramexec/internal/dotenv"
	"github.com/paramexec/paramexec/internal/motoserver"
	"github.com/paramexec/paramexec/internal/testenv"
)

// explainWorld is what TestPrintExplain seeds: one of every kind of source
// and reference, two of them naming the same variable, and the values and
// versions the output is checked against.
type explainWorld struct {
	args     []string // the source flags
	env      []string // the inherited environment, references included
	envFile  string
	values   map[string]string // variable: the value it resolves to
	seeded   []string          // every value put anywhere, old versions too
	secARN   string
	secV1    string // the secret's first version, now AWSPREVIOUS
	secV2    string // its AWSCURRENT
	paramDir string
}

// newValue is a value no version, name or hash could hold by chance.
func newValue(t *testing.T) string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "val-" + hex.EncodeToString(b)
}

// explainMoto starts a moto_server of this test's own and points the AWS
// SDK of run(), which reads the process environment, at it. The root
// package's shared moto belongs to its end-to-end harness, which is moving.
func explainMoto(t *testing.T) *motoserver.Server {
	t.Helper()
	if testing.Short() {
		t.Skip("starts moto_server; run without -short")
	}
	srv, err := motoserver.Start(t.Context())
	if err != nil {
		testenv.SkipOrFailOnCI(t, "moto_server: %v", err)
	}
	t.Cleanup(func() { srv.Stop() })
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	none := filepath.Join(t.TempDir(), "none")
	t.Setenv("AWS_CONFIG_FILE", none)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", none)
	t.Setenv("AWS_PROFILE", "")
	return srv
}

func seedExplain(t *testing.T, srv *motoserver.Server) *explainWorld {
	t.Helper()
	u := "explain-" + newValue(t)[4:12]
	w := &explainWorld{values: map[string]string{}, paramDir: "/" + u + "/app"}
	val := func(name string) string {
		v := newValue(t)
		w.seeded = append(w.seeded, v)
		if name != "" {
			w.values[name] = v
		}
		return v
	}
	// DB_HOST: in the .env file, overridden by --path, whose parameter
	// is at version 2.
	val("")
	srv.PutParameter(t, w.paramDir+"/DB_HOST", w.seeded[len(w.seeded)-1], "String")
	srv.PutParameter(t, w.paramDir+"/DB_HOST", val("DB_HOST"), "String")
	srv.PutParameter(t, w.paramDir+"/TOKEN", val("TOKEN"), "SecureString")
	// LABELLED follows the label prod, on version 1 of 2.
	srv.PutParameter(t, "/"+u+"/lab/x", val("LABELLED"), "String")
	srv.LabelParameter(t, "/"+u+"/lab/x", 1, "prod")
	srv.PutParameter(t, "/"+u+"/lab/x", val(""), "String")

	// A JSON secret with two versions: --secret reads AWSCURRENT, a
	// reference by ARN the password of AWSPREVIOUS.
	pw1, user1 := val("REF_PREV"), val("")
	first, _ := json.Marshal(map[string]string{"password": pw1, "user": user1})
	out, err := srv.SecretsManager().CreateSecret(context.Background(), &secretsmanager.CreateSecretInput{
		Name: aws.String(u + "/db"), SecretString: aws.String(string(first)),
	})
	if err != nil {
		t.Fatalf("create secret: %v", err) // the SDK's errors hold no values
	}
	w.secARN, w.secV1 = aws.ToString(out.ARN), aws.ToString(out.VersionId)
	pw2, user2 := val("DB_PASSWORD"), val("DB_USER")
	w.values["REF_PW"] = pw2
	second, _ := json.Marshal(map[string]string{"password": pw2, "user": user2})
	w.secV2 = srv.PutSecretValue(t, u+"/db", string(second))

	w.envFile = filepath.Join(t.TempDir(), "app.env")
	envText := "DB_HOST=" + val("") + "\nPLAIN=" + val("PLAIN") + "\nOVER=" + val("OVER") + "\n"
	if err := os.WriteFile(w.envFile, []byte(envText), 0o600); err != nil {
		t.Fatal(err)
	}
	w.args = []string{"--env-file", w.envFile, "--path", w.paramDir,
		"--param", "/" + u + "/lab/x:prod=LABELLED", "--secret", u + "/db=DB_"}
	w.env = append(srv.Env(),
		"OVER="+val(""), // inherited, overridden by the .env file
		"REF_PW=secretsmanager:"+u+"/db#password",
		"REF_PREV="+w.secARN+":password:AWSPREVIOUS:",
	)
	return w
}

// print runs paramexec --print --explain in-process with extra flags.
func (w *explainWorld) print(t *testing.T, extra ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	args := slices.Concat(w.args, []string{"--print", "--explain"}, extra)
	if code := run(args, w.env, &stdout, &stderr); code != 0 {
		t.Fatalf("paramexec %s: exit %d\n%s", strings.Join(args, " "), code, stderr.String())
	}
	if !slices.Contains(extra, "--reveal") {
		w.noValues(t, stdout.String()+stderr.String())
	}
	return stdout.String()
}

// noValues is the scan: no value seeded anywhere, current or old, appears
// in what paramexec wrote.
func (w *explainWorld) noValues(t *testing.T, out string) {
	t.Helper()
	for _, v := range w.seeded {
		if strings.Contains(out, v) {
			t.Errorf("the output holds the seeded value %s:\n%s", v, out)
		}
	}
}

// wantLines are what each variable's explanation must say.
func (w *explainWorld) wantLines() map[string][]string {
	dir := w.paramDir
	return map[string][]string{
		"DB_HOST": {"from --path " + dir + ": " + dir + "/DB_HOST (latest, version 2, modified ",
			"; overrides --env-file " + w.envFile + ": " + w.envFile + ":1 (version "},
		"TOKEN":       {"from --path " + dir + ": " + dir + "/TOKEN (latest, version 1, modified "},
		"LABELLED":    {"from --param " + strings.TrimSuffix(dir, "/app") + "/lab/x:prod=LABELLED: ", "/lab/x (label prod, version 1, modified "},
		"DB_PASSWORD": {"from --secret ", "=DB_: " + w.secARN + " key password (stage AWSCURRENT, version " + w.secV2 + ")"},
		"DB_USER":     {": " + w.secARN + " key user (stage AWSCURRENT, version " + w.secV2 + ")"},
		"REF_PW":      {"from reference REF_PW=secretsmanager:", "/db#password: " + w.secARN + " key password (stage AWSCURRENT, version " + w.secV2 + ")"},
		"REF_PREV":    {"from reference REF_PREV=" + w.secARN + ":password:AWSPREVIOUS: " + w.secARN + " key password (stage AWSPREVIOUS, version " + w.secV1 + ")"},
		"PLAIN":       {"from --env-file " + w.envFile + ": " + w.envFile + ":2 (version "},
		"OVER":        {"from --env-file " + w.envFile + ": " + w.envFile + ":3 (version ", "; overrides inherited environment"},
	}
}

// TestPrintExplain: --print --explain in every format, masked and with
// --reveal, says for every variable its source, item, JSON key, label or
// stage, version and what it overrode; the dotenv and shell outputs stay
// valid for their readers.
func TestPrintExplain(t *testing.T) {
	w := seedExplain(t, explainMoto(t))
	want := w.wantLines()
	for _, reveal := range []bool{false, true} {
		var extra []string
		if reveal {
			extra = []string{"--reveal"}
		}
		value := func(name string) string {
			if reveal {
				return w.values[name]
			}
			return masked
		}
		t.Run("dotenv"+strings.Join(extra, ""), func(t *testing.T) {
			out := w.print(t, append(extra, "--format", "dotenv")...)
			checkLines(t, out, want)
			entries, err := dotenv.Parse("print", []byte(out))
			if err != nil {
				t.Fatalf("the output is not valid dotenv: %v", err)
			}
			if len(entries) != len(want) {
				t.Errorf("%d entries, want %d:\n%s", len(entries), len(want), out)
			}
			for _, e := range entries {
				if e.Value != value(e.Key) {
					t.Errorf("%s reads back as %q, want %q", e.Key, e.Value, value(e.Key))
				}
			}
		})
		t.Run("shell"+strings.Join(extra, ""), func(t *testing.T) {
			out := w.print(t, append(extra, "--format", "shell")...)
			checkLines(t, out, want)
			shellReadBack(t, out, want, value)
		})
		t.Run("json"+strings.Join(extra, ""), func(t *testing.T) {
			out := w.print(t, append(extra, "--format", "json")...)
			w.checkJSON(t, out, value)
		})
	}
}

// checkLines finds each variable's one line and the words it must hold.
func checkLines(t *testing.T, out string, want map[string][]string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(want) {
		t.Errorf("%d lines, want %d:\n%s", len(lines), len(want), out)
	}
	for name, words := range want {
		i := slices.IndexFunc(lines, func(l string) bool {
			return strings.HasPrefix(strings.TrimPrefix(l, "export "), name+"=")
		})
		if i < 0 {
			t.Errorf("no line for %s:\n%s", name, out)
			continue
		}
		for _, word := range words {
			if !strings.Contains(lines[i], word) {
				t.Errorf("%s: the line does not say %q:\n%s", name, word, lines[i])
			}
		}
		if name != "DB_HOST" && name != "OVER" && strings.Contains(lines[i], "overrides") {
			t.Errorf("%s overrode nothing, but its line says so:\n%s", name, lines[i])
		}
	}
}

// shellReadBack sources the shell output in sh and reads every variable
// back: the trailing comments must leave it valid and the values intact.
func shellReadBack(t *testing.T, out string, want map[string][]string, value func(string) string) {
	t.Helper()
	script := out
	names := slices.Sorted(func(yield func(string) bool) {
		for name := range want {
			if !yield(name) {
				return
			}
		}
	})
	for _, name := range names {
		script += `printf '%s=%s\n' ` + name + ` "$` + name + `"` + "\n"
	}
	got, err := osexec.Command("sh", "-c", script).Output()
	if err != nil {
		t.Fatalf("sh could not run the output: %v", err)
	}
	var wantOut strings.Builder
	for _, name := range names {
		wantOut.WriteString(name + "=" + value(name) + "\n")
	}
	if string(got) != wantOut.String() {
		t.Errorf("sh read back\n%s\nwant\n%s", got, wantOut.String())
	}
}

// checkJSON decodes the json format and checks its fields.
func (w *explainWorld) checkJSON(t *testing.T, out string, value func(string) string) {
	t.Helper()
	var got map[string]struct {
		Value, Source, Item, Selector, Version, Modified string
		Key                                              string `json:"json_key"`
		Overrides                                        []map[string]string
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(got) != len(w.values) {
		t.Errorf("%d variables, want %d:\n%s", len(got), len(w.values), out)
	}
	for name := range w.values {
		if got[name].Value != value(name) {
			t.Errorf("%s: value %q, want %q", name, got[name].Value, value(name))
		}
	}
	host := got["DB_HOST"]
	if host.Source != "--path "+w.paramDir || host.Item != w.paramDir+"/DB_HOST" || host.Selector != "latest" || host.Version != "2" || host.Modified == "" {
		t.Errorf("DB_HOST: %+v", host)
	}
	if len(host.Overrides) != 1 || host.Overrides[0]["source"] != "--env-file "+w.envFile || host.Overrides[0]["item"] != w.envFile+":1" {
		t.Errorf("DB_HOST overrides %v, want the .env file's line 1", host.Overrides)
	}
	prev := got["REF_PREV"]
	if prev.Item != w.secARN || prev.Key != "password" || prev.Selector != "stage AWSPREVIOUS" || prev.Version != w.secV1 {
		t.Errorf("REF_PREV: %+v", prev)
	}
	if lab := got["LABELLED"]; lab.Selector != "label prod" || lab.Version != "1" {
		t.Errorf("LABELLED: %+v", lab)
	}
	if over := got["OVER"]; len(over.Overrides) != 1 || over.Overrides[0]["source"] != "inherited environment" {
		t.Errorf("OVER overrides %v, want the inherited environment", over.Overrides)
	}
}

// TestExplainFlag: --explain, like --reveal, only goes with --print (a
// usage error, exit 2, otherwise), and PARAMEXEC_EXPLAIN stands in for it
// as every flag's variable does.
func TestExplainFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--explain", "true"}, nil, &stdout, &stderr); code != exitUsage || !strings.Contains(stderr.String(), "--explain only goes with --print") {
		t.Errorf("--explain without --print: exit %d, %q; want 2 and a usage error", code, stderr.String())
	}
	file := filepath.Join(t.TempDir(), "a.env")
	if err := os.WriteFile(file, []byte("A=a-secret-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	stderr.Reset()
	code := run([]string{"--env-file", file, "--print"}, []string{"PARAMEXEC_EXPLAIN=true"}, &stdout, &stderr)
	want := `A="********" # from --env-file ` + file + ": " + file + ":1 (version "
	if code != 0 || !strings.HasPrefix(stdout.String(), want) || strings.Contains(stdout.String(), "a-secret-value") {
		t.Errorf("PARAMEXEC_EXPLAIN=true --print: exit %d, %q (%s); want a line starting %q", code, stdout.String(), stderr.String(), want)
	}
}

// TestExplainCommentStaysOnItsLine: a file name with a newline in it is
// escaped in the comment, which would otherwise end early and leave the
// rest of the name as a line of its own (a broken dotenv line, or a shell
// command).
func TestExplainCommentStaysOnItsLine(t *testing.T) {
	file := filepath.Join(t.TempDir(), "a\nrm -rf x #.env")
	if err := os.WriteFile(file, []byte("A=1\nB=2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"dotenv", "shell"} {
		var stdout, stderr bytes.Buffer
		if code := run([]string{"--env-file", file, "--print", "--explain", "--format", format}, nil, &stdout, &stderr); code != 0 {
			t.Fatalf("%s: exit %d: %s", format, code, stderr.String())
		}
		out := stdout.String()
		if n := strings.Count(out, "\n"); n != 2 || !strings.Contains(out, `a\nrm -rf x #.env:1`) {
			t.Errorf("%s: %d lines, want 2, the newline escaped:\n%s", format, n, out)
		}
	}
}
