package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go/middleware"

	"github.com/paramexec/paramexec/exec"
	"github.com/paramexec/paramexec/fetch"
	"github.com/paramexec/paramexec/internal/listen"
	"github.com/paramexec/paramexec/internal/proxy"
)

// envPrefix starts the environment variable that stands in for each flag.
const envPrefix = "PARAMEXEC_"

// A sourceFlag is one --path, --param, --secret or --env-file, kept in the
// order given, since that order is the precedence.
type sourceFlag struct {
	kind  string // the flag's name
	value string
}

type config struct {
	sources    []sourceFlag // lowest precedence first
	noOverride bool

	interval       time.Duration
	onChange       exec.Action
	grace          time.Duration
	stopSignal     syscall.Signal
	init           bool
	startupTimeout time.Duration
	discoverEvery  int
	// settle, settleMax and splay hold a change before it is acted on; see
	// fetch.Watcher.
	settle, settleMax, splay time.Duration

	// listen and proxy are --listen and --proxy, parsed: see handoff.go.
	listen        []listen.Spec
	proxy         []proxy.Spec
	proxyProtocol bool

	print, reveal bool
	format        string

	logFormat, logLevel string
	version             bool

	argv []string
}

// supervise reports whether paramexec stays as the child's parent rather
// than exec-ing in its place.
func (c *config) supervise() bool { return c.interval > 0 || c.init || len(c.proxy) > 0 }

// sourceKinds lists the repeatable source flags in the order their
// PARAMEXEC_* variables are applied (lowest precedence first).
var sourceKinds = []string{"env-file", "path", "param", "secret"}

// sourceList collects one kind of source flag into a shared ordered list.
type sourceList struct {
	kind string
	dst  *[]sourceFlag
}

func (s sourceList) String() string { return "" }
func (s sourceList) Set(v string) error {
	if v == "" {
		return fmt.Errorf("empty value")
	}
	*s.dst = append(*s.dst, sourceFlag{kind: s.kind, value: v})
	return nil
}

// parseConfig reads flags from args and, for each flag not on the command
// line, from its PARAMEXEC_* variable. lookup reads the environment.
func parseConfig(args []string, lookup func(string) (string, bool)) (*config, error) {
	cfg := &config{}
	fs := flag.NewFlagSet("paramexec", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned and printed once, by run
	fs.Usage = func() {}

	var fromFlags, fromEnv []sourceFlag
	for _, kind := range sourceKinds {
		fs.Var(sourceList{kind: kind, dst: &fromFlags}, kind, "")
	}
	fs.BoolVar(&cfg.noOverride, "no-override", false, "")
	fs.DurationVar(&cfg.interval, "interval", 0, "")
	onChange := fs.String("on-change", "restart", "")
	fs.DurationVar(&cfg.grace, "grace", 10*time.Second, "")
	stopSignal := fs.String("stop-signal", "TERM", "")
	fs.BoolVar(&cfg.init, "init", false, "")
	fs.DurationVar(&cfg.startupTimeout, "startup-timeout", 30*time.Second, "")
	fs.IntVar(&cfg.discoverEvery, "discover-every", 10, "")
	fs.DurationVar(&cfg.settle, "settle", 0, "")
	fs.DurationVar(&cfg.settleMax, "settle-max", 0, "")
	fs.DurationVar(&cfg.splay, "splay", 0, "")
	var listens, proxies listFlag
	fs.Var(&listens, "listen", "")
	fs.Var(&proxies, "proxy", "")
	fs.BoolVar(&cfg.proxyProtocol, "proxy-protocol", false, "")
	fs.BoolVar(&cfg.print, "print", false, "")
	fs.BoolVar(&cfg.reveal, "reveal", false, "")
	fs.StringVar(&cfg.format, "format", "dotenv", "")
	fs.StringVar(&cfg.logFormat, "log-format", "text", "")
	fs.StringVar(&cfg.logLevel, "log-level", "info", "")
	fs.BoolVar(&cfg.version, "version", false, "")

	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	onCommandLine := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })

	// Source flags from the environment go first, in a fixed kind order, so
	// that a command line adds to an image's defaults and wins over them.
	for _, kind := range sourceKinds {
		if onCommandLine[kind] {
			continue
		}
		if v, ok := lookup(envName(kind)); ok && v != "" {
			for _, item := range strings.Split(v, ",") {
				if item = strings.TrimSpace(item); item != "" {
					fromEnv = append(fromEnv, sourceFlag{kind: kind, value: item})
				}
			}
		}
	}
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if onCommandLine[f.Name] || isSourceKind(f.Name) {
			return
		}
		if v, ok := lookup(envName(f.Name)); ok && v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = errors.Join(envErr, fmt.Errorf("%s=%q: %w", envName(f.Name), v, err))
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	cfg.sources = append(fromEnv, fromFlags...)
	cfg.argv = fs.Args()

	var err error
	if cfg.onChange, err = exec.ParseAction(*onChange); err != nil {
		return nil, fmt.Errorf("--on-change: %w", err)
	}
	if cfg.stopSignal, err = exec.ParseSignal(*stopSignal); err != nil {
		return nil, fmt.Errorf("--stop-signal: %w", err)
	}
	if cfg.listen, cfg.proxy, err = parseHandoff(listens, proxies); err != nil {
		return nil, err
	}
	return cfg, cfg.check()
}

