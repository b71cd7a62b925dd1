package main

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/paramexec/paramexec/internal/faultproxy"
)

// uniqueName is a secret or parameter name of the test's own.
func uniqueName(t *testing.T, what string) string {
	return strings.TrimPrefix(uniquePath(t), "/") + "/" + what
}

func TestSecretsParamsAndReferences(t *testing.T) {
	parallelE2E(t)
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
	parallelE2E(t)
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

// Both ways a rotation finishes are one restart with the new value, and
// polls after it read no value again: PutSecretValue, which moves
// AWSCURRENT itself, and UpdateSecretVersionStage moving AWSCURRENT onto a
// version staged AWSPENDING, as a rotation Lambda's finishSecret step does
// (after which moto's read without a version still returns the old one).
func TestSecretRotationRestartsOnce(t *testing.T) {
	parallelE2E(t)
	for _, tc := range []struct {
		name   string
		rotate func(t *testing.T, p *faultproxy.Proxy, rec, id, value string)
	}{
		{"PutSecretValue", func(t *testing.T, _ *faultproxy.Proxy, _, id, value string) { moto.PutSecretValue(t, id, value) }},
		{"UpdateSecretVersionStage", func(t *testing.T, p *faultproxy.Proxy, rec, id, value string) {
			sm := moto.SecretsManager()
			described, err := sm.DescribeSecret(t.Context(), &secretsmanager.DescribeSecretInput{SecretId: aws.String(id)})
			if err != nil {
				t.Fatal(err)
			}
			var from string
			for v, stages := range described.VersionIdsToStages {
				if slices.Contains(stages, "AWSCURRENT") {
					from = v
				}
			}
			pending, err := sm.PutSecretValue(t.Context(), &secretsmanager.PutSecretValueInput{
				SecretId: aws.String(id), SecretString: aws.String(value), VersionStages: []string{"AWSPENDING"},
			})
			if err != nil {
				t.Fatal("put the pending version failed")
			}
			// AWSPENDING is not followed: three polls see it and do nothing.
			waitForPolls(t, p, 3)
			if n := len(starts(readRecords(t, rec))); n != 1 {
				t.Fatalf("%d child starts for a pending version, want 1", n)
			}
			if _, err := sm.UpdateSecretVersionStage(t.Context(), &secretsmanager.UpdateSecretVersionStageInput{
				SecretId: aws.String(id), VersionStage: aws.String("AWSCURRENT"),
				MoveToVersionId: pending.VersionId, RemoveFromVersionId: aws.String(from),
			}); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := proxied(t)
			id := uniqueName(t, "rotating")
			moto.CreateSecret(t, id, `{"password":"`+val("before")+`"}`)
			args, rec := childArgs(t)
			pe := startBinary(t, baseEnv(p.URL()), append([]string{"--secret", id, "--interval", "1s"}, args...)...)
			waitStarts(t, rec, 1)

			// Idle polls read no value.
			p.ResetCounts()
			waitForPolls(t, p, 3)
			if c := p.Counts(); c.SecretValues != 0 {
				t.Errorf("idle polls: %d value reads, want 0", c.SecretValues)
			}

			tc.rotate(t, p, rec, id, `{"password":"`+val("after")+`"}`)
			second := waitStarts(t, rec, 2)[1]
			if second.Env["PASSWORD"] != val("after") {
				t.Errorf("after rotation PASSWORD=%q", second.Env["PASSWORD"])
			}
			// Three polls after the restart: none reads a value or restarts.
			p.ResetCounts()
			waitForPolls(t, p, 3)
			if c := p.Counts(); c.SecretValues != 0 {
				t.Errorf("polls after the rotation read the secret %d times, want 0: the poll does not accept the version it read", c.SecretValues)
			}
			if n := len(starts(readRecords(t, rec))); n != 2 {
				t.Errorf("%d child starts for one rotation, want 2", n)
			}
			pe.signal(syscall.SIGTERM)
			pe.wait()
		})
	}
}

// waitForPolls waits until n more polls have described the secret, which
// is how long a test watches for something not to happen: each poll would
// have seen a change.
func waitForPolls(t *testing.T, p *faultproxy.Proxy, n int) {
	t.Helper()
	from := p.Counts().ByOp["secretsmanager:DescribeSecret"]
	waitFor(t, fmt.Sprint(n, " polls"), func() bool { return p.Counts().ByOp["secretsmanager:DescribeSecret"] >= from+n })
}
