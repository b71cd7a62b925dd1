package fetch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// secretsRefPrefix is Parameter Store's window onto Secrets Manager. Such a
// name is readable only through GetParameter(s) with decryption.
const secretsRefPrefix = "/aws/reference/secretsmanager/"

// awsClients hands out SDK clients by Region. An ARN names its Region, and
// a parameter or secret in another Region can only be read with a client
// for that Region.
type awsClients struct {
	// Region is the configured Region: that of names without an ARN.
	Region         string
	SSM            func(region string) SSMClient
	SecretsManager func(region string) SecretsClient
}

// region is the Region an item lives in: its ARN's, or the configured one.
func (c awsClients) region(id string) string {
	if a, ok := parseARN(id); ok {
		return a.Region
	}
	return c.Region
}

// paramSource is the --param flags, or the parameter references, fetched
// together so that names share GetParameters calls.
type paramSource struct {
	Params  []Param
	Clients awsClients
	name    string // in logs and errors, when not "--param"
}

func (s *paramSource) String() string { return cmp.Or(s.name, "--param") }

// Load reads every parameter, decrypted.
func (s *paramSource) Load(ctx context.Context) (Layer, error) {
	got, missing, err := s.fetch(ctx, s.requests(false), true)
	if err != nil {
		return Layer{}, err
	}
	var errs []error
	for _, p := range s.Params {
		if missing[p.request()] {
			errs = append(errs, fmt.Errorf("%s: not found (no such parameter, version or label)", p.describe()))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Layer{}, err
	}
	return s.layer(got), nil
}

// layer makes each parameter's variable from read, which holds every
// request.
func (s *paramSource) layer(read map[string]parameter) Layer {
	vars := make([]Var, 0, len(s.Params))
	versions := make(map[string]string, len(read))
	for _, p := range s.Params {
		req := p.request()
		r := read[req]
		version, modified := splitIdentity(r.Identity)
		from := Provenance{Source: p.source(), Item: p.Name, Selector: p.selector(), Version: version, Modified: modified}
		vars = append(vars, Var{Name: p.Var, Value: aws.ToString(r.Value), Origin: req, Rank: p.Rank, From: from})
		versions[req] = r.Identity
	}
	return Layer{Vars: vars, Versions: versions}
}

// Versions asks for the versions of the parameters that can move, without
// decryption: those with no selector (a new version) or a label (a moved
// label resolves to another version). A version-pinned parameter never
// changes, and a /aws/reference/secretsmanager/ name reports no version to
// compare (always 0) and can only be read decrypted, so polling it would
// fetch the secret every time: it is read once, at start; follow a secret
// with --secret or a secretsmanager: reference instead. Both keep the
// version last read.
//
// A named parameter is never dropped: one that is not found is an error,
// and the child keeps the value it has until the parameter is back.
func (s *paramSource) Versions(ctx context.Context, last Layer, _ bool) (map[string]string, error) {
	now := maps.Clone(last.Versions)
	reqs := s.requests(true)
	if len(reqs) == 0 {
		return now, nil
	}
	got, missing, err := s.fetch(ctx, reqs, false)
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		var errs []error
		for _, p := range s.Params {
			if missing[p.request()] {
				errs = append(errs, fmt.Errorf("%s: not found (no such parameter, version or label); keeping the value read before", p.describe()))
			}
		}
		return nil, errors.Join(errs...)
	}
	for _, req := range reqs {
		now[req] = got[req].Identity
	}
	return now, nil
}

