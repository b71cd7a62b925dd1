package faultproxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
)

// Faults that forward the request and rewrite the target's real answer, as
// a broken or inconsistent endpoint would answer. Each acts only on the
// operations named; on any other, and on an error answer, the answer passes
// unchanged.
const (
	// OmitParameter leaves Rule.Names (when empty, the answer's first
	// parameter) out of a GetParameters answer, both Parameters and
	// InvalidParameters, out of a GetParametersByPath page, or takes the
	// Parameter out of a GetParameter answer: silently, with no error.
	OmitParameter Fault = 100 + iota
	// ReportMissing moves Rule.Names (when empty, the first parameter) of a
	// GetParameters answer from Parameters to InvalidParameters, as if they
	// had been deleted.
	ReportMissing
	// DropNextToken takes the NextToken out of a GetParametersByPath page:
	// the listing ends early.
	DropNextToken
	// EmptyListing answers a GetParametersByPath page with no parameters
	// and no NextToken.
	EmptyListing
	// RepeatNextToken gives a GetParametersByPath page the NextToken the
	// request carried (a minted one on the first page), so a client that
	// follows it asks for the same page forever.
	RepeatNextToken
	// EndlessNextToken gives every GetParametersByPath page a new minted
	// NextToken, and the pages after the first no parameters (as AWS may
	// answer a page): the listing never ends, and neither a token nor a
	// name repeats.
	EndlessNextToken
	// IgnoreVersion forwards GetSecretValue without its VersionId and
	// VersionStage, as an endpoint that ignores them would: the answer is
	// the secret's default version (on moto, after UpdateSecretVersionStage,
	// the old one).
	IgnoreVersion
)

var rewriteNames = map[Fault]string{
	OmitParameter: "OmitParameter", ReportMissing: "ReportMissing", DropNextToken: "DropNextToken",
	EmptyListing: "EmptyListing", RepeatNextToken: "RepeatNextToken", EndlessNextToken: "EndlessNextToken",
	IgnoreVersion: "IgnoreVersion",
}

func (f Fault) rewrites() bool { _, ok := rewriteNames[f]; return ok }

// mintedPrefix starts the NextTokens the proxy makes up. A request carrying
// one is forwarded without it (the target would refuse it), so the target
// answers with its first page.
const mintedPrefix = "faultproxy-"

// matches applies the rule's request filters beyond the operation.
func (r *Rule) matches(op string, body *requestBody) bool {
	if r.WithDecryption != nil && strings.HasPrefix(op, "ssm:") {
		if *r.WithDecryption != (body.WithDecryption != nil && *body.WithDecryption) {
			return false
		}
	}
	if len(r.Names) == 0 {
		return true
	}
	switch op {
	case "ssm:GetParameters":
		return slices.ContainsFunc(body.Names, func(n string) bool { return slices.Contains(r.Names, n) })
	case "ssm:GetParameter":
		return slices.Contains(r.Names, body.Name)
	case "secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret":
		return slices.Contains(r.Names, body.SecretId)
	}
	return true
}

// stripMinted takes a minted NextToken out of a listing request.
func stripMinted(op string, raw []byte, body *requestBody) []byte {
	if op != "ssm:GetParametersByPath" || !strings.HasPrefix(body.NextToken, mintedPrefix) {
		return raw
	}
	return withoutFields(raw, "NextToken")
}

// withoutFields removes top-level fields from a JSON object.
func withoutFields(raw []byte, fields ...string) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return raw
	}
	for _, f := range fields {
		delete(m, f)
	}
	out, err := json.Marshal(m)
	if err != nil {
		return raw
	}
	return out
}