// check refuses settings that cannot work together.
func (c *config) check() error {
	switch {
	case c.version:
		return nil
	case c.interval < 0:
		return fmt.Errorf("--interval %s: must not be negative", c.interval)
	case c.interval > 0 && c.interval < time.Second:
		return fmt.Errorf("--interval %s: at least 1s; polling faster only spends the account's API quota", c.interval)
	case c.grace < 0:
		return fmt.Errorf("--grace %s: must not be negative", c.grace)
	case c.startupTimeout < 0:
		return fmt.Errorf("--startup-timeout %s: must not be negative", c.startupTimeout)
	case c.discoverEvery < 1:
		return fmt.Errorf("--discover-every %d: at least 1", c.discoverEvery)
	case c.format != "dotenv" && c.format != "json" && c.format != "shell":
		return fmt.Errorf("--format %q: want dotenv, json or shell", c.format)
	case c.reveal && !c.print:
		return fmt.Errorf("--reveal only goes with --print")
	case slices.ContainsFunc(c.sources, func(s sourceFlag) bool { return s.kind == "path" && !strings.HasPrefix(s.value, "/") }):
		return fmt.Errorf("--path: a path starts with /, as in /myapp/prod")
	case !c.print && len(c.argv) == 0:
		return fmt.Errorf("no command given: paramexec [flags] [--] COMMAND [ARGS...]")
	}
	if err := c.checkHold(); err != nil {
		return err
	}
	return c.checkHandoff()
}

// checkHold checks --settle, --settle-max and --splay. Without --interval
// nothing is watched, so they would silently do nothing: that is refused
// rather than ignored, as --reveal without --print is.
func (c *config) checkHold() error {
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--settle", c.settle}, {"--settle-max", c.settleMax}, {"--splay", c.splay}} {
		switch {
		case d.v < 0:
			return fmt.Errorf("%s %s: must not be negative", d.flag, d.v)
		case d.v > 0 && c.interval == 0 && !c.print:
			return fmt.Errorf("%s %s: only applies when watching; give --interval too", d.flag, d.v)
		}
	}
	switch {
	case c.settleMax > 0 && c.settle == 0:
		return fmt.Errorf("--settle-max %s: bounds --settle, which is not given", c.settleMax)
	case c.settleMax > 0 && c.settleMax < c.settle:
		return fmt.Errorf("--settle-max %s: below --settle %s; the wait could never be quiet for --settle", c.settleMax, c.settle)
	}
	return nil
}

func isSourceKind(name string) bool {
	for _, k := range sourceKinds {
		if k == name {
			return true
		}
	}
	return false
}

// envName is the variable that stands in for a flag: --log-level is
// PARAMEXEC_LOG_LEVEL.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// envLookup looks names up in an environment list rather than the process's
// own, so tests can run many configurations side by side.
func envLookup(environ []string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		for i := len(environ) - 1; i >= 0; i-- {
			if k, v, ok := strings.Cut(environ[i], "="); ok && k == name {
				return v, true
			}
		}
		return "", false
	}
}

