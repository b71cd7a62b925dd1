package fetch

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go/logging"
	"github.com/aws/smithy-go/middleware"
)

// A Spec is one source flag as given: Kind is the flag's name (env-file,
// path, param, secret), Value its argument.
type Spec struct {
	Kind, Value string
}

// Build turns the source flags, lowest precedence first, into sources,
// creating AWS clients only when an AWS source asks for them, so that a
// dotenv-only run needs no AWS configuration at all. The --param flags form
// one source and the --secret flags another, so that they share calls; each
// variable keeps its flag's rank. References among the inherited variables
// are parameters and secrets of their own, ranked below every flag
// (refRank). ctx bounds the loading of the AWS configuration; the clients
// keep no part of it.
func Build(ctx context.Context, specs []Spec, inherited []string, log *slog.Logger) ([]Source, error) {
	sources, paths, params, secrets, err := parseSpecs(specs)
	if err != nil {
		return nil, err
	}
	refs := findReferences(inherited)
	if len(paths) == 0 && len(params) == 0 && len(secrets) == 0 && len(refs) == 0 {
		log.Debug("sources configured", "count", len(sources))
		return sources, nil
	}
	c, err := newClients(ctx, log)
	if err != nil {
		return nil, err
	}
	for _, p := range paths {
		p.Client = c.SSM(c.Region)
	}
	if len(params) > 0 {
		sources = append(sources, &paramSource{Params: params, Clients: *c})
	}
	if len(secrets) > 0 {
		sources = append(sources, &secretSource{Secrets: secrets, Clients: *c})
	}
	if len(refs) > 0 {
		names := make([]string, len(refs))
		for i, r := range refs {
			names[i] = r.Var
		}
		log.Debug("inherited variables hold references", "variables", names)
		sources = append(sources, refSources(refs, *c)...)
	}
	log.Debug("sources configured", "count", len(sources))
	return sources, nil
}

// CheckSpecs refuses a malformed source flag before anything is read or
// any AWS configuration loaded, so that it reads as a usage error, like
// any other flag's.
func CheckSpecs(specs []Spec) error {
	_, _, _, _, err := parseSpecs(specs)
	return err
}

// parseSpecs parses every source flag: the dotenv files and paths as
// sources in flag order (paths is the same *pathSource values, still
// without a client), the --param and --secret flags as items.
func parseSpecs(specs []Spec) (sources []Source, paths []*pathSource, params []Param, secrets []Secret, err error) {
	for rank, sp := range specs {
		switch sp.Kind {
		case "env-file":
			sources = append(sources, &EnvFileSource{Path: sp.Value, Rank: rank})
		case "path":
			src, err := newPathSource(sp.Value, nil, rank)
			if err != nil {
				return nil, nil, nil, nil, err
			}
			sources, paths = append(sources, src), append(paths, src)
		case "param":
			p, err := parseParamFlag(sp.Value, rank)
			if err != nil {
				return nil, nil, nil, nil, err
			}
			params = append(params, p)
		case "secret":
			s, err := ParseSecretFlag(sp.Value, rank)
			if err != nil {
				return nil, nil, nil, nil, err
			}
			secrets = append(secrets, s)
		default:
			return nil, nil, nil, nil, fmt.Errorf("--%s is not supported yet", sp.Kind)
		}
	}
	return sources, paths, params, secrets, nil
}

// Bounds on one HTTP attempt. The context of each call (the start-up
// deadline, a poll's deadline) bounds it further. Credentials get their own,
// shorter bound: the SDK fetches them in a flight that its callers' contexts
// cannot cancel and that every later call joins, so a credentials endpoint
// that accepts and never answers would otherwise fail every call from then
// on, even after it recovers. botocore gives the container endpoint 2s; an
// ECS agent under load is allowed a little more.
const (
	attemptTimeout     = 15 * time.Second
	credentialsTimeout = 5 * time.Second
)