// rewrite forwards the request and answers with the target's answer
// rewritten as rule says.
func (p *Proxy) rewrite(w http.ResponseWriter, r *http.Request, op string, raw []byte, body *requestBody, rule *Rule) {
	raw = stripMinted(op, raw, body)
	if rule.Fault == IgnoreVersion && op == "secretsmanager:GetSecretValue" {
		raw = withoutFields(raw, "VersionId", "VersionStage")
	}
	rec := httptest.NewRecorder()
	p.forward(rec, r, raw)
	answer := rec.Body.Bytes()
	if rec.Code == http.StatusOK {
		if out, err := p.rewriteAnswer(op, body, rule, answer); err == nil {
			answer = out
		}
	}
	h := w.Header()
	for k, v := range rec.Header() {
		h[k] = v
	}
	h.Set("Content-Length", strconv.Itoa(len(answer)))
	w.WriteHeader(rec.Code)
	w.Write(answer)
}

// rewriteAnswer edits a successful answer's JSON. Values pass through as
// they are; only names, the lists and NextToken are looked at.
func (p *Proxy) rewriteAnswer(op string, body *requestBody, rule *Rule, answer []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(answer, &m); err != nil {
		return nil, err
	}
	listing := op == "ssm:GetParametersByPath"
	switch {
	case rule.Fault == OmitParameter && op == "ssm:GetParameter":
		delete(m, "Parameter")
	case rule.Fault == OmitParameter && (op == "ssm:GetParameters" || listing),
		rule.Fault == ReportMissing && op == "ssm:GetParameters":
		params, err := parameters(m["Parameters"])
		if err != nil {
			return nil, err
		}
		var invalid []string
		if raw, ok := m["InvalidParameters"]; ok {
			if err := json.Unmarshal(raw, &invalid); err != nil {
				return nil, err
			}
		}
		names := rule.Names
		if len(names) == 0 && len(params) > 0 {
			names = []string{params[0].name}
		}
		var kept []json.RawMessage
		for _, prm := range params {
			if !slices.Contains(names, prm.name) {
				kept = append(kept, prm.raw)
			} else if rule.Fault == ReportMissing {
				invalid = append(invalid, prm.name)
			}
		}
		if rule.Fault == OmitParameter {
			invalid = slices.DeleteFunc(invalid, func(n string) bool { return slices.Contains(names, n) })
		}
		if err := setJSON(m, "Parameters", nonNil(kept)); err != nil {
			return nil, err
		}
		if !listing {
			if err := setJSON(m, "InvalidParameters", nonNil(invalid)); err != nil {
				return nil, err
			}
		}
	case rule.Fault == DropNextToken && listing:
		delete(m, "NextToken")
	case rule.Fault == EmptyListing && listing:
		delete(m, "NextToken")
		m["Parameters"] = json.RawMessage("[]")
	case rule.Fault == RepeatNextToken && listing:
		token := body.NextToken
		if token == "" {
			token = mintedPrefix + "repeat"
		}
		if err := setJSON(m, "NextToken", token); err != nil {
			return nil, err
		}
	case rule.Fault == EndlessNextToken && listing:
		if strings.HasPrefix(body.NextToken, mintedPrefix) {
			m["Parameters"] = json.RawMessage("[]") // never the same name twice
		}
		p.mu.Lock()
		p.minted++
		n := p.minted
		p.mu.Unlock()
		if err := setJSON(m, "NextToken", fmt.Sprintf("%sendless-%d", mintedPrefix, n)); err != nil {
			return nil, err
		}
	default:
		return answer, nil
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

type namedParam struct {
	name string
	raw  json.RawMessage
}

func parameters(raw json.RawMessage) ([]namedParam, error) {
	if raw == nil {
		return nil, nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, err
	}
	out := make([]namedParam, len(list))
	for i, r := range list {
		var n struct{ Name string }
		if err := json.Unmarshal(r, &n); err != nil {
			return nil, err
		}
		out[i] = namedParam{name: n.Name, raw: r}
	}
	return out, nil
}

func setJSON(m map[string]json.RawMessage, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	m[key] = b
	return nil
}

// nonNil keeps an emptied list a JSON [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
