package fetch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

// SecretsClient lists the Secrets Manager operations paramexec calls.
// *secretsmanager.Client satisfies it.
type SecretsClient interface {
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
	BatchGetSecretValue(ctx context.Context, in *secretsmanager.BatchGetSecretValueInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.BatchGetSecretValueOutput, error)
	DescribeSecret(ctx context.Context, in *secretsmanager.DescribeSecretInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.DescribeSecretOutput, error)
}

// currentStage is the staging label a secret's live value carries; rotation
// moves it to the new version in its last step.
const currentStage = "AWSCURRENT"

// batchSize is BatchGetSecretValue's limit of secrets a call.
const batchSize = 20

// secretValue is one read version of a secret.
type secretValue struct {
	name    string // from the response: an ARN's random suffix is not part of it
	arn     string // from the response, for Provenance; empty if it had none
	value   string
	binary  bool
	version string
}

// secretSource is the --secret flags, or the secret references, fetched
// together.
type secretSource struct {
	Secrets []Secret
	Clients awsClients
	name    string // in logs and errors, when not "--secret"
}

func (s *secretSource) String() string { return cmp.Or(s.name, "--secret") }

// Load reads every secret and turns each into its variables.
func (s *secretSource) Load(ctx context.Context) (Layer, error) { return s.load(ctx, nil) }

// load reads every secret, each at the version at holds for its key or,
// without one, at the version its stage is on, and turns each into its
// variables.
func (s *secretSource) load(ctx context.Context, at map[string]string) (Layer, error) {
	got, err := s.fetch(ctx, at)
	if err != nil {
		return Layer{}, err
	}
	var vars []Var
	var errs []error
	versions := make(map[string]string, len(got))
	for _, sec := range s.Secrets {
		v := got[sec.key()]
		versions[sec.key()] = v.version
		vs, err := sec.vars(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", sec.describe(), err))
			continue
		}
		vars = append(vars, vs...)
	}
	if err := errors.Join(errs...); err != nil {
		return Layer{}, err
	}
	return Layer{Vars: vars, Versions: versions}, nil
}

// fetch reads each distinct secret version once: at the version id at
// gives for its key, if any, otherwise at its pinned version or stage.
// Without at, secrets following AWSCURRENT in one Region go through
// BatchGetSecretValue, twenty a call, when there are two or more of them;
// anything the batch did not return (an error for that secret, a version
// not on AWSCURRENT, a pinned version, a lone secret) is read with
// GetSecretValue, whose error then says exactly what is wrong.
func (s *secretSource) fetch(ctx context.Context, at map[string]string) (map[string]secretValue, error) {
	byKey := make(map[string]Secret)
	var keys []string
	for _, sec := range s.Secrets {
		if _, ok := byKey[sec.key()]; !ok {
			byKey[sec.key()] = sec
			keys = append(keys, sec.key())
		}
	}
	slices.Sort(keys)

	var mu sync.Mutex
	got := make(map[string]secretValue, len(keys))
	if err := runAll(ctx, s.batches(keys, byKey, at, &mu, got)); err != nil {
		return nil, err
	}

	var singles []func(context.Context) error
	for _, k := range keys {
		if _, ok := got[k]; ok {
			continue
		}
		sec := byKey[k]
		singles = append(singles, func(ctx context.Context) error {
			v, err := getSecret(ctx, s.Clients.SecretsManager(s.Clients.region(sec.ID)), sec, at[k])
			if err != nil {
				return fmt.Errorf("%s: %w", sec.describe(), err)
			}
			mu.Lock()
			got[k] = v
			mu.Unlock()
			return nil
		})
	}
	if err := runAll(ctx, singles); err != nil {
		return nil, err
	}
	return got, nil
}

