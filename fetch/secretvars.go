package fetch

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// vars turns one read value into the secret's variables. Errors name keys
// and secrets, never values.
func (s Secret) vars(v secretValue) ([]Var, error) {
	origin := v.name
	if s.Var != "" {
		value := v.value
		if s.JSONKey != "" {
			if v.binary {
				return nil, fmt.Errorf("the secret is binary, so it has no JSON key %q", s.JSONKey)
			}
			fields, ok := jsonObject(v.value)
			if !ok {
				return nil, fmt.Errorf("the secret is not a JSON object, so it has no key %q", s.JSONKey)
			}
			if value, ok = fields[s.JSONKey]; !ok {
				return nil, fmt.Errorf("the secret has no JSON key %q", s.JSONKey)
			}
			origin += "#" + s.JSONKey
		}
		return []Var{{Name: s.Var, Value: value, Origin: origin, Rank: s.Rank, From: s.provenance(v, s.JSONKey)}}, nil
	}
	fields, isObject := jsonObject(v.value)
	if v.binary || !isObject || s.whole {
		name := s.Prefix
		if name == "" {
			var err error
			if name, err = VarName(lastSegment(v.name)); err != nil {
				return nil, err
			}
		}
		return []Var{{Name: name, Value: v.value, Origin: origin, Rank: s.Rank, From: s.provenance(v, "")}}, nil
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys) // stable errors and output
	var n namer
	for _, k := range keys {
		name, err := prefixedName(s.Prefix, k)
		if err != nil {
			return nil, fmt.Errorf("JSON key %q: %w", k, err)
		}
		from := s.provenance(v, k)
		if err := n.add(Var{Name: name, Value: fields[k], Origin: origin + "#" + k, Rank: s.Rank, From: from}); err != nil {
			return nil, err
		}
	}
	return n.vars, nil
}

// provenance is where a variable taken from v, and from its JSON key key
// if not empty, came from: the secret's ARN when the answer carried it.
func (s Secret) provenance(v secretValue, key string) Provenance {
	return Provenance{
		Source:   s.source(),
		Item:     cmp.Or(v.arn, v.name),
		Key:      key,
		Selector: s.selector(),
		Version:  v.version,
	}
}

// jsonObject parses s as a JSON object and returns each top-level key's
// value as an environment value: a string unquoted, null empty, anything
// else (number, boolean, nested object or array) as its compact JSON text.
// Anything but a JSON object is reported as not one: a password may well
// start with "{".
func jsonObject(s string) (map[string]string, bool) {
	t := strings.TrimSpace(s)
	if !strings.HasPrefix(t, "{") {
		return nil, false
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(t), &raw); err != nil {
		return nil, false
	}
	out := make(map[string]string, len(raw))
	for k, r := range raw {
		switch {
		case len(r) > 0 && r[0] == '"':
			var str string
			if json.Unmarshal(r, &str) != nil {
				return nil, false
			}
			out[k] = str
		case string(r) == "null":
			out[k] = ""
		default:
			var b bytes.Buffer
			if json.Compact(&b, r) != nil {
				return nil, false
			}
			out[k] = b.String()
		}
	}
	return out, true
}