// buildSources turns the source flags into fetch sources, creating AWS
// clients only when an AWS source asks for them, so that a dotenv-only run
// needs no AWS configuration at all. The --param flags form one source and
// the --secret flags another, so that they share calls; each variable
// keeps its flag's rank. References among the inherited variables form a
// source of their own, ranked below every flag.
func buildSources(ctx context.Context, cfg *config, inherited []string, log *slog.Logger) ([]fetch.Source, error) {
	var shared *awsClients
	clients := func() (*awsClients, error) {
		if shared != nil {
			return shared, nil
		}
		c, err := newAWSClients(ctx)
		shared = c
		return c, err
	}
	var sources []fetch.Source
	var params []fetch.Param
	var secrets []fetch.Secret
	for rank, sf := range cfg.sources {
		switch sf.kind {
		case "env-file":
			sources = append(sources, &fetch.EnvFileSource{Path: sf.value, Rank: rank})
		case "path":
			c, err := clients()
			if err != nil {
				return nil, err
			}
			src, err := fetch.NewPathSource(sf.value, c.ssm, rank)
			if err != nil {
				return nil, err
			}
			sources = append(sources, src)
		case "param":
			p, err := fetch.ParseParamFlag(sf.value, rank)
			if err != nil {
				return nil, err
			}
			params = append(params, p)
		case "secret":
			s, err := fetch.ParseSecretFlag(sf.value, rank)
			if err != nil {
				return nil, err
			}
			secrets = append(secrets, s)
		default:
			return nil, fmt.Errorf("--%s is not supported yet", sf.kind)
		}
	}
	refs := fetch.FindReferences(inherited)
	if len(params) > 0 || len(secrets) > 0 || len(refs) > 0 {
		c, err := clients()
		if err != nil {
			return nil, err
		}
		if len(params) > 0 {
			sources = append(sources, &fetch.ParamSource{Params: params, Clients: c.regional})
		}
		if len(secrets) > 0 {
			sources = append(sources, &fetch.SecretSource{Secrets: secrets, Clients: c.regional})
		}
		if len(refs) > 0 {
			names := make([]string, len(refs))
			for i, r := range refs {
				names[i] = r.Var
			}
			log.Debug("inherited variables hold references", "variables", names)
			sources = append(sources, fetch.NewRefSource(refs, c.regional))
		}
	}
	log.Debug("sources configured", "count", len(sources))
	return sources, nil
}

// awsClients holds the SDK clients, created once from the default chain.
type awsClients struct {
	ssm *ssm.Client
	// regional hands out clients by Region: an ARN in another Region must
	// be read there. Clients for other Regions are made on first use and
	// kept.
	regional fetch.AWSClients
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

// newAWSClients loads the SDK's default configuration: credentials and
// region from the environment, profiles, ECS or EC2 (IMDSv2, region
// included), and AWS_ENDPOINT_URL for emulators. ctx bounds the loading,
// the instance metadata lookup of the Region included. Every HTTP attempt,
// for credentials too, is bounded so that a black-holed connection cannot
// stall start-up or polling, and every error is sanitised on its way out of
// the SDK (fetch.SanitizeErrors) so that no text of an answer reaches a log.
func newAWSClients(ctx context.Context) (*awsClients, error) {
	credHTTP := awshttp.NewBuildableClient().WithTimeout(credentialsTimeout)
	cfg, err := awsconfig.LoadDefaultConfig(ctx,
		awsconfig.WithEC2IMDSRegion(func(o *awsconfig.UseEC2IMDSRegion) {
			o.Client = imds.New(imds.Options{HTTPClient: credHTTP, APIOptions: []func(*middleware.Stack) error{fetch.SanitizeErrors}})
		}),
		awsconfig.WithHTTPClient(awshttp.NewBuildableClient().WithTimeout(attemptTimeout)),
		// The SDK makes the container credentials client with a client of
		// its own that has no timeout at all. Instance-profile credentials
		// use the IMDS client made from this Config: attemptTimeout, and
		// IMDS's own quick dial and header timeouts.
		awsconfig.WithEndpointCredentialOptions(func(o *endpointcreds.Options) { o.HTTPClient = credHTTP }),
		awsconfig.WithAPIOptions([]func(*middleware.Stack) error{fetch.SanitizeErrors}),
		// One attempt per call: paramexec retries on its own schedule, until
		// --startup-timeout at start and with capped, jittered backoff while
		// polling. The SDK's three attempts would triple a fleet's calls just
		// when the account is throttled, and its retry-token bucket can run dry.
		awsconfig.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
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
		ssm: ssmFor(cfg.Region),
		regional: fetch.AWSClients{
			Region:         cfg.Region,
			SSM:            func(region string) fetch.ParamClient { return ssmFor(region) },
			SecretsManager: func(region string) fetch.SecretsClient { return smFor(region) },
		},
	}, nil
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
