package fetch

import (
	"maps"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws/arn"

	"github.com/paramexec/paramexec/internal/environ"
)

// refRank is the rank of a resolved reference: below every source, since it
// stands for the inherited value it replaces (see Merge).
const refRank = -1

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
		switch a.Service {
		case "ssm":
			if !strings.HasPrefix(a.Resource, "parameter/") {
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
		return Reference{Var: name, Secret: &Secret{ID: id, JSONKey: key, Var: name, Rank: refRank}}, true
	}
	return Reference{}, false
}

func paramRef(name, spec string) (Reference, bool) {
	p, err := parseParamSpec(spec)
	if err != nil {
		return Reference{}, false
	}
	p.Var, p.Rank, p.Ref = name, refRank, true
	return Reference{Var: name, Param: &p}, true
}

// secretARNRef parses ECS's secret ARN with its optional trailing fields,
// any of which may be empty: "...:secret:db-AbCdEf:password::" is the JSON
// key "password" of AWSCURRENT.
func secretARNRef(name, value string, a arn.ARN) (Reference, bool) {
	rest, ok := strings.CutPrefix(a.Resource, "secret:")
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
		Var: name, Rank: refRank,
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

// findReferences returns the references among list's variables, in
// name order. A name given twice counts with its last value, the one the
// child would see.
func findReferences(list []string) []Reference {
	last := environ.Last(list)
	var refs []Reference
	for _, k := range slices.Sorted(maps.Keys(last)) {
		if ref, ok := ParseReference(k, last[k]); ok {
			refs = append(refs, ref)
		}
	}
	return refs
}

// refSources are the sources that resolve refs: their variables replace
// the inherited values that named them. The parameters form one paramSource
// and the secrets one secretSource, fetched and watched as --param and
// --secret are, and named "references" in logs and errors. A client func is
// only called for the kind of reference present.
func refSources(refs []Reference, clients awsClients) []Source {
	params := &paramSource{Clients: clients, name: "references"}
	secrets := &secretSource{Clients: clients, name: "references"}
	for _, r := range refs {
		switch {
		case r.Param != nil:
			params.Params = append(params.Params, *r.Param)
		case r.Secret != nil:
			secrets.Secrets = append(secrets.Secrets, *r.Secret)
		}
	}
	var out []Source
	if len(params.Params) > 0 {
		out = append(out, params)
	}
	if len(secrets.Secrets) > 0 {
		out = append(out, secrets)
	}
	return out
}

// parseARN splits s with arn.Parse if it is an ARN with a Region and a
// 12-digit account, as parameter and secret ARNs always are; arn.Parse
// alone accepts any five colons after "arn:".
func parseARN(s string) (arn.ARN, bool) {
	a, err := arn.Parse(s)
	if err != nil || !isPartition(a.Partition) || !isLowerWord(a.Service) || !isLowerWord(a.Region) || !isAccount(a.AccountID) || a.Resource == "" {
		return arn.ARN{}, false
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