// batches are the BatchGetSecretValue calls for the keys that follow
// AWSCURRENT with no version given in at, by Region, when a Region has two
// or more; each adds under mu what it read to got.
func (s *secretSource) batches(keys []string, byKey map[string]Secret, at map[string]string, mu *sync.Mutex, got map[string]secretValue) []func(context.Context) error {
	byRegion := make(map[string][]string)
	var regions []string
	for _, k := range keys {
		if sec := byKey[k]; sec.current() && at[k] == "" {
			r := s.Clients.region(sec.ID)
			if _, ok := byRegion[r]; !ok {
				regions = append(regions, r)
			}
			byRegion[r] = append(byRegion[r], sec.ID)
		}
	}
	var batches []func(context.Context) error
	for _, r := range regions {
		if len(byRegion[r]) < 2 {
			continue
		}
		for ids := range slices.Chunk(byRegion[r], batchSize) {
			batches = append(batches, func(ctx context.Context) error {
				vals, err := batchGet(ctx, s.Clients.SecretsManager(r), ids)
				mu.Lock()
				defer mu.Unlock()
				for id, v := range vals {
					got[Secret{ID: id}.key()] = v
				}
				return err
			})
		}
	}
	return batches
}

// batchGet reads up to twenty secrets' AWSCURRENT values in one call and
// returns those it could match to an id. The batch only saves calls: a
// secret it reports an error for, or does not return, is read again alone
// by the caller, as is every secret when the batch call fails for any
// reason but a denial. That includes throttling, which is not waited out
// (every call is one attempt, see newClients): BatchGetSecretValue's quota
// is 100 calls a second per Region against GetSecretValue's 10,000, so a
// fleet restarting at once is better served by the single reads.
func batchGet(ctx context.Context, client SecretsClient, ids []string) (map[string]secretValue, error) {
	out, err := client.BatchGetSecretValue(ctx, &secretsmanager.BatchGetSecretValueInput{SecretIdList: ids})
	if err != nil {
		if strings.Contains(errorCode(err), "AccessDenied") {
			err = explain(err)
			var ae *awsError
			if errors.As(err, &ae) && ae.action == "secretsmanager:BatchGetSecretValue" {
				ae.action += " (and secretsmanager:GetSecretValue on each secret)"
			}
			return nil, fmt.Errorf("secrets %s: %w", strings.Join(ids, ", "), err)
		}
		return nil, nil
	}
	vals := make(map[string]secretValue, len(ids))
	for _, e := range out.SecretValues {
		// The batch reads "the current version"; an entry not on
		// AWSCURRENT (moto's answer after UpdateSecretVersionStage) is
		// read again alone, by stage.
		if len(e.VersionStages) > 0 && !slices.Contains(e.VersionStages, currentStage) {
			continue
		}
		v := secretValue{
			name:    aws.ToString(e.Name),
			arn:     aws.ToString(e.ARN),
			version: aws.ToString(e.VersionId),
		}
		if e.SecretString != nil {
			v.value = *e.SecretString
		} else {
			v.value, v.binary = string(e.SecretBinary), true
		}
		for _, id := range ids {
			if secretMatches(id, aws.ToString(e.Name), aws.ToString(e.ARN)) {
				vals[id] = v
			}
		}
	}
	return vals, nil
}

// secretMatches reports whether a secret asked for by id is the one named
// name with ARN arn. An id may be the name, the full ARN, or a partial ARN
// without the six random characters AWS appends to a secret's name.
func secretMatches(id, name, arn string) bool {
	if id == name || id == arn {
		return true
	}
	return strings.HasPrefix(id, "arn:") && len(arn) == len(id)+7 && strings.HasPrefix(arn, id+"-")
}

// getSecret reads one secret version: version if given, else the pinned
// version id or the followed stage, asked for by name (a read without a
// stage returns, on some emulators, a version the stage has left). It
// refuses an answer for another version than the one asked for.
func getSecret(ctx context.Context, client SecretsClient, sec Secret, version string) (secretValue, error) {
	in := &secretsmanager.GetSecretValueInput{SecretId: aws.String(sec.ID)}
	switch {
	case version != "" && version != sec.VersionID:
		in.VersionId = aws.String(version)
	case sec.VersionID != "":
		version = sec.VersionID
		in.VersionId = aws.String(version)
		if sec.VersionStage != "" {
			in.VersionStage = aws.String(sec.VersionStage)
		}
	default:
		in.VersionStage = aws.String(sec.stage())
	}
	out, err := client.GetSecretValue(ctx, in)
	if err != nil {
		err = acrossAccounts(sec.ID, explainSecret(err))
		if version != "" && version != sec.VersionID && errorCode(err) == "ResourceNotFoundException" {
			// The version the poll saw is gone already.
			return secretValue{}, fmt.Errorf("version %s: %w", version, errStale)
		}
		return secretValue{}, err
	}
	got := aws.ToString(out.VersionId)
	switch {
	case version != "" && got != version:
		return secretValue{}, inconsistentf("asked for version %s, GetSecretValue answered with version %s", version, got)
	case version == "" && len(out.VersionStages) > 0 && !slices.Contains(out.VersionStages, sec.stage()):
		return secretValue{}, inconsistentf("asked for the stage %s, GetSecretValue answered with version %s, which is not on it", sec.stage(), got)
	}
	v := secretValue{name: aws.ToString(out.Name), arn: aws.ToString(out.ARN), version: got}
	if out.SecretString != nil {
		v.value = *out.SecretString
	} else {
		v.value, v.binary = string(out.SecretBinary), true
	}
	if v.name == "" {
		v.name = sec.ID
	}
	return v, nil
}

