package fetch

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// SSMClient lists the Parameter Store operations paramexec calls. Keeping
// the interface this narrow documents the IAM actions it needs and lets the
// linker drop the rest of the SDK client. GetParameter is for ARNs, which
// AWS accepts in GetParameters too but some emulators (moto, LocalStack)
// only in the singular call. *ssm.Client satisfies it.
type SSMClient interface {
	GetParametersByPath(ctx context.Context, in *ssm.GetParametersByPathInput, opts ...func(*ssm.Options)) (*ssm.GetParametersByPathOutput, error)
	GetParameters(ctx context.Context, in *ssm.GetParametersInput, opts ...func(*ssm.Options)) (*ssm.GetParametersOutput, error)
	GetParameter(ctx context.Context, in *ssm.GetParameterInput, opts ...func(*ssm.Options)) (*ssm.GetParameterOutput, error)
}

// pathSource is every parameter under a path, recursively.
type pathSource struct {
	Path   string
	Client SSMClient
	Rank   int
	// maxPages bounds a listing; zero means maxListPages. Tests lower it.
	maxPages int
}

// newPathSource checks path and returns its source. A path is absolute;
// a trailing slash is dropped so that "/app/" and "/app" name the same
// variables.
func newPathSource(path string, client SSMClient, rank int) (*pathSource, error) {
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("--path %q: a path starts with /", path)
	}
	if len(path) > 1 {
		path = strings.TrimRight(path, "/")
	}
	return &pathSource{Path: path, Client: client, Rank: rank}, nil
}

func (s *pathSource) String() string { return "--path " + s.Path }

// Load reads every parameter under the path, decrypted, following NextToken
// to the end: a page may hold fewer than its maximum while more follow.
func (s *pathSource) Load(ctx context.Context) (Layer, error) {
	params, err := s.list(ctx, true)
	if err != nil {
		return Layer{}, err
	}
	return s.layer(params)
}

// layer names the parameters' variables, refusing two that map to one name.
func (s *pathSource) layer(params []parameter) (Layer, error) {
	var n namer
	versions := make(map[string]string, len(params))
	for _, p := range params {
		name := aws.ToString(p.Name)
		varName, err := VarName(relativeName(s.Path, name))
		if err != nil {
			return Layer{}, fmt.Errorf("parameter %s: %w", name, err)
		}
		version, modified := splitIdentity(p.Identity)
		from := Provenance{Source: s.String(), Item: name, Selector: "latest", Version: version, Modified: modified}
		if err := n.add(Var{Name: varName, Value: aws.ToString(p.Value), Origin: name, Rank: s.Rank, From: from}); err != nil {
			return Layer{}, err
		}
		versions[name] = p.Identity
	}
	return Layer{Vars: n.vars, Versions: versions}, nil
}

// Bounds on one listing of a path. A path holds no more parameters than an
// account may hold in a Region: 100,000 in the advanced tier (10,000 in the
// standard one), per "Managing parameter tiers",
// https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-advanced-parameters.html.
// GetParametersByPath returns at most 10 a page (MaxResults 1-10, API
// reference), so that many parameters fill 10,000 pages; one more allows
// the empty last page moto (and perhaps AWS) returns after a full one. A
// listing that asks for more pages than that is endless, not large.
const (
	maxParameters = 100_000
	maxPageSize   = 10
	maxListPages  = maxParameters/maxPageSize + 1
)

// list pages through GetParametersByPath. Without decryption it is the
// cheap listing the poller uses to discover added and removed names.
//
// The listing must be consistent to be used: every name under the path and
// listed once, every NextToken new, and no more pages than maxListPages.
// Anything else is an inconsistentError: a NextToken that comes back would page
// forever, spending the account's quota with nothing to show. The SDK's
// paginator does the paging; its own duplicate-token check is off, since it
// ends the listing quietly, as if complete, where a repeated token must
// fail it.
func (s *pathSource) list(ctx context.Context, decrypt bool) ([]parameter, error) {
	pager := ssm.NewGetParametersByPathPaginator(s.Client, &ssm.GetParametersByPathInput{
		Path:           aws.String(s.Path),
		Recursive:      aws.Bool(true),
		WithDecryption: aws.Bool(decrypt),
		MaxResults:     aws.Int32(maxPageSize),
	}, func(o *ssm.GetParametersByPathPaginatorOptions) { o.StopOnDuplicateToken = false })
	limit := s.maxPages
	if limit <= 0 {
		limit = maxListPages
	}
	var out []parameter
	seen := make(map[string]bool)
	tokens := make(map[string]bool)
	for pages := 1; ; pages++ {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, explain(err)
		}
		// The token first: a repeated one brings back pages already seen.
		token := aws.ToString(page.NextToken)
		switch {
		case token == "":
		case tokens[token]:
			return nil, inconsistentf("the listing of %s repeated a NextToken after %d pages: it would never end", s.Path, pages)
		case pages >= limit || len(out)+len(page.Parameters) > maxParameters:
			return nil, inconsistentf("the listing of %s still had a NextToken after %d pages, more than a Region's %d parameters need: it would never end", s.Path, pages, maxParameters)
		}
		for _, p := range page.Parameters {
			name := aws.ToString(p.Name)
			switch {
			case !under(s.Path, name):
				return nil, inconsistentf("the listing of %s returned %s, which is not under it", s.Path, name)
			case seen[name]:
				return nil, inconsistentf("the listing of %s returned %s twice", s.Path, name)
			}
			seen[name] = true
			out = append(out, fromSDK(&p))
		}
		if token == "" {
			return out, nil
		}
		tokens[token] = true
	}
}

