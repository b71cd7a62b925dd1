package fetch

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	smtypes "github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"
)

// This file is a small model of Parameter Store and Secrets Manager, and
// fake SDK clients that answer from it, with faults: the ground the proof
// in proof_test.go drives the real sources and the Watcher's poll over.

// A paramVersion is one stored version of a parameter.
type paramVersion struct {
	value    string
	version  int64
	modified time.Time
	labels   []string
}

// A secretVersion is one stored version of a secret.
type secretVersion struct {
	id, value string
	stages    []string
}

// A storeState is both stores at one moment. States are values: each step
// of a schedule makes a new one, so that an answer a step behind can be
// given from the one before.
type storeState struct {
	now     time.Time
	seq     int
	params  map[string][]paramVersion // versions of the current incarnation, oldest first
	secrets map[string][]secretVersion
}

func (s *storeState) clone() *storeState {
	c := &storeState{now: s.now, seq: s.seq, params: make(map[string][]paramVersion), secrets: make(map[string][]secretVersion)}
	for name, vs := range s.params {
		cp := slices.Clone(vs)
		for i := range cp {
			cp[i].labels = slices.Clone(cp[i].labels)
		}
		c.params[name] = cp
	}
	for id, vs := range s.secrets {
		cp := slices.Clone(vs)
		for i := range cp {
			cp[i].stages = slices.Clone(cp[i].stages)
		}
		c.secrets[id] = cp
	}
	return c
}

// tick moves the store's clock: every write has a later LastModifiedDate
// than the one before, as AWS's millisecond dates do for writes a step
// apart.
func (s *storeState) tick() { s.now = s.now.Add(time.Second) }

// newValue is a value no log line or error could hold by chance.
func (s *storeState) newValue(what string) string {
	s.seq++
	return fmt.Sprintf("%s%05dq", what, s.seq)
}

func (s *storeState) putParam(name string) {
	s.tick()
	vs := s.params[name]
	v := int64(1)
	if len(vs) > 0 {
		v = vs[len(vs)-1].version + 1
	}
	s.params[name] = append(vs, paramVersion{value: s.newValue("pv"), version: v, modified: s.now})
}

func (s *storeState) deleteParam(name string) { delete(s.params, name) }

// labelLatest moves label to the latest version of name, if there is one.
func (s *storeState) labelLatest(name, label string) {
	vs := s.params[name]
	if len(vs) == 0 {
		return
	}
	for i := range vs {
		vs[i].labels = slices.DeleteFunc(vs[i].labels, func(l string) bool { return l == label })
	}
	vs[len(vs)-1].labels = append(vs[len(vs)-1].labels, label)
}

// putSecret adds a version carrying AWSCURRENT, as put_secret_value and
// rotation's last step do: the old current becomes AWSPREVIOUS.
func (s *storeState) putSecret(id string, json bool) {
	s.pending(id, json)
	s.finish(id)
}

// pending adds a version carrying AWSPENDING only, as rotation's first step
// does; a poll must not follow it.
func (s *storeState) pending(id string, json bool) {
	vs := s.secrets[id]
	for i := range vs {
		vs[i].stages = slices.DeleteFunc(vs[i].stages, func(st string) bool { return st == "AWSPENDING" })
	}
	value := s.newValue("sv")
	if json {
		value = fmt.Sprintf(`{"user":%q,"pw":%q}`, s.newValue("su"), s.newValue("sp"))
	}
	s.seq++
	s.secrets[id] = append(vs, secretVersion{id: fmt.Sprintf("ver-%05d", s.seq), value: value, stages: []string{"AWSPENDING"}})
}

// finish moves AWSCURRENT to the AWSPENDING version, if any.
func (s *storeState) finish(id string) {
	vs := s.secrets[id]
	to := slices.IndexFunc(vs, func(v secretVersion) bool { return slices.Contains(v.stages, "AWSPENDING") })
	if to < 0 {
		return
	}
	for i := range vs {
		st := slices.DeleteFunc(vs[i].stages, func(st string) bool { return st == "AWSPREVIOUS" })
		if slices.Contains(st, currentStage) {
			st = append(slices.DeleteFunc(st, func(x string) bool { return x == currentStage }), "AWSPREVIOUS")
		}
		vs[i].stages = st
	}
	vs[to].stages = []string{currentStage}
}

