package examples_test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/paramexec/paramexec/fetch"
)

// defaultGrace is --grace's default (flags.go).
const defaultGrace = 10 * time.Second

// The parts of an ECS task definition this test reads.
type taskDefinition struct {
	Family                  string
	RequiresCompatibilities []string
	NetworkMode             string
	ExecutionRoleArn        string
	TaskRoleArn             string
	ContainerDefinitions    []struct {
		Name         string
		Image        string
		Essential    *bool
		EntryPoint   []string
		Command      []string
		StopTimeout  *int
		Environment  []struct{ Name, Value string }
		Secrets      []struct{ Name, ValueFrom string }
		LogConfig    *struct{ Options map[string]string } `json:"logConfiguration"`
		ReadonlyRoot bool                                 `json:"readonlyRootFilesystem"`
	}
}

func TestECSTaskDefinition(t *testing.T) {
	data, err := os.ReadFile("ecs-task-definition.json")
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(data) {
		t.Fatal("ecs-task-definition.json is not valid JSON")
	}
	var td taskDefinition
	if err := json.Unmarshal(data, &td); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(td.RequiresCompatibilities, "FARGATE") || td.NetworkMode != "awsvpc" {
		t.Errorf("want a Fargate task (requiresCompatibilities FARGATE, networkMode awsvpc), got %v, %q", td.RequiresCompatibilities, td.NetworkMode)
	}
	roleARN := regexp.MustCompile(`^arn:aws:iam::(\d{12}):role/[\w+=,.@/-]+$`)
	m := roleARN.FindStringSubmatch(td.TaskRoleArn)
	if m == nil {
		t.Fatalf("taskRoleArn %q: want arn:aws:iam::ACCOUNT:role/NAME; paramexec's credentials come from it", td.TaskRoleArn)
	}
	account := m[1]
	if !roleARN.MatchString(td.ExecutionRoleArn) {
		t.Errorf("executionRoleArn %q: Fargate needs it to pull from ECR and write logs", td.ExecutionRoleArn)
	}
	if len(td.ContainerDefinitions) != 1 {
		t.Fatalf("%d containers, want 1", len(td.ContainerDefinitions))
	}
	c := td.ContainerDefinitions[0]

	// Setting entryPoint drops the image's CMD (Docker's rule), so the task
	// must give the command too; both must be the image's own.
	_, entrypoint, cmd := finalStage(t)
	if c.EntryPoint != nil && !slices.Equal(c.EntryPoint, entrypoint) {
		t.Errorf("entryPoint %q, want the image's %q", c.EntryPoint, entrypoint)
	}
	if c.EntryPoint != nil && !slices.Equal(c.Command, cmd) {
		t.Errorf("command %q, want the image's CMD %q: an entryPoint override drops the image's CMD", c.Command, cmd)
	}
	if len(c.Secrets) > 0 {
		t.Error(`"secrets" resolves only at task start; the example shows paramexec's references in "environment" instead`)
	}

	flags := configFlags(t)
	env := map[string]string{}
	var paramexecEnv []string
	for _, e := range c.Environment {
		if _, dup := env[e.Name]; dup {
			t.Errorf("%s set twice", e.Name)
		}
		env[e.Name] = e.Value
		if strings.HasPrefix(e.Name, "PARAMEXEC_") {
			if _, ok := flags[flagOfVar(e.Name)]; !ok {
				t.Errorf("%s stands for --%s, which flags.go does not define", e.Name, flagOfVar(e.Name))
			}
			paramexecEnv = append(paramexecEnv, e.Name+"="+e.Value)
		}
	}
	for _, want := range []string{"PARAMEXEC_PATH", "PARAMEXEC_SECRET", "PARAMEXEC_INTERVAL", "PARAMEXEC_LOG_FORMAT"} {
		if env[want] == "" {
			t.Errorf("environment does not set %s", want)
		}
	}
	if env["PARAMEXEC_LOG_FORMAT"] != "json" {
		t.Errorf("PARAMEXEC_LOG_FORMAT=%q; CloudWatch Logs Insights wants json", env["PARAMEXEC_LOG_FORMAT"])
	}
	// paramexec itself parses these values: flags and durations it would
	// refuse make it exit 2 before --version is looked at.
	if code, out := runParamexec(t, []string{"--version"}, paramexecEnv); code != 0 {
		t.Errorf("paramexec --version with %v: exit %d: %s", paramexecEnv, code, out)
	}

	grace := defaultGrace
	if v := env["PARAMEXEC_GRACE"]; v != "" {
		if grace, err = time.ParseDuration(v); err != nil {
			t.Fatalf("PARAMEXEC_GRACE: %v", err)
		}
	}
	stopTimeout := 30 // ECS's default, in seconds
	if c.StopTimeout != nil {
		stopTimeout = *c.StopTimeout
	}
	if time.Duration(stopTimeout)*time.Second <= grace || stopTimeout > 120 {
		t.Errorf("stopTimeout %d: want above the grace period (%s), at most 120 on Fargate; ECS SIGKILLs paramexec when it runs out", stopTimeout, grace)
	}

	// Whatever the task asks for, the example IAM policy must allow.
	region := "us-east-1"
	if c.LogConfig != nil && c.LogConfig.Options["awslogs-region"] != "" {
		region = c.LogConfig.Options["awslogs-region"]
	}
	p := readPolicy(t)
	for _, path := range strings.Split(env["PARAMEXEC_PATH"], ",") {
		arn := "arn:aws:ssm:" + region + ":" + account + ":parameter" + strings.TrimRight(path, "/")
		if !allows(p, "ssm:GetParametersByPath", arn) {
			t.Errorf("PARAMEXEC_PATH %s: iam-policy.json does not allow ssm:GetParametersByPath on %s", path, arn)
		}
	}
	for _, item := range strings.Split(env["PARAMEXEC_SECRET"], ",") {
		s, err := fetch.ParseSecretFlag(item, 0)
		if err != nil {
			t.Errorf("PARAMEXEC_SECRET: %v", err)
			continue
		}
		checkSecretAllowed(t, p, s.ID, region, account)
	}

	refs := 0
	for _, e := range c.Environment {
		if strings.HasPrefix(e.Name, "PARAMEXEC_") {
			continue
		}
		ref, ok := fetch.ParseReference(e.Name, e.Value)
		looksLikeOne := strings.HasPrefix(e.Value, "arn:aws:ssm:") || strings.HasPrefix(e.Value, "arn:aws:secretsmanager:") ||
			strings.HasPrefix(e.Value, "ssm:") || strings.HasPrefix(e.Value, "secretsmanager:")
		switch {
		case looksLikeOne && !ok:
			t.Errorf("%s=%s looks like a reference but paramexec would pass it on as it is", e.Name, e.Value)
		case ok && ref.Param != nil:
			refs++
			arn := ref.Param.Name
			if !strings.HasPrefix(arn, "arn:") {
				arn = "arn:aws:ssm:" + region + ":" + account + ":parameter" + arn
			}
			if !allows(p, "ssm:GetParameters", arn) || !allows(p, "ssm:GetParameter", arn) {
				t.Errorf("%s refers to %s, which iam-policy.json does not let ssm:GetParameter(s) read", e.Name, arn)
			}
		case ok && ref.Secret != nil:
			refs++
			checkSecretAllowed(t, p, ref.Secret.ID, region, account)
		}
	}
	if refs == 0 {
		t.Error("the environment shows no reference (NAME=arn:aws:ssm:...)")
	}
}

// checkSecretAllowed checks that the policy lets paramexec read and poll
// the secret id (a name or an ARN). A name matches its ARN, which ends in
// "-" and six random characters.
func checkSecretAllowed(t *testing.T, p policy, id, region, account string) {
	t.Helper()
	arn := id
	if !strings.HasPrefix(arn, "arn:") {
		arn = "arn:aws:secretsmanager:" + region + ":" + account + ":secret:" + id + "-AbCdEf"
	}
	for _, action := range []string{"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"} {
		if !allows(p, action, arn) {
			t.Errorf("secret %s: iam-policy.json does not allow %s on %s", id, action, arn)
		}
	}
}