// Refresh reads again, decrypted, only the requests whose version in now
// differs from last, and keeps the rest as last holds them: a pinned
// version and a Secrets Manager reference, which Versions never checks,
// are read once, at start, so a pinned version deleted since fails no
// poll. A request the check found and the read reports missing fails the
// read with errStale, so that the next poll checks again.
func (s *paramSource) Refresh(ctx context.Context, last Layer, now map[string]string) (Layer, error) {
	var moved []string
	for req, version := range now {
		if last.Versions[req] != version {
			moved = append(moved, req)
		}
	}
	slices.Sort(moved)
	got, missing, err := s.fetch(ctx, moved, true)
	if err != nil {
		return Layer{}, err
	}
	if len(missing) > 0 {
		return Layer{}, fmt.Errorf("%s: reported missing by the read after the version check found them: %w",
			strings.Join(slices.Sorted(maps.Keys(missing)), ", "), errStale)
	}
	read := make(map[string]parameter, len(s.Params))
	for _, v := range last.Vars {
		read[v.Origin] = parameter{Value: aws.String(v.Value), Identity: last.Versions[v.Origin]}
	}
	maps.Copy(read, got)
	return s.layer(read), nil
}

// requests lists the distinct strings to ask Parameter Store for, sorted;
// movable keeps only those a poll must check.
func (s *paramSource) requests(movable bool) []string {
	var reqs []string
	for _, p := range s.Params {
		if movable && (p.pinned() || isSecretRef(p.Name)) {
			continue
		}
		reqs = append(reqs, p.request())
	}
	slices.Sort(reqs)
	return slices.Compact(reqs)
}

// isSecretRef reports whether a parameter name or ARN is a
// /aws/reference/secretsmanager/ name, readable only decrypted.
func isSecretRef(name string) bool {
	if a, ok := parseARN(name); ok {
		name = strings.TrimPrefix(a.Resource, "parameter")
	}
	return strings.HasPrefix(name, secretsRefPrefix)
}

// fetch reads the requested parameters: names through GetParameters, ten a
// call; ARNs one by one through GetParameter, with the client of their
// Region. It returns the parameters found by request string and the
// requests that Parameter Store reported as not there. A request the answer
// leaves out altogether is an error, never taken as missing. Values read without decryption are only
// for their versions: a SecureString's undecrypted value is ciphertext.
func (s *paramSource) fetch(ctx context.Context, reqs []string, decrypt bool) (map[string]parameter, map[string]bool, error) {
	var names []string
	var tasks []func(context.Context) error
	var mu sync.Mutex
	got := make(map[string]parameter, len(reqs))
	missing := make(map[string]bool)
	for _, req := range reqs {
		a, isARN := parseARN(req)
		if !isARN {
			names = append(names, req)
			continue
		}
		tasks = append(tasks, func(ctx context.Context) error {
			out, err := s.Clients.SSM(a.Region).GetParameter(ctx, &ssm.GetParameterInput{
				Name:           aws.String(req),
				WithDecryption: aws.Bool(decrypt),
			})
			mu.Lock()
			defer mu.Unlock()
			switch code := errorCode(err); {
			case code == "ParameterNotFound" || code == "ParameterVersionNotFound":
				missing[req] = true
			case err != nil:
				return fmt.Errorf("parameter %s: %w", req, explain(err))
			case out.Parameter != nil:
				p := out.Parameter
				got[req] = fromSDK(p)
			default:
				return inconsistentf("GetParameter answered %s with neither a parameter nor ParameterNotFound", req)
			}
			return nil
		})
	}
	tasks = append(tasks, parameterReads(s.Clients.SSM(s.Clients.Region), names, decrypt, &mu, got, missing)...)
	if err := runAll(ctx, tasks); err != nil {
		return nil, nil, err
	}
	return got, missing, nil
}

