package motoserver

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

var srv *Server

func TestMain(m *testing.M) { os.Exit(Main(m, &srv)) }

func resetMoto(t *testing.T) {
	t.Helper()
	if err := srv.Reset(); err != nil {
		t.Fatal(err)
	}
}

func getParam(t *testing.T, name string) (string, int64) {
	t.Helper()
	out, err := srv.SSM().GetParameter(t.Context(), &ssm.GetParameterInput{Name: aws.String(name), WithDecryption: aws.Bool(true)})
	if err != nil {
		t.Fatalf("get parameter %s: %v", name, err)
	}
	return aws.ToString(out.Parameter.Value), out.Parameter.Version
}

func TestPutParameterTypes(t *testing.T) {
	resetMoto(t)
	for _, tc := range []struct{ name, value, typ string }{
		{"/motoserver/plain", "plain-value", "String"},
		{"/motoserver/secure", "secure-value", "SecureString"},
		{"/motoserver/list", "a,b,c", "StringList"},
	} {
		srv.PutParameter(t, tc.name, tc.value, tc.typ)
		got, _ := getParam(t, tc.name)
		if got != tc.value {
			t.Errorf("%s: value differs from what was put", tc.name)
		}
		out, err := srv.SSM().GetParameter(t.Context(), &ssm.GetParameterInput{Name: aws.String(tc.name)})
		if err != nil {
			t.Fatal(err)
		}
		if string(out.Parameter.Type) != tc.typ {
			t.Errorf("%s: type %q, want %q", tc.name, out.Parameter.Type, tc.typ)
		}
	}
}

func TestPutParameterOverwritesAndLabels(t *testing.T) {
	resetMoto(t)
	const name = "/motoserver/versioned"
	srv.PutParameter(t, name, "one", "String")
	srv.PutParameter(t, name, "two", "String")
	got, version := getParam(t, name)
	if got != "two" || version != 2 {
		t.Fatalf("after overwrite: version %d (value matches: %v), want version 2 with the second value", version, got == "two")
	}
	srv.LabelParameter(t, name, 1, "stable", "old")
	if got, _ := getParam(t, name+":stable"); got != "one" {
		t.Errorf("label stable does not select version 1")
	}
	srv.LabelParameter(t, name, 0, "latest")
	if got, _ := getParam(t, name+":latest"); got != "two" {
		t.Errorf("label on version 0 does not select the latest version")
	}
}

func TestDeleteParameter(t *testing.T) {
	resetMoto(t)
	const name = "/motoserver/deleted"
	srv.PutParameter(t, name, "x", "String")
	srv.DeleteParameter(t, name)
	_, err := srv.SSM().GetParameter(t.Context(), &ssm.GetParameterInput{Name: aws.String(name)})
	var nf *ssmtypes.ParameterNotFound
	if !errors.As(err, &nf) {
		t.Fatalf("get deleted parameter: %v, want ParameterNotFound", err)
	}
}