// under reports whether a listing of path may return name. Under "/" that
// is every name: GetParametersByPath with Path "/" returns root-level
// names without a leading slash ("db_password") as well as the hierarchy,
// on AWS and on moto.
func under(path, name string) bool {
	return path == "/" || strings.HasPrefix(name, strings.TrimSuffix(path, "/")+"/")
}

// parameter is the part of an SSM parameter paramexec uses.
type parameter struct {
	Name, Value *string
	// Identity is what a poll compares: the version and when it was
	// written (see identity).
	Identity string
}

// fromSDK keeps what paramexec uses of an SDK parameter.
func fromSDK(p *ssmtypes.Parameter) parameter {
	return parameter{Name: p.Name, Value: p.Value, Identity: identity(p.Version, p.LastModifiedDate)}
}

// identity tells one stored version of a parameter from any other. The
// version number alone does not: a parameter deleted and created again
// starts again at version 1 (Terraform does that when a parameter's type
// changes), and its new value would never be read. LastModifiedDate comes
// with every read, decrypted or not, listing or by name, and a recreated
// parameter has a later one. Only an answer without it falls back to the
// number.
func identity(version int64, modified *time.Time) string {
	v := strconv.FormatInt(version, 10)
	if modified == nil {
		return v
	}
	return v + "@" + modified.UTC().Format(time.RFC3339Nano)
}

// Versions returns the current version of every parameter under the path
// without reading a value: with discover by listing the path, otherwise by
// asking GetParameters for the names last held, which counts against the
// larger quota and costs no KMS call.
//
// A name leaves the map, which makes Refresh drop its variable, only on two
// agreeing answers: the first look (the version check reporting it in
// InvalidParameters, or a consistent listing without it) and a second
// GetParameters of that name, made after, reporting it in
// InvalidParameters too. Any other answer about a known name (left out of
// an answer, found by the second look, a listing cut short) is an error:
// the poll fails and the child keeps its environment.
func (s *pathSource) Versions(ctx context.Context, last Layer, discover bool) (map[string]string, error) {
	return versionsUnder(ctx, s.Path, slices.Sorted(maps.Keys(last.Versions)), discover,
		func(ctx context.Context) (map[string]string, error) {
			listed, err := s.list(ctx, false)
			if err != nil {
				return nil, err
			}
			now := make(map[string]string, len(listed))
			for _, p := range listed {
				now[aws.ToString(p.Name)] = p.Identity
			}
			return now, nil
		},
		func(ctx context.Context, names []string) (map[string]parameter, []string, error) {
			return getParameters(ctx, s.Client, names, false)
		})
}

// versionsUnder is Versions for a path, local or shared: the versions of
// the names known, and with discover of every name a listing finds. A name
// leaves the map only when a second read by name, made after the first
// look, reports it missing too: one answer that leaves a name out is not
// evidence of a deletion.
func versionsUnder(ctx context.Context, where string, known []string, discover bool,
	list func(context.Context) (map[string]string, error),
	read func(context.Context, []string) (map[string]parameter, []string, error),
) (map[string]string, error) {
	now := make(map[string]string, len(known))
	var gone []string
	if discover {
		listed, err := list(ctx)
		if err != nil {
			return nil, err
		}
		maps.Copy(now, listed)
		for _, name := range known {
			if _, ok := now[name]; !ok {
				gone = append(gone, name)
			}
		}
	} else {
		found, invalid, err := read(ctx, known)
		if err != nil {
			return nil, err
		}
		for name, p := range found {
			now[name] = p.Identity
		}
		gone = invalid
	}
	if len(gone) == 0 {
		return now, nil
	}
	found, _, err := read(ctx, gone)
	if err != nil {
		return nil, fmt.Errorf("confirming that %s are gone: %w", strings.Join(gone, ", "), err)
	}
	if len(found) > 0 {
		first := "the version check reported them missing"
		if discover {
			first = "the listing left them out"
		}
		return nil, inconsistentf("%s under %s: %s, but GetParameters finds them: answers disagree",
			strings.Join(slices.Sorted(maps.Keys(found)), ", "), where, first)
	}
	return now, nil
}

