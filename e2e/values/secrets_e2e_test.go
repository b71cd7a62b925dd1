package values

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/paramexec/paramexec/internal/faultproxy"
	"github.com/paramexec/paramexec/internal/harness"
)

// uniqueName is a secret or parameter name of the test's own.
func uniqueName(t *testing.T, what string) string {
	return strings.TrimPrefix(harness.UniquePath(t), "/") + "/" + what
}

func TestSecretsParamsAndReferences(t *testing.T) {
	harness.ParallelE2E(t)
	db := uniqueName(t, "db")
	harness.Moto.CreateSecret(t, db, `{"username":"`+harness.Val("app")+`","password":"`+harness.Val("pw1")+`","port":5432}`)
	token := uniqueName(t, "api-token")
	harness.Moto.CreateSecret(t, token, harness.Val("plain-token"))
	param := "/" + uniqueName(t, "feature-flag")
	harness.Moto.PutParameter(t, param, harness.Val("on"), "String")
	harness.Moto.PutParameter(t, param, harness.Val("on-v2"), "String")
	harness.Moto.LabelParameter(t, param, 1, "stable")
	refParam := "/" + uniqueName(t, "ref-param")
	harness.Moto.PutParameter(t, refParam, harness.Val("by-reference"), "SecureString")

	args, rec := harness.ChildArgs(t, "-exit", "0")
	env := append(harness.BaseEnv(harness.Moto.URL),
		"FROM_SSM_REF=ssm:"+refParam,
		"FROM_ARN_REF=arn:aws:ssm:us-east-1:123456789012:parameter"+refParam,
		"FROM_SECRET_KEY=secretsmanager:"+db+"#password",
		"LOOKS_LIKE_A_REF=https://ssm.us-east-1.amazonaws.com/x",
	)
	r := harness.RunBinary(t, env, append([]string{
		"--secret", db + "=DB_",
		"--secret", token,
		"--param", param,
		"--param", param + ":stable=FLAG_STABLE",
	}, args...)...)
	if r.Code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.Code, r.Stderr)
	}
	got := harness.OnlyStart(t, rec).Env
	for k, v := range map[string]string{
		"DB_USERNAME":      harness.Val("app"),
		"DB_PASSWORD":      harness.Val("pw1"),
		"DB_PORT":          "5432",
		"API_TOKEN":        harness.Val("plain-token"),
		"FEATURE_FLAG":     harness.Val("on-v2"),
		"FLAG_STABLE":      harness.Val("on"),
		"FROM_SSM_REF":     harness.Val("by-reference"),
		"FROM_ARN_REF":     harness.Val("by-reference"),
		"FROM_SECRET_KEY":  harness.Val("pw1"),
		"LOOKS_LIKE_A_REF": "https://ssm.us-east-1.amazonaws.com/x",
	} {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestUnresolvableReferenceNamesTheVariable(t *testing.T) {
	harness.ParallelE2E(t)
	args, rec := harness.ChildArgs(t, "-exit", "0")
	env := append(harness.BaseEnv(harness.Moto.URL), "DATABASE_PASSWORD=ssm:/"+uniqueName(t, "missing"))
	r := harness.RunBinary(t, env, args...)
	if r.Code != harness.ExitSource || !strings.Contains(r.Stderr, "DATABASE_PASSWORD") {
		t.Errorf("exit %d, stderr:\n%s\nwant exit 3 naming DATABASE_PASSWORD", r.Code, r.Stderr)
	}
	if len(harness.ReadRecords(t, rec)) != 0 {
		t.Error("the command ran with an unresolved reference")
	}
}

// Both ways a rotation finishes are one restart with the new value, and
// polls after it read no value again: PutSecretValue, which moves
// AWSCURRENT itself, and UpdateSecretVersionStage moving AWSCURRENT onto a
// version staged AWSPENDING, as a rotation Lambda's finishSecret step does
// (after which moto's read without a version still returns the old one).
func TestSecretRotationRestartsOnce(t *testing.T) {
	harness.ParallelE2E(t)
	for _, tc := range []struct {
		name   string
		rotate func(t *testing.T, p *faultproxy.Proxy, rec, id, value string)
	}{
		{"PutSecretValue", func(t *testing.T, _ *faultproxy.Proxy, _, id, value string) {
			harness.Moto.PutSecretValue(t, id, value)
		}},
		{"UpdateSecretVersionStage", func(t *testing.T, p *faultproxy.Proxy, rec, id, value string) {
			sm := harness.Moto.SecretsManager()
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
			if n := len(harness.Starts(harness.ReadRecords(t, rec))); n != 1 {
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
			p := harness.Proxied(t)
			id := uniqueName(t, "rotating")
			harness.Moto.CreateSecret(t, id, `{"password":"`+harness.Val("before")+`"}`)
			args, rec := harness.ChildArgs(t)
			pe := harness.StartBinary(t, harness.BaseEnv(p.URL()), append([]string{"--secret", id, "--interval", "1s"}, args...)...)
			harness.WaitStarts(t, rec, 1)

			// Idle polls read no value.
			p.ResetCounts()
			waitForPolls(t, p, 3)
			if c := p.Counts(); c.SecretValues != 0 {
				t.Errorf("idle polls: %d value reads, want 0", c.SecretValues)
			}

			tc.rotate(t, p, rec, id, `{"password":"`+harness.Val("after")+`"}`)
			second := harness.WaitStarts(t, rec, 2)[1]
			if second.Env["PASSWORD"] != harness.Val("after") {
				t.Errorf("after rotation PASSWORD=%q", second.Env["PASSWORD"])
			}
			// Three polls after the restart: none reads a value or restarts.
			p.ResetCounts()
			waitForPolls(t, p, 3)
			if c := p.Counts(); c.SecretValues != 0 {
				t.Errorf("polls after the rotation read the secret %d times, want 0: the poll does not accept the version it read", c.SecretValues)
			}
			if n := len(harness.Starts(harness.ReadRecords(t, rec))); n != 2 {
				t.Errorf("%d child starts for one rotation, want 2", n)
			}
			pe.Signal(syscall.SIGTERM)
			pe.Wait()
		})
	}
}

// waitForPolls waits until n more polls have described the secret, which
// is how long a test watches for something not to happen: each poll would
// have seen a change.
func waitForPolls(t *testing.T, p *faultproxy.Proxy, n int) {
	t.Helper()
	from := p.Counts().ByOp["secretsmanager:DescribeSecret"]
	harness.WaitFor(t, fmt.Sprint(n, " polls"), func() bool { return p.Counts().ByOp["secretsmanager:DescribeSecret"] >= from+n })
}