// param resolves NAME[:SELECTOR] in the state.
func (s *storeState) param(req string) (string, paramVersion, bool) {
	name, sel, _ := strings.Cut(req, ":")
	vs := s.params[name]
	if len(vs) == 0 {
		return name, paramVersion{}, false
	}
	if sel == "" {
		return name, vs[len(vs)-1], true
	}
	for _, v := range vs {
		if strconv.FormatInt(v.version, 10) == sel || slices.Contains(v.labels, sel) {
			return name, v, true
		}
	}
	return name, paramVersion{}, false
}

// secret finds the version of id a stage or an id names.
func (s *storeState) secret(id, versionID, stage string) (secretVersion, bool) {
	for _, v := range s.secrets[id] {
		if (versionID == "" || v.id == versionID) && (stage == "" || slices.Contains(v.stages, stage)) {
			return v, true
		}
	}
	return secretVersion{}, false
}

// A fault is what a fake call does instead of answering rightly.
type fault int

const (
	noFault fault = iota
	throttle
	hang   // until the poll's deadline
	behind // answer from the state a step before
	omit   // leave a name out of the answer
	shortPage
)

// A world is the stores as the fake clients see them: the current state,
// the one a step before, and the faults of the poll in progress.
type world struct {
	mu        sync.Mutex
	cur, prev *storeState
	faulty    bool
	seed      uint64
	calls     map[string]int // by call: the nth same call gets its own fault
	clock     *fakeClock
	callCount int
	faults    map[fault]int // made so far, for the proof's statistics
}

// decide picks the fault of one call from the poll's seed and the call's
// content, never from the order of calls: the sources make their calls
// concurrently, and a schedule must replay exactly.
func (w *world) decide(key string) (fault, *storeState, *rand.Rand) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.callCount++
	w.calls[key]++
	h := fnv.New64a()
	fmt.Fprintf(h, "%s#%d", key, w.calls[key])
	r := rand.New(rand.NewPCG(w.seed, h.Sum64()))
	if !w.faulty || r.IntN(4) != 0 {
		return noFault, w.cur, r
	}
	f := fault(1 + r.IntN(5))
	if w.faults == nil {
		w.faults = make(map[fault]int)
	}
	w.faults[f]++
	if f == behind {
		return f, w.prev, r
	}
	return f, w.cur, r
}

func (w *world) failWith(ctx context.Context, f fault) error {
	switch f {
	case throttle:
		return &smithy.GenericAPIError{Code: "ThrottlingException", Message: "Rate exceeded"}
	case hang:
		w.clock.expire()
		<-ctx.Done()
		return context.Cause(ctx)
	}
	return nil
}

// fakeSSM answers Parameter Store calls from a world.
type fakeSSM struct{ w *world }

func (c fakeSSM) GetParameters(ctx context.Context, in *ssm.GetParametersInput, _ ...func(*ssm.Options)) (*ssm.GetParametersOutput, error) {
	if len(in.Names) > 10 {
		return nil, &smithy.GenericAPIError{Code: "ValidationException", Message: "too many names"}
	}
	decrypt := aws.ToBool(in.WithDecryption)
	f, st, r := c.w.decide(fmt.Sprintf("GetParameters %v %v", in.Names, decrypt))
	if err := c.w.failWith(ctx, f); err != nil {
		return nil, err
	}
	out := &ssm.GetParametersOutput{}
	for i, req := range in.Names {
		if f == omit && i == r.IntN(len(in.Names)) {
			continue
		}
		name, v, ok := st.param(req)
		if !ok {
			out.InvalidParameters = append(out.InvalidParameters, req)
			continue
		}
		out.Parameters = append(out.Parameters, sdkParam(name, v, decrypt))
	}
	return out, nil
}

func sdkParam(name string, v paramVersion, decrypt bool) ssmtypes.Parameter {
	value := v.value
	if !decrypt {
		h := fnv.New32a()
		h.Write([]byte(value))
		value = fmt.Sprintf("ciphertext-%08x", h.Sum32())
	}
	return ssmtypes.Parameter{
		Name: aws.String(name), Value: aws.String(value), Version: v.version,
		LastModifiedDate: aws.Time(v.modified), Type: ssmtypes.ParameterTypeSecureString,
	}
}

