package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"
	"github.com/aws/smithy-go/middleware"
)

// A Spec is one source flag as given: Kind is the flag's name (env-file,
// path, param, secret), Value its argument.
type Spec struct {
	Kind, Value string
	Whole       bool // a --secret's JSON object as one variable, not one per key
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
		if err := p.bind(*c); err != nil {
			return nil, err
		}
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
// sources in flag order (paths is the same values, still without a
// client), the --param and --secret flags as items.
func parseSpecs(specs []Spec) (sources []Source, paths []pathFlag, params []Param, secrets []Secret, err error) {
	for rank, sp := range specs {
		switch sp.Kind {
		case "env-file":
			sources = append(sources, &EnvFileSource{Path: sp.Value, Rank: rank})
		case "path":
			src, err := newPathFlag(sp.Value, rank)
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
			s.whole = sp.Whole
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
	apiOptions := []func(*middleware.Stack) error{sanitizeErrors, vouchErrors}
	cfg, err := awsconfig.LoadDefaultConfig(ctx,
		awsconfig.WithEC2IMDSRegion(func(o *awsconfig.UseEC2IMDSRegion) {
			o.Client = imds.New(imds.Options{HTTPClient: credHTTP, Logger: sdkLog, APIOptions: apiOptions})
		}),
		awsconfig.WithHTTPClient(awshttp.NewBuildableClient().WithTimeout(attemptTimeout)),
		// The SDK makes the container credentials client with a client of
		// its own that has no timeout at all. Instance-profile credentials
		// use the IMDS client made from this Config: attemptTimeout, and
		// IMDS's own quick dial and header timeouts.
		awsconfig.WithEndpointCredentialOptions(func(o *endpointcreds.Options) { o.HTTPClient = credHTTP }),
		awsconfig.WithAPIOptions(apiOptions),
		awsconfig.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
		// The SDK's own lines ("falling back to IMDSv1") would otherwise go
		// to stderr in a format of their own, breaking --log-format json.
		awsconfig.WithLogger(sdkLog),
	)
	if err != nil {
		return nil, configError(err)
	}
	if cfg.Region == "" {
		return nil, fmt.Errorf("no AWS region: set AWS_REGION (on EC2 it is read from instance metadata)")
	}
	if cfg.Credentials != nil {
		cfg.Credentials = vouchedCredentials{inner: cfg.Credentials, provider: providerName(cfg)}
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

// configError says why the AWS configuration could not be loaded, keeping
// of the SDK's error only what names no value: a profile that is not
// there, a file that cannot be read, the instance metadata's answer for
// the Region (vouched for by vouchErrors). The SDK quotes the files'
// contents in other errors (an invalid "key=value"), and the credentials
// file holds secret keys.
func configError(err error) error {
	var op *smithy.OperationError
	var noProfile awsconfig.SharedConfigProfileNotExistError
	var file *os.PathError
	switch {
	case errors.As(err, &op):
		// WithEC2IMDSRegion failing off EC2 reads as an IMDS error;
		// say what to do about it first.
		return fmt.Errorf("no AWS region: set AWS_REGION (instance metadata, asked because none is set, did not answer: %w)", op)
	case errors.As(err, &noProfile):
		return fmt.Errorf("AWS configuration: profile %q is in none of %s", noProfile.Profile, strings.Join(noProfile.Filename, ", "))
	case errors.As(err, &file):
		return fmt.Errorf("AWS configuration: %w", file)
	}
	return fmt.Errorf("AWS configuration (the AWS_* variables, and ~/.aws/config and ~/.aws/credentials or the files AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE name) is not valid for profile %s; the SDK's message is not shown, as it may quote a secret from them",
		profileName())
}

// profileName is the profile the SDK reads, for messages.
func profileName() string {
	if p := os.Getenv("AWS_PROFILE"); p != "" {
		return p
	}
	return "default"
}

// vouchedCredentials is the configuration's credential provider with its
// errors told in paramexec's words. The SDK's providers quote what they
// read: credential_process its whole output when that is not clean JSON
// (credentials included), the SSO cache a field that failed to parse. It
// wraps the SDK's cache, so credentials are still fetched once and shared.
type vouchedCredentials struct {
	inner    aws.CredentialsProvider
	provider string // providerName's words
}

func (c vouchedCredentials) Retrieve(ctx context.Context) (aws.Credentials, error) {
	creds, err := c.inner.Retrieve(ctx)
	if err != nil {
		cause := providerCause(err)
		return aws.Credentials{}, &credentialsFailure{provider: c.provider, what: providerFailure(err, cause), cause: cause}
	}
	return creds, nil
}

// credentialsFailure is a credential provider's failure: which provider,
// for which profile, what went wrong in our words, and the one part of
// the provider's error that can be vouched for, if any.
type credentialsFailure struct {
	provider, what string
	cause          error // an inner call's vouched error, or a file, process or network error; may be nil
}

func (e *credentialsFailure) Error() string {
	msg := "cannot get AWS credentials from " + e.provider
	if e.what != "" {
		msg += ": " + e.what
	}
	if e.cause != nil {
		msg += ": " + e.cause.Error()
	}
	return msg
}

func (e *credentialsFailure) Unwrap() error { return e.cause }

// providerName names the credentials the configuration chose, by kind and
// profile, never by content: a credential_process command line may carry a
// token of its own.
func providerName(cfg aws.Config) string {
	var kinds []string
	fromProfile := false
	if src, ok := cfg.Credentials.(aws.CredentialProviderSource); ok {
		for _, s := range src.ProviderSources() {
			k, known := credentialKinds[s]
			if known && !slices.Contains(kinds, k.say) {
				kinds = append(kinds, k.say)
			}
			fromProfile = fromProfile || k.profile
		}
	}
	if len(kinds) == 0 {
		kinds, fromProfile = []string{"the default credential chain"}, true
	}
	name := strings.Join(kinds, ", then ")
	for _, src := range cfg.ConfigSources {
		if sc, ok := src.(awsconfig.SharedConfig); ok && sc.Profile != "" && fromProfile {
			return name + " of profile " + sc.Profile
		}
	}
	return name
}

// credentialKinds names the SDK's credential sources in a user's words,
// and says which are read from a profile.
var credentialKinds = map[aws.CredentialSource]struct {
	say     string
	profile bool
}{
	aws.CredentialSourceEnvVars:              {"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", false},
	aws.CredentialSourceEnvVarsSTSWebIDToken: {"the web identity token file AWS_WEB_IDENTITY_TOKEN_FILE names", false},
	aws.CredentialSourceProfileSTSWebIDToken: {"web_identity_token_file", true},
	aws.CredentialSourceProfile:              {"the keys", true},
	aws.CredentialSourceProfileProcess:       {"credential_process", true},
	aws.CredentialSourceProcess:              {"credential_process", true},
	aws.CredentialSourceSSO:                  {"SSO (the token aws sso login caches)", true},
	aws.CredentialSourceSSOLegacy:            {"SSO (the token aws sso login caches)", true},
	aws.CredentialSourceProfileLogin:         {"aws login's cached session", true},
	aws.CredentialSourceSTSAssumeRole:        {"an assumed role", false},
	aws.CredentialSourceProfileSourceProfile: {"a source profile", true},
	aws.CredentialSourceHTTP:                 {"the container credentials endpoint", false},
	aws.CredentialSourceIMDS:                 {"the instance metadata service", false},
}

// providerFailures tells a provider's failure in our words. The SDK's
// text is only looked at (matched against the fixed words its providers
// write), never kept.
var providerFailures = []struct{ match, say string }{
	{"parse failed of process output", "its output is not the JSON credentials document it must print (the output is not shown: it may hold credentials)"},
	{"wrong version in process output", "its output's Version is not 1"},
	{"missing AccessKeyId in process output", "its output has no AccessKeyId"},
	{"missing SecretAccessKey in process output", "its output has no SecretAccessKey"},
	{"credential process timed out", "the process timed out"},
	{"error in credential_process", "the process failed"},
	{"failed to parse cached SSO token file", "the cached SSO token file is not valid (its text is not shown); run aws sso login"},
	{"failed to read cached SSO token file", "the cached SSO token file cannot be read; run aws sso login"},
	{"cached SSO token is expired", "the cached SSO token has expired or is missing; run aws sso login"},
	{"failed to retrieve jwt from provide source", "the web identity token file cannot be read"},
	{"no EC2 IMDS role found", "the instance has no role"},
}

// providerFailure is "" for an unknown failure whose cause says enough
// (an STS or SSO call's answer).
func providerFailure(err, cause error) string {
	text := err.Error()
	for _, f := range providerFailures {
		if strings.Contains(text, f.match) {
			return f.say
		}
	}
	if cause != nil {
		return ""
	}
	return "the provider failed (its message is not shown: it may quote what it read)"
}

// providerCause is the part of a provider's error that can be vouched for:
// a call it made (its error already vouched for by vouchErrors, since the
// SDK makes those clients from the same Config), a process's exit status,
// a file that cannot be opened, a network error or a deadline.
func providerCause(err error) error {
	var (
		op    *smithy.OperationError
		exit  *exec.ExitError
		file  *os.PathError
		netOp *net.OpError
	)
	switch {
	case errors.As(err, &op):
		return op
	case errors.As(err, &exit):
		return exit
	case errors.As(err, &file):
		return file
	case errors.As(err, &netOp):
		return netOp
	case errors.Is(err, context.DeadlineExceeded):
		return context.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return context.Canceled
	}
	return nil
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
