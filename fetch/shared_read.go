package fetch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// describePageSize is DescribeParameters' largest page (MaxResults 1-50).
// DescribeParameters has a low, undocumented rate limit, so a listing asks
// for as few pages as it can.
const describePageSize = 50

// list pages through DescribeParameters with Shared=true and a recursive
// Path filter, and returns the version of every parameter of the ARN's
// account shared under the path, by ARN. A listing may hold shares of
// other accounts under the same names: they are not this source's and are
// left out. The consistency rules of a local path's listing apply: every
// NextToken new, no name twice, a bounded number of pages.
func (s *sharedPathSource) list(ctx context.Context) (map[string]string, error) {
	pager := ssm.NewDescribeParametersPaginator(s.Client, &ssm.DescribeParametersInput{
		Shared: aws.Bool(true),
		ParameterFilters: []ssmtypes.ParameterStringFilter{{
			Key: aws.String("Path"), Option: aws.String("Recursive"), Values: []string{s.Path},
		}},
		MaxResults: aws.Int32(describePageSize),
	}, func(o *ssm.DescribeParametersPaginatorOptions) { o.StopOnDuplicateToken = false })
	limit := cmp.Or(s.maxPages, maxListPages)
	out := make(map[string]string)
	tokens := make(map[string]bool)
	for pages := 1; ; pages++ {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing what is shared with this caller under %s: %w", s.ARN, explain(err))
		}
		token := aws.ToString(page.NextToken)
		switch {
		case token == "":
		case tokens[token]:
			return nil, inconsistentf("the shared listing of %s repeated a NextToken after %d pages: it would never end", s.ARN, pages)
		case pages >= limit || len(out)+len(page.Parameters) > maxParameters:
			return nil, inconsistentf("the shared listing of %s still had a NextToken after %d pages: it would never end", s.ARN, pages)
		}
		for _, p := range page.Parameters {
			id := s.arnOf(cmp.Or(aws.ToString(p.ARN), aws.ToString(p.Name)))
			if !s.owns(id) {
				continue
			}
			if _, dup := out[id]; dup {
				return nil, inconsistentf("the shared listing of %s returned %s twice", s.ARN, id)
			}
			out[id] = identity(p.Version, p.LastModifiedDate)
		}
		if token == "" {
			return out, nil
		}
		tokens[token] = true
	}
}

// owns reports whether a parameter ARN is of the source's partition,
// Region and account, and under its path.
func (s *sharedPathSource) owns(id string) bool {
	a, ok := parseARN(id)
	return ok && a.Partition == s.ARN.Partition && a.Region == s.ARN.Region &&
		a.AccountID == s.ARN.AccountID && under(s.Path, s.nameOf(id))
}

// read reads parameters by ARN through GetParameters, ten a call, a few
// calls at a time, and returns those found, each named by its ARN, and
// those reported missing. As for names, an answer that leaves out an ARN
// it was asked for is an inconsistentError, never a deletion.
func (s *sharedPathSource) read(ctx context.Context, ids []string, decrypt bool) (map[string]parameter, []string, error) {
	var mu sync.Mutex
	found := make(map[string]parameter, len(ids))
	var invalid []string
	var tasks []func(context.Context) error
	for batch := range slices.Chunk(slices.Sorted(slices.Values(ids)), maxPageSize) {
		tasks = append(tasks, func(ctx context.Context) error {
			got, missing, err := s.readBatch(ctx, batch, decrypt)
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			maps.Copy(found, got)
			invalid = append(invalid, missing...)
			return nil
		})
	}
	if err := runAll(ctx, tasks); err != nil {
		return nil, nil, err
	}
	slices.Sort(invalid)
	return found, invalid, nil
}

// readBatch makes one GetParameters call for at most ten ARNs. An answer
// may name a parameter by ARN or by name (the ARN field says which
// account's it is), and reports missing ones as asked.
func (s *sharedPathSource) readBatch(ctx context.Context, batch []string, decrypt bool) (map[string]parameter, []string, error) {
	out, err := s.Client.GetParameters(ctx, &ssm.GetParametersInput{Names: batch, WithDecryption: aws.Bool(decrypt)})
	if err != nil {
		return nil, nil, s.readError(err)
	}
	asked := func(name string) (string, bool) {
		id := s.arnOf(name)
		return id, slices.Contains(batch, id)
	}
	found, invalid, err := sortAnswer(batch, out, func(p *ssmtypes.Parameter) (string, bool) {
		return asked(cmp.Or(aws.ToString(p.ARN), aws.ToString(p.Name)))
	}, asked)
	if err != nil {
		return nil, nil, err
	}
	for id, p := range found {
		p.Name = aws.String(id) // an ARN names a shared parameter here, whatever the answer called it
		found[id] = p
	}
	return found, invalid, nil
}

