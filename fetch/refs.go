package fetch

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
)

// RefRank is the rank of a resolved reference: below every source, since it
// stands for the inherited value it replaces (see Merge).
const RefRank = -1

// A Reference is an inherited variable whose value names a parameter or a
// secret to put in its place. Exactly one of Param and Secret is set.
type Reference struct {
	Var    string
	Param  *Param
	Secret *Secret
}

// The reference forms, as an ECS task definition's valueFrom writes them,
// plus two short ones:
//
//	arn:aws:ssm:REGION:ACCOUNT:parameter/NAME[:SELECTOR]
//	ssm:/NAME[:SELECTOR]
//	arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME[:JSON_KEY[:VERSION_STAGE[:VERSION_ID]]]
//	secretsmanager:NAME[#JSON_KEY]
//
// ParseReference is strict: the whole value must be one of these, so that
// a URL, free text mentioning "ssm:", or the ARN of anything else is an
// ordinary value and stays as it is.
func ParseReference(name, value string) (Reference, bool) {
	switch {
	case strings.HasPrefix(value, "arn:"):
		a, ok := parseARN(value)
		if !ok {
			return Reference{}, false
		}
		switch a.service {
		case "ssm":
			if !strings.HasPrefix(a.resource, "parameter/") {
				return Reference{}, false
			}
			return paramRef(name, value)
		case "secretsmanager":
			return secretARNRef(name, value, a)
		}
		return Reference{}, false
	case strings.HasPrefix(value, "ssm:/"):
		return paramRef(name, strings.TrimPrefix(value, "ssm:"))
	case strings.HasPrefix(value, "secretsmanager:"):
		id, key, hasKey := strings.Cut(strings.TrimPrefix(value, "secretsmanager:"), "#")
		if !validSecretName(id) || hasKey && key == "" {
			return Reference{}, false
		}
		return Reference{Var: name, Secret: &Secret{ID: id, JSONKey: key, Var: name, Rank: RefRank}}, true
	}
	return Reference{}, false
}

func paramRef(name, spec string) (Reference, bool) {
	p, err := parseParamSpec(spec)
	if err != nil {
		return Reference{}, false
	}
	p.Var, p.Rank, p.Ref = name, RefRank, true
	return Reference{Var: name, Param: &p}, true
}

// secretARNRef parses ECS's secret ARN with its optional trailing fields,
// any of which may be empty: "...:secret:db-AbCdEf:password::" is the JSON
// key "password" of AWSCURRENT.
func secretARNRef(name, value string, a arn) (Reference, bool) {
	rest, ok := strings.CutPrefix(a.resource, "secret:")
	if !ok {
		return Reference{}, false
	}
	fields := strings.Split(rest, ":")
	if len(fields) > 4 || !validSecretName(fields[0]) {
		return Reference{}, false
	}
	fields = append(fields, "", "", "")[:4]
	key, stage, version := fields[1], fields[2], fields[3]
	if !validLabel(stage, 256) || !validLabel(version, 64) {
		return Reference{}, false
	}
	id := value[:len(value)-len(rest)] + fields[0]
	return Reference{Var: name, Secret: &Secret{
		ID: id, JSONKey: key, VersionStage: stage, VersionID: version,
		Var: name, Rank: RefRank,
	}}, true
}

// validLabel accepts an empty string or a staging label or version id:
// printable ASCII without spaces, at most max bytes.
func validLabel(s string, max int) bool {
	if len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// FindReferences returns the references among environ's variables, in
// name order. A name given twice counts with its last value, the one the
// child would see.
func FindReferences(environ []string) []Reference {
	last := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			last[k] = v
		}
	}
	var refs []Reference
	for _, k := range slices.Sorted(maps.Keys(last)) {
		if ref, ok := ParseReference(k, last[k]); ok {
			refs = append(refs, ref)
		}
	}
	return refs
}

// RefSource resolves references: its variables replace the inherited
// values that named them. Parameters and secrets are fetched as --param and
// --secret fetch them, and watched the same way.
type RefSource struct {
	params  ParamSource
	secrets SecretSource
}

// NewRefSource returns the source for refs. A client func is only called
// for the kind of reference present.
func NewRefSource(refs []Reference, clients AWSClients) *RefSource {
	s := &RefSource{
		params:  ParamSource{Clients: clients},
		secrets: SecretSource{Clients: clients},
	}
	for _, r := range refs {
		switch {
		case r.Param != nil:
			s.params.Params = append(s.params.Params, *r.Param)
		case r.Secret != nil:
			s.secrets.Secrets = append(s.secrets.Secrets, *r.Secret)
		}
	}
	return s
}

func (s *RefSource) String() string { return "references" }

// Versions of the two kinds are kept apart by a prefix in one map.
const (
	paramVersionKey  = "ssm "
	secretVersionKey = "secretsmanager "
)