// getParameterBatch makes one GetParameters call for at most ten requests,
// which paramBatches has made distinct by matchKey, and sorts the answer by
// request: found, or reported in InvalidParameters. An answer that returns
// a request and also reports it invalid, or says nothing about a request
// at all, is an inconsistentError: Parameter Store accounts for every name it is
// asked for, so such an answer is broken or cut short, and one answer is no
// evidence that a parameter is gone.
func getParameterBatch(ctx context.Context, client SSMClient, batch []string, decrypt bool) (found map[string]parameter, invalid []string, err error) {
	out, err := client.GetParameters(ctx, &ssm.GetParametersInput{
		Names:          batch,
		WithDecryption: aws.Bool(decrypt),
	})
	if err != nil {
		return nil, nil, explain(err)
	}
	byKey := make(map[string]string, len(batch))
	for _, req := range batch {
		byKey[matchKey(req)] = req
	}
	// An answer names a request as it was asked (InvalidParameters) or by
	// its bare name (Parameters); either way matchKey finds it.
	request := func(name string) (string, bool) {
		if slices.Contains(batch, name) {
			return name, true
		}
		req, ok := byKey[matchKey(name)]
		return req, ok
	}
	return sortAnswer(batch, out, func(p *ssmtypes.Parameter) (string, bool) { return request(aws.ToString(p.Name)) }, request)
}

// sortAnswer sorts one GetParameters answer to batch by request: found
// (keyed by what returned says of a parameter) and invalid (by what asked
// says of a name in InvalidParameters). An answer that both returns a
// request and reports it invalid, or says nothing of one, is an
// inconsistentError: Parameter Store accounts for every name it is asked
// for, so such an answer is broken or cut short.
func sortAnswer(batch []string, out *ssm.GetParametersOutput,
	returned func(*ssmtypes.Parameter) (string, bool), asked func(string) (string, bool),
) (map[string]parameter, []string, error) {
	found := make(map[string]parameter, len(batch))
	for i := range out.Parameters {
		if req, ok := returned(&out.Parameters[i]); ok {
			found[req] = fromSDK(&out.Parameters[i])
		}
	}
	var invalid []string
	for _, name := range out.InvalidParameters {
		req, ok := asked(name)
		if !ok {
			continue
		}
		if _, both := found[req]; both {
			return nil, nil, inconsistentf("GetParameters both returned %s and reported it invalid", req)
		}
		invalid = append(invalid, req)
	}
	var silent []string
	for _, req := range batch {
		if _, ok := found[req]; !ok && !slices.Contains(invalid, req) {
			silent = append(silent, req)
		}
	}
	if len(silent) > 0 {
		return nil, nil, inconsistentf("GetParameters answered neither a parameter nor InvalidParameters for %s: an incomplete answer", strings.Join(silent, ", "))
	}
	return found, invalid, nil
}

// paramBatches groups names into GetParameters calls of at most ten. A
// response names each parameter without its selector (and, on some
// emulators, a secret reference by the secret's bare name), so two
// requests that would come back under the same name go to different
// calls; otherwise the answers could not be told apart.
func paramBatches(reqs []string) [][]string {
	var batches [][]string
	var keys []map[string]bool
	for _, req := range reqs {
		k := matchKey(req)
		placed := false
		for i := range batches {
			if len(batches[i]) < 10 && !keys[i][k] {
				batches[i] = append(batches[i], req)
				keys[i][k] = true
				placed = true
				break
			}
		}
		if !placed {
			batches = append(batches, []string{req})
			keys = append(keys, map[string]bool{k: true})
		}
	}
	return batches
}

// matchKey is what a request and the name in its answer have in common:
// the name without selector and without the secret reference prefix, since
// AWS answers a reference with the full path and moto with the secret name.
func matchKey(name string) string {
	if i := strings.IndexByte(name, ':'); i >= 0 {
		name = name[:i]
	}
	return strings.TrimPrefix(name, secretsRefPrefix)
}

// runLimit bounds the calls one source makes at once, so a long list of
// secrets does not open a connection per item all at the same moment.
const runLimit = 8

// runAll runs the tasks, at most runLimit at a time, and joins their
// errors: a user fixing a configuration wants every broken item at once.
func runAll(ctx context.Context, tasks []func(context.Context) error) error {
	errs := make([]error, len(tasks))
	sem := make(chan struct{}, runLimit)
	var wg sync.WaitGroup
	for i, task := range tasks {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			errs[i] = task(ctx)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
