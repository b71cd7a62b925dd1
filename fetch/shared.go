package fetch

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

// sharedClient lists the Parameter Store operations a path given by ARN
// calls: DescribeParameters to list what another account shares with the
// caller, GetParameters to read and poll it by ARN, and GetParametersByPath
// for the caller's own account. *ssm.Client satisfies it.
type sharedClient interface {
	DescribeParameters(ctx context.Context, in *ssm.DescribeParametersInput, opts ...func(*ssm.Options)) (*ssm.DescribeParametersOutput, error)
	GetParameters(ctx context.Context, in *ssm.GetParametersInput, opts ...func(*ssm.Options)) (*ssm.GetParametersOutput, error)
	GetParametersByPath(ctx context.Context, in *ssm.GetParametersByPathInput, opts ...func(*ssm.Options)) (*ssm.GetParametersByPathOutput, error)
	GetParameter(ctx context.Context, in *ssm.GetParameterInput, opts ...func(*ssm.Options)) (*ssm.GetParameterOutput, error)
}

// sharedPathSource is every parameter under a path of another account that
// the account shares with the caller through AWS RAM: --path
// arn:aws:ssm:REGION:ACCOUNT:parameter/PATH. AWS lists such parameters only
// through DescribeParameters with Shared=true, and reads them only by full
// ARN; GetParametersByPath sees the caller's own account alone. The
// variables are named relative to PATH, as a local --path names them, and
// each keeps its ARN as its origin and version key.
//
// An ARN of the caller's own account is a plain --path: DescribeParameters
// with Shared=true never lists the caller's own parameters, so the first
// Load that finds nothing shared asks GetParametersByPath, and when what it
// finds is of the ARN's account, the source becomes a pathSource for good
// (see resolve).
type sharedPathSource struct {
	ARN    arn.ARN // the path as given, Resource "parameter/PATH"
	Path   string  // /PATH, without a trailing slash
	Client sharedClient
	Rank   int
	// maxPages bounds a listing; zero means maxListPages. Tests lower it.
	maxPages int

	mu  sync.Mutex
	own *pathSource // set once the ARN's account proved the caller's
}

// newSharedPathSource parses --path ARN. The ARN must be a parameter path
// of Parameter Store: "arn:PARTITION:ssm:REGION:ACCOUNT:parameter/PATH".
func newSharedPathSource(value string, rank int) (*sharedPathSource, error) {
	a, ok := parseARN(value)
	rest, isParam := strings.CutPrefix(a.Resource, "parameter/")
	if !ok || a.Service != "ssm" || !isParam {
		return nil, fmt.Errorf("--path %q: an ARN path has the form arn:aws:ssm:REGION:ACCOUNT:parameter/PATH", value)
	}
	path := "/" + strings.TrimRight(rest, "/")
	if path == "/" || strings.Contains(path, "//") {
		return nil, fmt.Errorf("--path %q: the ARN names no path under parameter/ (a shared path cannot be the whole account)", value)
	}
	a.Resource = "parameter" + path
	return &sharedPathSource{ARN: a, Path: path, Rank: rank}, nil
}

func (s *sharedPathSource) String() string { return "--path " + s.ARN.String() }

// arnOf is the ARN of a parameter of the source's account named as an
// answer names it: by ARN already, or by its name.
func (s *sharedPathSource) arnOf(name string) string {
	if strings.HasPrefix(name, "arn:") {
		return name
	}
	a := s.ARN
	a.Resource = "parameter/" + strings.TrimPrefix(name, "/")
	return a.String()
}

// nameOf is the parameter name an ARN of the source's account holds: the
// name the variable is made from.
func (s *sharedPathSource) nameOf(parameterARN string) string {
	a, ok := parseARN(parameterARN)
	if !ok {
		return parameterARN
	}
	return "/" + strings.TrimPrefix(strings.TrimPrefix(a.Resource, "parameter"), "/")
}

// local returns the pathSource the source turned into, if it has.
func (s *sharedPathSource) local() *pathSource {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.own
}