// GetParametersByPath pages through the names under the path in name
// order; the token is the offset of the next page. Pages come in any size
// up to MaxResults, empty ones included, the last full one followed by an
// empty page, as moto does.
func (c fakeSSM) GetParametersByPath(ctx context.Context, in *ssm.GetParametersByPathInput, _ ...func(*ssm.Options)) (*ssm.GetParametersByPathOutput, error) {
	decrypt := aws.ToBool(in.WithDecryption)
	token := aws.ToString(in.NextToken)
	f, st, r := c.w.decide(fmt.Sprintf("GetParametersByPath %s %s %v", aws.ToString(in.Path), token, decrypt))
	if err := c.w.failWith(ctx, f); err != nil {
		return nil, err
	}
	var names []string
	for name := range st.params {
		if under(aws.ToString(in.Path), name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	// A token is OFFSET.PAGE: every page's token is new, as AWS's are.
	offset, page, _ := strings.Cut(token, ".")
	from, _ := strconv.Atoi(offset)
	n, _ := strconv.Atoi(page)
	size := int(aws.ToInt32(in.MaxResults))
	if f == shortPage || r.IntN(3) == 0 {
		size = r.IntN(size + 1)
	}
	out := &ssm.GetParametersByPathOutput{}
	to := min(from+size, len(names))
	for i := from; i < to; i++ {
		if f == omit && i == from {
			continue
		}
		_, v, _ := st.param(names[i])
		out.Parameters = append(out.Parameters, sdkParam(names[i], v, decrypt))
	}
	if to < len(names) || (size > 0 && to-from == size) {
		out.NextToken = aws.String(fmt.Sprintf("%d.%d", to, n+1))
	}
	return out, nil
}

func (c fakeSSM) GetParameter(context.Context, *ssm.GetParameterInput, ...func(*ssm.Options)) (*ssm.GetParameterOutput, error) {
	return nil, fmt.Errorf("GetParameter is for ARNs, which the model has none of")
}

// fakeSecrets answers Secrets Manager calls from a world.
type fakeSecrets struct{ w *world }

func notFound(id string) error {
	return &smtypes.ResourceNotFoundException{Message: aws.String("Secrets Manager can't find the specified secret: " + id)}
}

func (c fakeSecrets) DescribeSecret(ctx context.Context, in *secretsmanager.DescribeSecretInput, _ ...func(*secretsmanager.Options)) (*secretsmanager.DescribeSecretOutput, error) {
	id := aws.ToString(in.SecretId)
	f, st, _ := c.w.decide("DescribeSecret " + id)
	if err := c.w.failWith(ctx, f); err != nil {
		return nil, err
	}
	vs, ok := st.secrets[id]
	if !ok {
		return nil, notFound(id)
	}
	out := &secretsmanager.DescribeSecretOutput{Name: aws.String(id), VersionIdsToStages: make(map[string][]string)}
	for _, v := range vs {
		if len(v.stages) > 0 {
			out.VersionIdsToStages[v.id] = slices.Clone(v.stages)
		}
	}
	return out, nil
}

func (c fakeSecrets) GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, _ ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	id := aws.ToString(in.SecretId)
	stage, version := aws.ToString(in.VersionStage), aws.ToString(in.VersionId)
	f, st, _ := c.w.decide(fmt.Sprintf("GetSecretValue %s %s %s", id, version, stage))
	if err := c.w.failWith(ctx, f); err != nil {
		return nil, err
	}
	if version == "" && stage == "" {
		stage = currentStage
	}
	v, ok := st.secret(id, version, stage)
	if !ok {
		return nil, notFound(id)
	}
	return &secretsmanager.GetSecretValueOutput{
		Name: aws.String(id), VersionId: aws.String(v.id), VersionStages: slices.Clone(v.stages), SecretString: aws.String(v.value),
	}, nil
}

func (c fakeSecrets) BatchGetSecretValue(ctx context.Context, in *secretsmanager.BatchGetSecretValueInput, _ ...func(*secretsmanager.Options)) (*secretsmanager.BatchGetSecretValueOutput, error) {
	f, st, r := c.w.decide(fmt.Sprintf("BatchGetSecretValue %v", in.SecretIdList))
	if err := c.w.failWith(ctx, f); err != nil {
		return nil, err
	}
	out := &secretsmanager.BatchGetSecretValueOutput{}
	for i, id := range in.SecretIdList {
		if f == omit && i == r.IntN(len(in.SecretIdList)) {
			continue
		}
		v, ok := st.secret(id, "", currentStage)
		if !ok {
			out.Errors = append(out.Errors, smtypes.APIErrorType{SecretId: aws.String(id), ErrorCode: aws.String("ResourceNotFoundException")})
			continue
		}
		out.SecretValues = append(out.SecretValues, smtypes.SecretValueEntry{
			Name: aws.String(id), VersionId: aws.String(v.id), VersionStages: slices.Clone(v.stages), SecretString: aws.String(v.value),
		})
	}
	return out, nil
}