// explainSecret is explain plus Secrets Manager's own codes: a secret that
// is not there, and DecryptionFailure, which is how a KMS key the role may
// not use shows through GetSecretValue.
func explainSecret(err error) error {
	switch errorCode(err) {
	case "ResourceNotFoundException":
		return fmt.Errorf("not found (no such secret, or no such version): %w", err)
	case "DecryptionFailure":
		return &awsError{err: err, action: "kms:Decrypt"}
	}
	return explain(err)
}

// Versions asks DescribeSecret, which returns no value and costs no KMS
// call, which version each followed staging label is on now. A secret
// pinned to a version id never changes and costs no call. A poll of S
// secrets is S DescribeSecret calls against a 40,000-a-second quota, and
// GetSecretValue is called only when a version moved, as AWS's own Secrets
// Store CSI provider does.
//
// A secret that is gone, or whose stage is on no version, is an error, not
// a change: the child keeps the value it has.
func (s *secretSource) Versions(ctx context.Context, last Layer, _ bool) (map[string]string, error) {
	now := make(map[string]string, len(last.Versions))
	var tasks []func(context.Context) error
	var mu sync.Mutex
	for _, sec := range s.Secrets {
		k := sec.key()
		if _, ok := now[k]; ok {
			continue
		}
		now[k] = last.Versions[k]
		if sec.VersionID != "" {
			continue
		}
		tasks = append(tasks, func(ctx context.Context) error {
			version, err := stageVersion(ctx, s.Clients.SecretsManager(s.Clients.region(sec.ID)), sec)
			if err != nil {
				return fmt.Errorf("%s: %w", sec.describe(), err)
			}
			mu.Lock()
			now[k] = version
			mu.Unlock()
			return nil
		})
	}
	if err := runAll(ctx, tasks); err != nil {
		return nil, err
	}
	return now, nil
}

// stageVersion returns the id of the one version the secret's followed
// stage is on.
func stageVersion(ctx context.Context, client SecretsClient, sec Secret) (string, error) {
	out, err := client.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(sec.ID)})
	if err != nil {
		return "", acrossAccounts(sec.ID, explainSecret(err))
	}
	if out.DeletedDate != nil {
		return "", fmt.Errorf("scheduled for deletion; keeping the value read before")
	}
	var on []string
	for id, stages := range out.VersionIdsToStages {
		if slices.Contains(stages, sec.stage()) {
			on = append(on, id)
		}
	}
	switch len(on) {
	case 0:
		return "", fmt.Errorf("no version carries the stage %s; keeping the value read before", sec.stage())
	case 1:
		return on[0], nil
	}
	return "", inconsistentf("DescribeSecret shows the stage %s on %d versions", sec.stage(), len(on))
}

// Refresh reads every secret again at exactly the version in now, by
// version id: what DescribeSecret reported, not whatever a read by stage
// returns a moment later (after UpdateSecretVersionStage some emulators
// still return the old version for a read without a version). A value
// whose version differs from the one asked for is refused. All secrets are
// read, not only the one that moved, so that the layer is the set of
// versions the poll saw; secrets are few, and a read costs one call each.
func (s *secretSource) Refresh(ctx context.Context, _ Layer, now map[string]string) (Layer, error) {
	return s.load(ctx, now)
}