// Load reads the referenced parameters and secrets concurrently.
func (s *RefSource) Load(ctx context.Context) (Layer, error) {
	var pl, sl Layer
	var perr, serr error
	var wg sync.WaitGroup
	if len(s.params.Params) > 0 {
		wg.Go(func() { pl, perr = s.params.Load(ctx) })
	}
	if len(s.secrets.Secrets) > 0 {
		wg.Go(func() { sl, serr = s.secrets.Load(ctx) })
	}
	wg.Wait()
	if err := errors.Join(perr, serr); err != nil {
		return Layer{}, err
	}
	layer := Layer{
		Vars:     append(pl.Vars, sl.Vars...),
		Versions: make(map[string]string, len(pl.Versions)+len(sl.Versions)),
	}
	for k, v := range pl.Versions {
		layer.Versions[paramVersionKey+k] = v
	}
	for k, v := range sl.Versions {
		layer.Versions[secretVersionKey+k] = v
	}
	return layer, nil
}

// Versions asks each kind for its versions, kept apart by prefix.
func (s *RefSource) Versions(ctx context.Context, last Layer, discover bool) (map[string]string, error) {
	now := make(map[string]string, len(last.Versions))
	if len(s.params.Params) > 0 {
		pv, err := s.params.Versions(ctx, subLayer(last, paramVersionKey), discover)
		if err != nil {
			return nil, err
		}
		for k, v := range pv {
			now[paramVersionKey+k] = v
		}
	}
	if len(s.secrets.Secrets) > 0 {
		sv, err := s.secrets.Versions(ctx, subLayer(last, secretVersionKey), discover)
		if err != nil {
			return nil, err
		}
		for k, v := range sv {
			now[secretVersionKey+k] = v
		}
	}
	return now, nil
}

// Refresh reads again the kind whose versions moved, and keeps the other
// kind's variables as they are.
func (s *RefSource) Refresh(ctx context.Context, last Layer, now map[string]string) (Layer, error) {
	next := Layer{Versions: maps.Clone(now)}
	isParam := make(map[string]bool, len(s.params.Params))
	for _, p := range s.params.Params {
		isParam[p.Var] = true
	}
	for _, kind := range []struct {
		prefix string
		src    Refresher
		n      int
	}{{paramVersionKey, &s.params, len(s.params.Params)}, {secretVersionKey, &s.secrets, len(s.secrets.Secrets)}} {
		if kind.n == 0 {
			continue
		}
		before, after := subLayer(last, kind.prefix), subLayer(Layer{Versions: now}, kind.prefix)
		if maps.Equal(before.Versions, after.Versions) {
			for _, v := range last.Vars {
				if isParam[v.Name] == (kind.prefix == paramVersionKey) {
					next.Vars = append(next.Vars, v)
				}
			}
			continue
		}
		layer, err := kind.src.Refresh(ctx, before, after.Versions)
		if err != nil {
			return Layer{}, err
		}
		next.Vars = append(next.Vars, layer.Vars...)
		for k := range next.Versions {
			if strings.HasPrefix(k, kind.prefix) {
				delete(next.Versions, k)
			}
		}
		for k, v := range layer.Versions {
			next.Versions[kind.prefix+k] = v
		}
	}
	return next, nil
}

// subLayer is the part of l's versions under prefix, with it removed.
func subLayer(l Layer, prefix string) Layer {
	sub := Layer{Versions: make(map[string]string)}
	for k, v := range l.Versions {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			sub.Versions[rest] = v
		}
	}
	return sub
}

// arn is an Amazon Resource Name split into its fields.
type arn struct {
	partition, service, region, account, resource string
}

// parseARN splits s if it is an ARN with a Region and a 12-digit account,
// as parameter and secret ARNs always are.
func parseARN(s string) (arn, bool) {
	rest, ok := strings.CutPrefix(s, "arn:")
	if !ok {
		return arn{}, false
	}
	f := strings.SplitN(rest, ":", 5)
	if len(f) != 5 {
		return arn{}, false
	}
	a := arn{partition: f[0], service: f[1], region: f[2], account: f[3], resource: f[4]}
	if !isPartition(a.partition) || !isLowerWord(a.service) || !isLowerWord(a.region) || !isAccount(a.account) || a.resource == "" {
		return arn{}, false
	}
	return a, true
}

// isPartition accepts aws and its variants: aws-cn, aws-us-gov, aws-iso-b.
func isPartition(s string) bool {
	return (s == "aws" || strings.HasPrefix(s, "aws-")) && isLowerWord(s)
}

// isLowerWord accepts [a-z0-9-]+, the shape of services and Regions.
func isLowerWord(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func isAccount(s string) bool {
	if len(s) != 12 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