// Load lists what is shared under the path and reads it, decrypted, by ARN
// in batches of ten. Nothing shared is an error (notSharedError), unless
// the ARN's account is the caller's own.
func (s *sharedPathSource) Load(ctx context.Context) (Layer, error) {
	if own := s.local(); own != nil {
		return own.Load(ctx)
	}
	listed, err := s.list(ctx)
	if err != nil {
		return Layer{}, err
	}
	if len(listed) == 0 {
		own, err := s.resolve(ctx)
		if err != nil {
			return Layer{}, err
		}
		return own.Load(ctx)
	}
	found, invalid, err := s.read(ctx, slices.Sorted(maps.Keys(listed)), true)
	if err != nil {
		return Layer{}, err
	}
	if len(invalid) > 0 {
		return Layer{}, inconsistentf("%s: listed as shared with this caller, but GetParameters reports them missing (the share may have just changed)", strings.Join(invalid, ", "))
	}
	return s.layer(slices.Collect(maps.Values(found)))
}

// layer names the parameters' variables relative to the path, by the
// rules of a local --path, keyed by ARN.
func (s *sharedPathSource) layer(params []parameter) (Layer, error) {
	slices.SortFunc(params, func(a, b parameter) int { return strings.Compare(aws.ToString(a.Name), aws.ToString(b.Name)) })
	var n namer
	versions := make(map[string]string, len(params))
	for _, p := range params {
		id := aws.ToString(p.Name)
		varName, err := VarName(relativeName(s.Path, s.nameOf(id)))
		if err != nil {
			return Layer{}, fmt.Errorf("parameter %s: %w", id, err)
		}
		if err := n.add(Var{Name: varName, Value: aws.ToString(p.Value), Origin: id, Rank: s.Rank}); err != nil {
			return Layer{}, err
		}
		versions[id] = p.Identity
	}
	return Layer{Vars: n.vars, Versions: versions}, nil
}

// Versions returns the version of every shared parameter under the path
// without reading a value: with discover by listing the share again
// (DescribeParameters, whose rate limit is low: one listing per
// --discover-every polls), otherwise by GetParameters of the ARNs last
// held, ten a call. As for a local path, a name leaves the map only when a
// second GetParameters, made after the first look, reports it missing too:
// a parameter unshared or deleted reads the same way, and either way its
// variable goes.
func (s *sharedPathSource) Versions(ctx context.Context, last Layer, discover bool) (map[string]string, error) {
	if own := s.local(); own != nil {
		return own.Versions(ctx, last, discover)
	}
	return versionsUnder(ctx, s.ARN.String(), slices.Sorted(maps.Keys(last.Versions)), discover, s.list,
		func(ctx context.Context, ids []string) (map[string]parameter, []string, error) {
			return s.read(ctx, ids, false)
		})
}

// Refresh reads again, decrypted, only the parameters whose version in now
// differs from last, and drops those missing from now.
func (s *sharedPathSource) Refresh(ctx context.Context, last Layer, now map[string]string) (Layer, error) {
	if own := s.local(); own != nil {
		return own.Refresh(ctx, last, now)
	}
	params, err := refreshUnder(ctx, last, now, func(ctx context.Context, ids []string) (map[string]parameter, []string, error) {
		return s.read(ctx, ids, true)
	})
	if err != nil {
		return Layer{}, err
	}
	return s.layer(slices.Collect(maps.Values(params)))
}

// pathFlag is a --path source before it has a client: a local path, or a
// path of another account given by ARN.
type pathFlag interface {
	Source
	bind(c awsClients) error
}

// newPathFlag parses --path: an ARN names a path shared from another
// account (or the caller's own, by ARN); anything else is a local path.
func newPathFlag(value string, rank int) (pathFlag, error) {
	if strings.HasPrefix(value, "arn:") {
		return newSharedPathSource(value, rank)
	}
	return newPathSource(value, nil, rank)
}

func (s *pathSource) bind(c awsClients) error {
	s.Client = c.SSM(c.Region)
	return nil
}

// bind takes the client of the ARN's Region, which must also list shares.
func (s *sharedPathSource) bind(c awsClients) error {
	client, ok := c.SSM(s.ARN.Region).(sharedClient)
	if !ok {
		return fmt.Errorf("%s: the Parameter Store client cannot list shared parameters", s)
	}
	s.Client = client
	return nil
}