// readError says what a denied read of another account's parameters
// lacks: a KMS key the caller may use, or the permission and share.
func (s *sharedPathSource) readError(err error) error {
	err = explain(err)
	var denied *awsError
	if !errors.As(err, &denied) || denied.action == "" {
		return err
	}
	if denied.action == "kms:Decrypt" {
		return fmt.Errorf("%w; a SecureString shared by account %s must be encrypted with a customer managed KMS key whose key policy lets this account use kms:Decrypt (the AWS managed aws/ssm key cannot be used across accounts)", err, s.ARN.AccountID)
	}
	return fmt.Errorf("%w; reading parameters of account %s also needs them shared with this account through AWS RAM", err, s.ARN.AccountID)
}

// ErrNotShared is what a --path by ARN of another account fails with at
// start-up when nothing under it is shared with the caller: a mistake in
// the configuration or the share, not a read that a retry could mend.
var ErrNotShared = errors.New("nothing shared under the path")

// notSharedError is a shared listing that holds nothing under the path,
// from an account that is not the caller's own (or cannot be told to be).
type notSharedError struct {
	arn, why string
}

func (e *notSharedError) Is(target error) bool { return target == ErrNotShared }

func (e *notSharedError) Error() string {
	return fmt.Sprintf("nothing under %s is shared with this caller: share the parameters with this account through AWS RAM "+
		"(a share made with PutResourcePolicy is listed only once promoted: aws ram promote-resource-share-created-from-policy), "+
		"and only advanced-tier parameters can be shared (%s)", e.arn, e.why)
}

// resolve tells, when nothing is shared under the path, whether the ARN's
// account is the caller's own, whose parameters a shared listing never
// holds. The credentials may say which account they are of (AccountID is
// set by some providers: SSO, AssumeRole, AWS_ACCOUNT_ID); otherwise one
// page of GetParametersByPath, which only ever lists the caller's own
// account, shows it by its ARNs. No STS call: paramexec asks nothing it
// does not need, and an own-account ARN is the rare case.
func (s *sharedPathSource) resolve(ctx context.Context) (*pathSource, error) {
	own := &pathSource{Path: s.Path, Client: s.Client, Rank: s.Rank, maxPages: s.maxPages}
	account, err := s.callerAccount(ctx)
	if err != nil {
		return nil, err
	}
	switch {
	case account == s.ARN.AccountID:
	case account != "":
		return nil, &notSharedError{arn: s.ARN.String(), why: "the credentials are of account " + account}
	default:
		page, err := s.Client.GetParametersByPath(ctx, &ssm.GetParametersByPathInput{
			Path: aws.String(s.Path), Recursive: aws.Bool(true), WithDecryption: aws.Bool(false), MaxResults: aws.Int32(1),
		})
		switch {
		case err != nil && Transient(err):
			return nil, fmt.Errorf("asking GetParametersByPath whether %s is this caller's own account: %w", s.ARN, err)
		case err != nil:
			return nil, &notSharedError{arn: s.ARN.String(), why: fmt.Sprintf("nor could GetParametersByPath tell whether the account is this caller's: %v", explain(err))}
		}
		if len(page.Parameters) == 0 || !s.owns(aws.ToString(page.Parameters[0].ARN)) {
			return nil, &notSharedError{arn: s.ARN.String(), why: "and this caller's own account has nothing under " + s.Path + " either"}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.own = own
	return own, nil
}

// callerAccount is the account of the client's credentials when they say
// it, else "". The credentials are cached: the listing just used them.
func (s *sharedPathSource) callerAccount(ctx context.Context) (string, error) {
	c, ok := s.Client.(interface{ Options() ssm.Options })
	if !ok || c.Options().Credentials == nil {
		return "", nil
	}
	creds, err := c.Options().Credentials.Retrieve(ctx)
	if err != nil {
		return "", err
	}
	return creds.AccountID, nil
}
