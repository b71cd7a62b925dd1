package fetch

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

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
	return s.layer(params)
}

// layer names the parameters' variables, refusing two that map to one name.
func (s *PathSource) layer(params []parameter) (Layer, error) {
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

// Versions returns the current version of every parameter under the path
// without reading a value: with discover by listing the path, otherwise by
// asking GetParameters for the names last held, which counts against the
// larger quota and costs no KMS call. A deleted name is missing.
func (s *PathSource) Versions(ctx context.Context, last Layer, discover bool) (map[string]string, error) {
	var params []parameter
	var err error
	if discover {
		params, err = s.list(ctx, false)
	} else {
		params, err = getParameters(ctx, s.Client, slices.Collect(maps.Keys(last.Versions)), false)
	}
	if err != nil {
		return nil, err
	}
	now := make(map[string]string, len(params))
	for _, p := range params {
		now[aws.ToString(p.Name)] = strconv.FormatInt(p.Version, 10)
	}
	return now, nil
}

// Refresh reads again, decrypted, only the parameters whose version in now
// differs from last, and drops those missing from now: one changed value
// among a thousand costs one GetParameters call, not a hundred pages of the
// path, and a fleet's burst on a change stays small.
func (s *PathSource) Refresh(ctx context.Context, last Layer, now map[string]string) (Layer, error) {
	var stale []string
	for name, version := range now {
		if last.Versions[name] != version {
			stale = append(stale, name)
		}
	}
	fresh, err := getParameters(ctx, s.Client, stale, true)
	if err != nil {
		return Layer{}, err
	}

	params := make(map[string]parameter, len(now))
	for _, v := range last.Vars {
		if _, kept := now[v.Origin]; kept {
			params[v.Origin] = parameter{Name: aws.String(v.Origin), Value: aws.String(v.Value), Version: versionNumber(last.Versions[v.Origin])}
		}
	}
	// A stale name stays only if it was read: one deleted between the
	// check and the read is gone.
	for _, name := range stale {
		delete(params, name)
	}
	for _, p := range fresh {
		params[aws.ToString(p.Name)] = p
	}
	return s.layer(slices.SortedFunc(maps.Values(params), func(a, b parameter) int {
		return strings.Compare(aws.ToString(a.Name), aws.ToString(b.Name))
	}))
}

// getParameters reads the named parameters through GetParameters, ten names
// a call, leaving out names that no longer exist. The batches run a few at
// a time, as --param's do: one after another, a thousand names would keep a
// poll going for a hundred round trips.
func getParameters(ctx context.Context, client SSMClient, names []string, decrypt bool) ([]parameter, error) {
	slices.Sort(names)
	var mu sync.Mutex
	var out []parameter
	var tasks []func(context.Context) error
	for batch := range slices.Chunk(names, 10) {
		tasks = append(tasks, func(ctx context.Context) error {
			got, err := client.GetParameters(ctx, &ssm.GetParametersInput{
				Names:          batch,
				WithDecryption: aws.Bool(decrypt),
			})
			if err != nil {
				return explain(err)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, p := range got.Parameters {
				out = append(out, parameter{Name: p.Name, Value: p.Value, Version: p.Version})
			}
			return nil
		})
	}
	if err := runAll(ctx, tasks); err != nil {
		return nil, err
	}
	return out, nil
}

// versionNumber reads a version that a layer holds as text.
func versionNumber(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
