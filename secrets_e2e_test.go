package main

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// uniqueName is a secret or parameter name of the test's own.
func uniqueName(t *testing.T, what string) string {
	return strings.TrimPrefix(uniquePath(t), "/") + "/" + what
}

func TestSecretsParamsAndReferences(t *testing.T) {
	db := uniqueName(t, "db")
	moto.CreateSecret(t, db, `{"username":"`+val("app")+`","password":"`+val("pw1")+`","port":5432}`)
	token := uniqueName(t, "api-token")
	moto.CreateSecret(t, token, val("plain-token"))
	param := "/" + uniqueName(t, "feature-flag")
	moto.PutParameter(t, param, val("on"), "String")
	moto.PutParameter(t, param, val("on-v2"), "String")
	moto.LabelParameter(t, param, 1, "stable")
	refParam := "/" + uniqueName(t, "ref-param")
	moto.PutParameter(t, refParam, val("by-reference"), "SecureString")

	args, rec := childArgs(t, "-exit", "0")
	env := append(baseEnv(moto.URL),
		"FROM_SSM_REF=ssm:"+refParam,
		"FROM_ARN_REF=arn:aws:ssm:us-east-1:123456789012:parameter"+refParam,
		"FROM_SECRET_KEY=secretsmanager:"+db+"#password",
		"LOOKS_LIKE_A_REF=https://ssm.us-east-1.amazonaws.com/x",
	)
	r := runBinary(t, env, append([]string{
		"--secret", db + "=DB_",
		"--secret", token,
		"--param", param,
		"--param", param + ":stable=FLAG_STABLE",
	}, args...)...)
	if r.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
	}
	got := onlyStart(t, rec).Env
	for k, v := range map[string]string{
		"DB_USERNAME":      val("app"),
		"DB_PASSWORD":      val("pw1"),
		"DB_PORT":          "5432",
		"API_TOKEN":        val("plain-token"),
		"FEATURE_FLAG":     val("on-v2"),
		"FLAG_STABLE":      val("on"),
		"FROM_SSM_REF":     val("by-reference"),
		"FROM_ARN_REF":     val("by-reference"),
		"FROM_SECRET_KEY":  val("pw1"),
		"LOOKS_LIKE_A_REF": "https://ssm.us-east-1.amazonaws.com/x",
	} {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestUnresolvableReferenceNamesTheVariable(t *testing.T) {
	args, rec := childArgs(t, "-exit", "0")
	env := append(baseEnv(moto.URL), "DATABASE_PASSWORD=ssm:/"+uniqueName(t, "missing"))
	r := runBinary(t, env, args...)
	if r.code != exitSource || !strings.Contains(r.stderr, "DATABASE_PASSWORD") {
		t.Errorf("exit %d, stderr:\n%s\nwant exit 3 naming DATABASE_PASSWORD", r.code, r.stderr)
	}
	if len(readRecords(t, rec)) != 0 {
		t.Error("the command ran with an unresolved reference")
	}
}

func TestSecretRotationRestartsOnce(t *testing.T) {
	p := proxied(t)
	id := uniqueName(t, "rotating")
	moto.CreateSecret(t, id, `{"password":"`+val("before")+`"}`)
	args, rec := childArgs(t)
	pe := startBinary(t, baseEnv(p.URL()), append([]string{"--secret", id, "--interval", "1s"}, args...)...)
	waitStarts(t, rec, 1)

	// Idle polls read no value.
	p.ResetCounts()
	time.Sleep(3 * time.Second)
	if c := p.Counts(); c.SecretValues != 0 || c.ByOp["secretsmanager:DescribeSecret"] == 0 {
		t.Errorf("idle polls: %d value reads, %d DescribeSecret calls; want 0 and some", c.SecretValues, c.ByOp["secretsmanager:DescribeSecret"])
	}

	moto.PutSecretValue(t, id, `{"password":"`+val("after")+`"}`) // rotation's last step
	second := waitStarts(t, rec, 2)[1]
	if second.Env["PASSWORD"] != val("after") {
		t.Errorf("after rotation PASSWORD=%q", second.Env["PASSWORD"])
	}
	time.Sleep(3 * time.Second)
	if n := len(starts(readRecords(t, rec))); n != 2 {
		t.Errorf("%d child starts for one rotation, want 2", n)
	}
	pe.signal(syscall.SIGTERM)
	pe.wait()
}