// newClients loads the SDK's default configuration: credentials and region
// from the environment, profiles, ECS or EC2 (IMDSv2, region included), and
// AWS_ENDPOINT_URL for emulators. ctx bounds the loading, the instance
// metadata lookup of the Region included. Every HTTP attempt, for
// credentials too, is bounded so that a black-holed connection cannot stall
// start-up or polling, and every error is sanitised on its way out of the
// SDK (sanitizeErrors) so that no text of an answer reaches a log.
//
// This is the one place of the retry policy: one attempt per call.
// paramexec retries on its own schedule, until --startup-timeout at start
// (LoadWithRetry) and with capped, jittered backoff while polling
// (Watcher.retryWait). The SDK's three attempts would triple a fleet's
// calls just when the account is throttled, and its retry-token bucket can
// run dry.
func newClients(ctx context.Context, log *slog.Logger) (*awsClients, error) {
	sdkLog := sdkLogger{log}
	credHTTP := awshttp.NewBuildableClient().WithTimeout(credentialsTimeout)
	cfg, err := awsconfig.LoadDefaultConfig(ctx,
		awsconfig.WithEC2IMDSRegion(func(o *awsconfig.UseEC2IMDSRegion) {
			o.Client = imds.New(imds.Options{HTTPClient: credHTTP, Logger: sdkLog, APIOptions: []func(*middleware.Stack) error{sanitizeErrors}})
		}),
		awsconfig.WithHTTPClient(awshttp.NewBuildableClient().WithTimeout(attemptTimeout)),
		// The SDK makes the container credentials client with a client of
		// its own that has no timeout at all. Instance-profile credentials
		// use the IMDS client made from this Config: attemptTimeout, and
		// IMDS's own quick dial and header timeouts.
		awsconfig.WithEndpointCredentialOptions(func(o *endpointcreds.Options) { o.HTTPClient = credHTTP }),
		awsconfig.WithAPIOptions([]func(*middleware.Stack) error{sanitizeErrors}),
		awsconfig.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
		// The SDK's own lines ("falling back to IMDSv1") would otherwise go
		// to stderr in a format of their own, breaking --log-format json.
		awsconfig.WithLogger(sdkLog),
	)
	if err != nil {
		if _, set := os.LookupEnv("AWS_REGION"); !set {
			// WithEC2IMDSRegion failing off EC2 reads as an IMDS error;
			// say what to do about it first.
			return nil, fmt.Errorf("no AWS region: set AWS_REGION (instance metadata, asked because none is set, did not answer: %w)", err)
		}
		return nil, fmt.Errorf("AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return nil, fmt.Errorf("no AWS region: set AWS_REGION (on EC2 it is read from instance metadata)")
	}
	ssmFor := perRegion(func(region string) *ssm.Client {
		return ssm.NewFromConfig(cfg, func(o *ssm.Options) { o.Region = region })
	})
	smFor := perRegion(func(region string) *secretsmanager.Client {
		return secretsmanager.NewFromConfig(cfg, func(o *secretsmanager.Options) { o.Region = region })
	})
	return &awsClients{
		Region:         cfg.Region,
		SSM:            func(region string) SSMClient { return ssmFor(region) },
		SecretsManager: func(region string) SecretsClient { return smFor(region) },
	}, nil
}

// sdkLogger routes the SDK's own log lines through paramexec's logger. The
// SDK logs requests and answers only in a ClientLogMode paramexec never
// sets; what remains are warnings such as a fallback to IMDSv1, which name
// no value.
type sdkLogger struct{ log *slog.Logger }

func (l sdkLogger) Logf(c logging.Classification, format string, v ...any) {
	level := slog.LevelDebug
	if c == logging.Warn {
		level = slog.LevelWarn
	}
	l.log.Log(context.Background(), level, fmt.Sprintf(format, v...), "from", "aws-sdk")
}

// perRegion makes a client for a Region on first use and keeps it. Sources
// load concurrently, hence the lock.
func perRegion[C any](newClient func(region string) C) func(region string) C {
	var mu sync.Mutex
	made := make(map[string]C)
	return func(region string) C {
		mu.Lock()
		defer mu.Unlock()
		c, ok := made[region]
		if !ok {
			c = newClient(region)
			made[region] = c
		}
		return c
	}
}