func TestSecretsRotate(t *testing.T) {
	resetMoto(t)
	const name = "motoserver-secret"
	arn := srv.CreateSecret(t, name, "first")
	if !strings.HasPrefix(arn, "arn:aws:secretsmanager:us-east-1:") || !strings.Contains(arn, ":secret:"+name) {
		t.Errorf("CreateSecret ARN %q does not name the secret", arn)
	}
	version := srv.PutSecretValue(t, arn, "second")
	if version == "" {
		t.Fatal("PutSecretValue returned no version id")
	}
	cur, err := srv.SecretsManager().GetSecretValue(t.Context(), &secretsmanager.GetSecretValueInput{SecretId: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(cur.SecretString) != "second" || aws.ToString(cur.VersionId) != version {
		t.Errorf("AWSCURRENT is version %s, want the put version %s with its value", aws.ToString(cur.VersionId), version)
	}
	prev, err := srv.SecretsManager().GetSecretValue(t.Context(), &secretsmanager.GetSecretValueInput{
		SecretId: aws.String(name), VersionStage: aws.String("AWSPREVIOUS"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(prev.SecretString) != "first" {
		t.Errorf("AWSPREVIOUS does not hold the first value")
	}
}

func TestReset(t *testing.T) {
	resetMoto(t)
	const name = "/motoserver/reset"
	srv.PutParameter(t, name, "x", "String")
	srv.CreateSecret(t, "motoserver-reset", "x")
	if err := srv.Reset(); err != nil {
		t.Fatal(err)
	}
	_, err := srv.SSM().GetParameter(t.Context(), &ssm.GetParameterInput{Name: aws.String(name)})
	var nf *ssmtypes.ParameterNotFound
	if !errors.As(err, &nf) {
		t.Errorf("parameter after reset: %v, want ParameterNotFound", err)
	}
	list, err := srv.SecretsManager().ListSecrets(t.Context(), &secretsmanager.ListSecretsInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.SecretList) != 0 {
		t.Errorf("%d secrets after reset, want 0", len(list.SecretList))
	}
	// The same name can be created again only if the reset really wiped it.
	srv.CreateSecret(t, "motoserver-reset", "y")
}

func TestEnv(t *testing.T) {
	env := srv.Env()
	for _, want := range []string{
		"AWS_ENDPOINT_URL=" + srv.URL,
		"AWS_ACCESS_KEY_ID=testing",
		"AWS_SECRET_ACCESS_KEY=testing",
		"AWS_REGION=us-east-1",
		"AWS_EC2_METADATA_DISABLED=true",
	} {
		if !slices.Contains(env, want) {
			t.Errorf("Env() lacks %q: %q", want, env)
		}
	}
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Errorf("URL %q is not on loopback", srv.URL)
	}
	cfg := srv.Config(t.Context())
	if cfg.Region != "us-east-1" || aws.ToString(cfg.BaseEndpoint) != srv.URL {
		t.Errorf("Config: region %q endpoint %q", cfg.Region, aws.ToString(cfg.BaseEndpoint))
	}
}

func TestLogsCaptureRequests(t *testing.T) {
	srv.PutParameter(t, "/motoserver/logged", "x", "String")
	if !strings.Contains(srv.Logs(), "POST / HTTP/1.1") {
		t.Errorf("moto's request log was not captured; got:\n%s", srv.logTail(5))
	}
}

func TestStartStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s, err := Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pid := s.Pid()
	if pgid, err := syscall.Getpgid(pid); err != nil || pgid != pid {
		t.Errorf("moto_server pgid %d (%v), want its own group %d", pgid, err, pid)
	}
	if s.URL == srv.URL {
		t.Fatalf("second server shares the URL %s", s.URL)
	}
	s.PutParameter(t, "/motoserver/second", "x", "String")
	if _, err := srv.SSM().GetParameter(t.Context(), &ssm.GetParameterInput{Name: aws.String("/motoserver/second")}); err == nil {
		t.Error("a parameter put into the second server is visible in the first")
	}

	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process group %d still exists after Stop (kill 0: %v)", pid, err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	resp, err := http.Get(s.URL + "/moto-api/")
	if err == nil {
		resp.Body.Close()
		t.Errorf("%s still answers after Stop", s.URL)
	}
}

func TestStartNotInstalled(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	s, err := Start(t.Context())
	if !errors.Is(err, ErrNotInstalled) {
		if s != nil {
			s.Stop()
		}
		t.Fatalf("Start without moto_server on PATH: %v, want ErrNotInstalled", err)
	}
}

func TestRunMainWithoutMoto(t *testing.T) {
	missing := func(context.Context) (*Server, error) {
		return nil, ErrNotInstalled
	}
	for _, tc := range []struct {
		ci       bool
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{ci: false, wantCode: 0, wantOut: "SKIP: moto_server not installed"},
		{ci: true, wantCode: 1, wantErr: "FAIL"},
	} {
		var stdout, stderr bytes.Buffer
		var s *Server
		ran := false
		code := runMain(missing, func() int { ran = true; return 0 }, tc.ci, &stdout, &stderr, &s)
		if code != tc.wantCode || ran || s != nil {
			t.Errorf("CI=%v: code %d, tests ran %v, server %v; want code %d and no tests", tc.ci, code, ran, s, tc.wantCode)
		}
		if !strings.Contains(stdout.String(), tc.wantOut) || !strings.Contains(stderr.String(), tc.wantErr) {
			t.Errorf("CI=%v: stdout %q stderr %q", tc.ci, stdout.String(), stderr.String())
		}
	}

	var stdout, stderr bytes.Buffer
	var s *Server
	broken := func(context.Context) (*Server, error) { return nil, errors.New("python exploded") }
	if code := runMain(broken, func() int { t.Error("tests ran without a server"); return 0 }, false, &stdout, &stderr, &s); code != 1 {
		t.Errorf("start failure: code %d, want 1 even off CI", code)
	}
}

func TestRedact(t *testing.T) {
	msg := redact(errors.New("Value 'hunter2' at 'value' failed to satisfy constraint"), "hunter2")
	if strings.Contains(msg, "hunter2") {
		t.Errorf("redact left the value in %q", msg)
	}
	msg = redact(errors.New(`RequestID: x1, Value 'x' at "x" is bad`), "x")
	if strings.Contains(msg, "'x'") || strings.Contains(msg, `"x"`) || !strings.Contains(msg, "x1") {
		t.Errorf("redact of a short value: %q", msg)
	}
}

// The fallback for a werkzeug that ignores the handed-over socket.
func TestLaunchWithoutHandoff(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s, err := launch(ctx, "moto_server", false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	s.PutParameter(t, "/motoserver/plain-port", "x", "String")
}
