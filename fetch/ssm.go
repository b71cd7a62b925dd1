package fetch

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

// SSMClient lists the Parameter Store operations paramexec calls. Keeping
// the interface this narrow documents the IAM actions it needs and lets the
// linker drop the rest of the SDK client.
type SSMClient interface {
	GetParametersByPath(ctx context.Context, in *ssm.GetParametersByPathInput, opts ...func(*ssm.Options)) (*ssm.GetParametersByPathOutput, error)
	GetParameters(ctx context.Context, in *ssm.GetParametersInput, opts ...func(*ssm.Options)) (*ssm.GetParametersOutput, error)
}

// PathSource is every parameter under a path, recursively.
type PathSource struct {
	Path   string
	Client SSMClient
	Rank   int
}

// NewPathSource checks path and returns its source. A path is absolute;
// a trailing slash is dropped so that "/app/" and "/app" name the same
// variables.
func NewPathSource(path string, client SSMClient, rank int) (*PathSource, error) {
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("--path %q: a path starts with /", path)
	}
	if len(path) > 1 {
		path = strings.TrimRight(path, "/")
	}
	return &PathSource{Path: path, Client: client, Rank: rank}, nil
}

func (s *PathSource) String() string { return "--path " + s.Path }

// Load reads every parameter under the path, decrypted, following NextToken
// to the end: a page may hold fewer than its maximum while more follow.
func (s *PathSource) Load(ctx context.Context) (Layer, error) {
	params, err := s.list(ctx, true)
	if err != nil {
		return Layer{}, err
	}
	var n namer
	versions := make(map[string]string, len(params))
	for _, p := range params {
		name := aws.ToString(p.Name)
		varName, err := VarName(relativeName(s.Path, name))
		if err != nil {
			return Layer{}, fmt.Errorf("parameter %s: %w", name, err)
		}
		if err := n.add(Var{Name: varName, Value: aws.ToString(p.Value), Origin: name, Rank: s.Rank}); err != nil {
			return Layer{}, err
		}
		versions[name] = strconv.FormatInt(p.Version, 10)
	}
	return Layer{Vars: n.vars, Versions: versions}, nil
}

// list pages through GetParametersByPath. Without decryption it is the
// cheap listing the poller uses to discover added and removed names.
func (s *PathSource) list(ctx context.Context, decrypt bool) ([]parameter, error) {
	in := &ssm.GetParametersByPathInput{
		Path:           aws.String(s.Path),
		Recursive:      aws.Bool(true),
		WithDecryption: aws.Bool(decrypt),
		MaxResults:     aws.Int32(10),
	}
	var out []parameter
	for {
		page, err := s.Client.GetParametersByPath(ctx, in)
		if err != nil {
			return nil, explain(err)
		}
		for _, p := range page.Parameters {
			out = append(out, parameter{Name: p.Name, Value: p.Value, Version: p.Version})
		}
		if aws.ToString(page.NextToken) == "" {
			return out, nil
		}
		in.NextToken = page.NextToken
	}
}

// parameter is the part of an SSM parameter paramexec uses.
type parameter struct {
	Name, Value *string
	Version     int64
}

// Changed checks the versions of the parameters last held, without
// decryption: GetParameters by name, ten a call, counts against the larger
// GetParameters quota and costs no KMS call. Discovery lists the path
// instead, which also finds added parameters; the poller asks for it only
// every few polls because GetParametersByPath has the smaller quota.
func (s *PathSource) Changed(ctx context.Context, last Layer, discover bool) (bool, error) {
	if discover {
		params, err := s.list(ctx, false)
		if err != nil {
			return false, err
		}
		if len(params) != len(last.Versions) {
			return true, nil
		}
		for _, p := range params {
			if last.Versions[aws.ToString(p.Name)] != strconv.FormatInt(p.Version, 10) {
				return true, nil
			}
		}
		return false, nil
	}
	return versionsMoved(ctx, s.Client, last.Versions)
}

// versionsMoved asks GetParameters for the versions of the named
// parameters, ten names a call, and reports whether any moved or vanished.
// The batches run a few at a time, as --param's do: one after another,
// a thousand names would keep a poll going for a hundred round trips.
func versionsMoved(ctx context.Context, client SSMClient, versions map[string]string) (bool, error) {
	names := make([]string, 0, len(versions))
	for name := range versions {
		names = append(names, name)
	}
	slices.Sort(names)
	var moved atomic.Bool
	var tasks []func(context.Context) error
	for batch := range slices.Chunk(names, 10) {
		tasks = append(tasks, func(ctx context.Context) error {
			if moved.Load() {
				return nil // the answer is known; spare the call
			}
			out, err := client.GetParameters(ctx, &ssm.GetParametersInput{
				Names:          batch,
				WithDecryption: aws.Bool(false),
			})
			if err != nil {
				return explain(err)
			}
			if len(out.InvalidParameters) > 0 {
				moved.Store(true) // deleted since the last load
			}
			for _, p := range out.Parameters {
				if versions[aws.ToString(p.Name)] != strconv.FormatInt(p.Version, 10) {
					moved.Store(true)
				}
			}
			return nil
		})
	}
	if err := runAll(ctx, tasks); err != nil {
		return false, err
	}
	return moved.Load(), nil
}
