package kit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/paramexec/paramexec/internal/motoserver"
)

// Emulator is a moto_server the benchmarks seed and change, either one they
// started (and own) or one started elsewhere, such as by a test's TestMain.
type Emulator struct {
	URL    string
	Server *motoserver.Server // nil when the server belongs to someone else
	SSM    *ssm.Client
	SM     *secretsmanager.Client
}

// StartEmulator starts a moto_server, or connects to the one at url.
func StartEmulator(ctx context.Context, url string) (*Emulator, error) {
	e := &Emulator{URL: url}
	if url == "" {
		srv, err := motoserver.Start(ctx)
		if err != nil {
			return nil, err
		}
		e.Server, e.URL = srv, srv.URL
	}
	cfg := aws.Config{
		Region:       motoserver.Region,
		Credentials:  credentials.NewStaticCredentialsProvider("testing", "testing", ""),
		BaseEndpoint: aws.String(e.URL),
		// Seeding must not fail on a busy box because moto hiccuped once.
		Retryer: func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = 8 })
		},
	}
	e.SSM = ssm.NewFromConfig(cfg)
	e.SM = secretsmanager.NewFromConfig(cfg)
	return e, nil
}

// Close stops the server if it is ours.
func (e *Emulator) Close() error {
	if e.Server == nil {
		return nil
	}
	return e.Server.Stop()
}

// Reset wipes a server of ours, so that moto's full scans of every stored
// parameter (GetParametersByPath) see only what the next step seeds. A
// server of someone else's is left alone: callers use fresh names instead.
func (e *Emulator) Reset() error {
	if e.Server == nil {
		return nil
	}
	return e.Server.Reset()
}

// Param is one seeded parameter.
type Param struct {
	Name   string // /bench/p10/p0003
	Var    string // the variable paramexec makes of it under its path: P0003
	Value  string
	Secure bool
}

// SeedPath puts n parameters under path, every fourth a SecureString, so
// that start-up reads go through moto's KMS decryption too.
func (e *Emulator) SeedPath(ctx context.Context, path string, n int) ([]Param, error) {
	params := make([]Param, n)
	for i := range params {
		params[i] = Param{
			Name:   fmt.Sprintf("%s/p%04d", path, i),
			Var:    fmt.Sprintf("P%04d", i),
			Value:  NewValue(),
			Secure: i%4 == 3,
		}
	}
	jobs := make(chan Param)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for p := range jobs {
				if err := e.PutParameter(ctx, p.Name, p.Value, p.Secure); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	for _, p := range params {
		jobs <- p
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		return nil, fmt.Errorf("seed %s: %w", path, err)
	default:
	}
	return params, nil
}

// PutParameter creates or overwrites a parameter; every call makes a new version.
func (e *Emulator) PutParameter(ctx context.Context, name, value string, secure bool) error {
	typ := ssmtypes.ParameterTypeString
	if secure {
		typ = ssmtypes.ParameterTypeSecureString
	}
	_, err := e.SSM.PutParameter(ctx, &ssm.PutParameterInput{
		Name:      aws.String(name),
		Value:     aws.String(value),
		Type:      typ,
		Overwrite: aws.Bool(true),
	})
	if err != nil {
		return fmt.Errorf("put parameter %s: %w", name, err)
	}
	return nil
}

// CreateSecret creates a secret holding value as its AWSCURRENT version.
func (e *Emulator) CreateSecret(ctx context.Context, name, value string) error {
	_, err := e.SM.CreateSecret(ctx, &secretsmanager.CreateSecretInput{
		Name:         aws.String(name),
		SecretString: aws.String(value),
	})
	if err != nil {
		return fmt.Errorf("create secret %s: %w", name, err)
	}
	return nil
}

// PutSecretValue adds a version and moves AWSCURRENT to it, as the last
// step of a rotation does.
func (e *Emulator) PutSecretValue(ctx context.Context, name, value string) error {
	_, err := e.SM.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{
		SecretId:     aws.String(name),
		SecretString: aws.String(value),
	})
	if err != nil {
		return fmt.Errorf("put secret value %s: %w", name, err)
	}
	return nil
}

// NewValue is a random value that cannot occur by chance in a log, so that
// finding it there proves a leak.
func NewValue() string {
	var b [12]byte
	rand.Read(b[:])
	return "v" + hex.EncodeToString(b[:])
}

// RunID is a short random name part, so that runs sharing one server use
// disjoint names.
func RunID() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:]) + fmt.Sprint(time.Now().Unix()%1000)
}
