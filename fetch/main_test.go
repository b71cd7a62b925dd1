package fetch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/paramexec/paramexec/internal/faultproxy"
	"github.com/paramexec/paramexec/internal/motoserver"
)

// moto is the moto_server every test in the package shares. Tests keep out
// of each other's way by naming what they create with uniq, not by resets.
var moto *motoserver.Server

func TestMain(m *testing.M) { os.Exit(motoserver.Main(m, &moto)) }

var uniqSeq atomic.Int64

// uniq returns a name part unique to this test and this run (go test
// -count=2 runs every test again against the same server).
func uniq(t testing.TB) string {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, t.Name())
	return fmt.Sprintf("%s-%d", name, uniqSeq.Add(1))
}

// proxied starts a faultproxy in front of moto and returns it with an SDK
// config that talks through it, so a test can count calls and inject faults.
func proxied(t testing.TB) (*faultproxy.Proxy, aws.Config) {
	t.Helper()
	p, err := faultproxy.Start(moto.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	cfg := moto.Config(context.Background())
	cfg.BaseEndpoint = aws.String(p.URL())
	return p, cfg
}

// loadAll loads every source concurrently, as a start-up without retries
// does. Layers come back in the order of sources; the error joins every
// source's error.
func loadAll(ctx context.Context, sources []Source) ([]Layer, error) {
	layers, errs := loadEach(ctx, sources)
	return layers, errors.Join(errs...)
}

// direct is an SDK config that talks to moto itself.
func direct() aws.Config { return moto.Config(context.Background()) }

// clientsFor builds the per-Region clients a source takes, as newClients
// does: one attempt per call, the retries being paramexec's own.
func clientsFor(cfg aws.Config) awsClients {
	cfg.Retryer = func() aws.Retryer { return aws.NopRetryer{} }
	return awsClients{
		Region: cfg.Region,
		SSM: func(region string) SSMClient {
			return ssm.NewFromConfig(cfg, func(o *ssm.Options) { o.Region = region })
		},
		SecretsManager: func(region string) SecretsClient {
			return secretsmanager.NewFromConfig(cfg, func(o *secretsmanager.Options) { o.Region = region })
		},
	}
}

// createSecret creates a secret and returns its ARN and first version id.
func createSecret(t testing.TB, name string, value string, binary []byte) (arn, version string) {
	t.Helper()
	in := &secretsmanager.CreateSecretInput{Name: aws.String(name)}
	if binary != nil {
		in.SecretBinary = binary
	} else {
		in.SecretString = aws.String(value)
	}
	out, err := moto.SecretsManager().CreateSecret(context.Background(), in)
	if err != nil {
		t.Fatalf("create secret %s: %v", name, redacted(err, value))
	}
	return aws.ToString(out.ARN), aws.ToString(out.VersionId)
}

// redacted keeps a value out of a failure message.
func redacted(err error, value string) string {
	if value == "" {
		return err.Error()
	}
	return strings.ReplaceAll(err.Error(), value, "<value>")
}

// noValues fails if err's text holds any of values: errors name things,
// never their values.
func noValues(t testing.TB, err error, values ...string) {
	t.Helper()
	for _, v := range values {
		if v != "" && strings.Contains(err.Error(), v) {
			t.Errorf("error reveals a value: %v", err)
		}
	}
}

// varsOf maps a layer's variables by name.
func varsOf(l Layer) map[string]Var {
	m := make(map[string]Var, len(l.Vars))
	for _, v := range l.Vars {
		m[v.Name] = v
	}
	return m
}

// wantVars checks that layer holds exactly want (name to value).
func wantVars(t testing.TB, l Layer, want map[string]string) {
	t.Helper()
	got := varsOf(l)
	for name, value := range want {
		v, ok := got[name]
		switch {
		case !ok:
			t.Errorf("variable %s missing", name)
		case v.Value != value:
			t.Errorf("variable %s = %q, want %q", name, v.Value, value)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("unexpected variable %s", name)
		}
	}
	if len(l.Vars) != len(got) {
		t.Errorf("%d variables for %d names: a name twice", len(l.Vars), len(got))
	}
}
