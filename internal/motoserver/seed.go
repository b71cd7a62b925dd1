package motoserver

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// The seeding helpers use their own deadline rather than t.Context(), which
// is already cancelled when t.Cleanup functions run.
func callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), callTimeout)
}

// redact keeps a value out of a failure message: validation errors from
// AWS-like services may echo the offending input back.
func redact(err error, value string) string {
	msg := err.Error()
	if len(value) >= 4 {
		return strings.ReplaceAll(msg, value, "<redacted>")
	}
	// Replacing every occurrence of a very short value would garble the
	// message; services echo input quoted, so redact the quoted forms.
	for _, q := range []string{"'", `"`} {
		msg = strings.ReplaceAll(msg, q+value+q, q+"<redacted>"+q)
	}
	return msg
}

// PutParameter creates or overwrites parameter name; typ is "String",
// "SecureString" or "StringList".
func (s *Server) PutParameter(t testing.TB, name, value, typ string) {
	t.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	_, err := s.ssm.PutParameter(ctx, &ssm.PutParameterInput{
		Name:      aws.String(name),
		Value:     aws.String(value),
		Type:      ssmtypes.ParameterType(typ),
		Overwrite: aws.Bool(true),
	})
	if err != nil {
		t.Fatalf("put parameter %s (%s): %s", name, typ, redact(err, value))
	}
}

// DeleteParameter deletes parameter name; it fails the test if there is none.
func (s *Server) DeleteParameter(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	if _, err := s.ssm.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String(name)}); err != nil {
		t.Fatalf("delete parameter %s: %v", name, err)
	}
}

// LabelParameter attaches labels to version of parameter name (0: the
// latest version). AWS moves a label that is already on another version.
func (s *Server) LabelParameter(t testing.TB, name string, version int64, labels ...string) {
	t.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	in := &ssm.LabelParameterVersionInput{Name: aws.String(name), Labels: labels}
	if version != 0 {
		in.ParameterVersion = aws.Int64(version)
	}
	out, err := s.ssm.LabelParameterVersion(ctx, in)
	if err != nil {
		t.Fatalf("label parameter %s version %d: %v", name, version, err)
	}
	if len(out.InvalidLabels) > 0 {
		t.Fatalf("label parameter %s version %d: invalid labels %q", name, version, out.InvalidLabels)
	}
}

// CreateSecret creates a secret with a string value and returns its ARN.
func (s *Server) CreateSecret(t testing.TB, name, value string) (arn string) {
	t.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	out, err := s.sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{
		Name:         aws.String(name),
		SecretString: aws.String(value),
	})
	if err != nil {
		t.Fatalf("create secret %s: %s", name, redact(err, value))
	}
	if out.ARN == nil {
		t.Fatalf("create secret %s: no ARN in response", name)
	}
	return *out.ARN
}

// PutSecretValue stores a new version of secret id (name or ARN) and returns
// its version id. moto moves AWSCURRENT to it and AWSPREVIOUS to the old one,
// as the last step of a rotation does.
func (s *Server) PutSecretValue(t testing.TB, id, value string) (versionID string) {
	t.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	out, err := s.sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{
		SecretId:     aws.String(id),
		SecretString: aws.String(value),
	})
	if err != nil {
		t.Fatalf("put secret value %s: %s", id, redact(err, value))
	}
	if out.VersionId == nil {
		t.Fatalf("put secret value %s: no VersionId in response", id)
	}
	return *out.VersionId
}