// Refresh reads again, decrypted, only the parameters whose version in now
// differs from last, and drops those missing from now, which Versions left
// out on the evidence of a deletion: one changed value among a thousand
// costs one GetParameters call, not a hundred pages of the path, and a
// fleet's burst on a change stays small. Every parameter it reads must come
// back: one left out fails the read, and one reported gone since the check
// fails it with errStale, so that the next poll checks again.
func (s *pathSource) Refresh(ctx context.Context, last Layer, now map[string]string) (Layer, error) {
	params, err := refreshUnder(ctx, last, now, func(ctx context.Context, names []string) (map[string]parameter, []string, error) {
		return getParameters(ctx, s.Client, names, true)
	})
	if err != nil {
		return Layer{}, err
	}
	return s.layer(slices.SortedFunc(maps.Values(params), func(a, b parameter) int {
		return strings.Compare(aws.ToString(a.Name), aws.ToString(b.Name))
	}))
}

// refreshUnder is Refresh for a path, local or shared: every parameter now
// holds, by name, read again with read (decrypted) where its version moved
// and kept from last where it did not.
func refreshUnder(ctx context.Context, last Layer, now map[string]string,
	read func(context.Context, []string) (map[string]parameter, []string, error),
) (map[string]parameter, error) {
	var stale []string
	for name, version := range now {
		if last.Versions[name] != version {
			stale = append(stale, name)
		}
	}
	fresh, invalid, err := read(ctx, stale)
	if err != nil {
		return nil, err
	}
	if len(invalid) > 0 {
		return nil, fmt.Errorf("%s: reported missing by the read after the version check found them: %w", strings.Join(invalid, ", "), errStale)
	}
	params := make(map[string]parameter, len(now))
	for _, v := range last.Vars {
		if _, kept := now[v.Origin]; kept {
			params[v.Origin] = parameter{Name: aws.String(v.Origin), Value: aws.String(v.Value), Identity: last.Versions[v.Origin]}
		}
	}
	for _, p := range fresh {
		params[aws.ToString(p.Name)] = p
	}
	return params, nil
}

// getParameters reads the named parameters through GetParameters, ten names
// a call, and returns those found, by the name asked for, and those
// Parameter Store reported missing; a name an answer leaves out altogether
// is an error. The batches run a few at a time, as --param's do: one after
// another, a thousand names would keep a poll going for a hundred round
// trips.
func getParameters(ctx context.Context, client SSMClient, names []string, decrypt bool) (found map[string]parameter, invalid []string, err error) {
	var mu sync.Mutex
	found = make(map[string]parameter, len(names))
	missing := make(map[string]bool)
	if err := runAll(ctx, parameterReads(client, slices.Sorted(slices.Values(names)), decrypt, &mu, found, missing)); err != nil {
		return nil, nil, err
	}
	return found, slices.Sorted(maps.Keys(missing)), nil
}

// parameterReads returns the GetParameters calls for reqs, at most ten
// requests a call (paramBatches), each adding under mu what it found to
// found, under the request and with the request as its name, and what
// Parameter Store reported missing to missing. It is the one batcher of
// --param names and of a path's known names.
func parameterReads(client SSMClient, reqs []string, decrypt bool, mu *sync.Mutex, found map[string]parameter, missing map[string]bool) []func(context.Context) error {
	var tasks []func(context.Context) error
	for _, batch := range paramBatches(reqs) {
		tasks = append(tasks, func(ctx context.Context) error {
			got, invalid, err := getParameterBatch(ctx, client, batch, decrypt)
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			for req, p := range got {
				// The name asked for, not the answer's spelling of it.
				p.Name = aws.String(req)
				found[req] = p
			}
			for _, req := range invalid {
				missing[req] = true
			}
			return nil
		})
	}
	return tasks
}
