package faultproxy

import (
	"fmt"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

// seedPath puts n String parameters p00.. under a path of the test's own
// and returns the path and their names.
func seedPath(t *testing.T, n int) (string, []string) {
	t.Helper()
	path := "/rewrite/" + t.Name()
	var names []string
	for i := range n {
		name := fmt.Sprintf("%s/p%02d", path, i)
		moto.PutParameter(t, name, fmt.Sprintf("v%d", i), "String")
		names = append(names, name)
	}
	return path, names
}

func TestOmitAndReportMissing(t *testing.T) {
	_, names := seedPath(t, 3)
	p := newProxy(t)
	c := ssmClient(t, p)
	get := func(decrypt bool) *ssm.GetParametersOutput {
		t.Helper()
		out, err := c.GetParameters(t.Context(), &ssm.GetParametersInput{Names: names, WithDecryption: aws.Bool(decrypt)})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	returned := func(out *ssm.GetParametersOutput) []string {
		var got []string
		for _, prm := range out.Parameters {
			got = append(got, aws.ToString(prm.Name))
		}
		slices.Sort(got)
		return got
	}

	p.Inject(Rule{Op: "ssm:GetParameters", Fault: OmitParameter, Names: names[1:2], WithDecryption: aws.Bool(false), Times: 1})
	// A decrypting read does not match the rule, and leaves it in place.
	if got := returned(get(true)); !slices.Equal(got, names) {
		t.Errorf("decrypting read: %v, want every name", got)
	}
	out := get(false)
	if got := returned(out); !slices.Equal(got, []string{names[0], names[2]}) || len(out.InvalidParameters) != 0 {
		t.Errorf("OmitParameter: returned %v, invalid %v; want %s left out of both", got, out.InvalidParameters, names[1])
	}
	if got := returned(get(false)); !slices.Equal(got, names) {
		t.Errorf("after the rule was spent: %v", got)
	}

	p.Inject(Rule{Op: "ssm:GetParameters", Fault: ReportMissing, Names: names[:1], Times: 1})
	out = get(false)
	if got := returned(out); !slices.Equal(got, names[1:]) || !slices.Equal(out.InvalidParameters, names[:1]) {
		t.Errorf("ReportMissing: returned %v, invalid %v; want %s reported invalid", got, out.InvalidParameters, names[0])
	}

	p.Inject(Rule{Op: "ssm:GetParameter", Fault: OmitParameter, Times: 1})
	one, err := c.GetParameter(t.Context(), &ssm.GetParameterInput{Name: aws.String(names[0])})
	if err != nil || one.Parameter != nil {
		t.Errorf("OmitParameter on GetParameter: %v, %v; want an answer without a parameter", one, err)
	}
}

func TestListingRewrites(t *testing.T) {
	path, names := seedPath(t, 15) // two pages
	p := newProxy(t)
	c := ssmClient(t, p)
	page := func(token *string) *ssm.GetParametersByPathOutput {
		t.Helper()
		out, err := c.GetParametersByPath(t.Context(), &ssm.GetParametersByPathInput{Path: aws.String(path), MaxResults: aws.Int32(10), NextToken: token})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	p.Inject(Rule{Op: "ssm:GetParametersByPath", Fault: OmitParameter, Names: names[3:4], Times: 1})
	if out := page(nil); len(out.Parameters) != 9 || out.NextToken == nil {
		t.Errorf("OmitParameter: %d parameters, NextToken %v; want 9 and a token", len(out.Parameters), out.NextToken)
	}
	p.Inject(Rule{Op: "ssm:GetParametersByPath", Fault: DropNextToken, Times: 1})
	if out := page(nil); len(out.Parameters) != 10 || out.NextToken != nil {
		t.Errorf("DropNextToken: %d parameters, NextToken %v", len(out.Parameters), out.NextToken)
	}
	p.Inject(Rule{Op: "ssm:GetParametersByPath", Fault: EmptyListing, Times: 1})
	if out := page(nil); len(out.Parameters) != 0 || out.NextToken != nil {
		t.Errorf("EmptyListing: %d parameters, NextToken %v", len(out.Parameters), out.NextToken)
	}

	remove := p.Inject(Rule{Op: "ssm:GetParametersByPath", Fault: RepeatNextToken})
	first := page(nil)
	again := page(first.NextToken)
	if first.NextToken == nil || aws.ToString(again.NextToken) != aws.ToString(first.NextToken) || len(again.Parameters) != 10 {
		t.Errorf("RepeatNextToken: tokens %v then %v, %d parameters", first.NextToken, again.NextToken, len(again.Parameters))
	}
	remove()

	p.Inject(Rule{Op: "ssm:GetParametersByPath", Fault: EndlessNextToken, Times: 3})
	seen := map[string]bool{}
	var token *string
	for i := range 3 {
		out := page(token)
		if i > 0 && len(out.Parameters) != 0 {
			t.Errorf("EndlessNextToken: page %d holds %d parameters, want none after the first", i+1, len(out.Parameters))
		}
		if out.NextToken == nil || seen[*out.NextToken] {
			t.Fatalf("EndlessNextToken: token %v after %v", out.NextToken, seen)
		}
		seen[*out.NextToken] = true
		token = out.NextToken
	}
	if len(seen) != 3 {
		t.Errorf("EndlessNextToken: %d tokens", len(seen))
	}
	// With the rule spent, a minted token reads the first page again.
	if out := page(token); len(out.Parameters) != 10 {
		t.Errorf("a minted token without the rule: %d parameters, want the first page", len(out.Parameters))
	}
}

func TestIgnoreVersion(t *testing.T) {
	name := "rewrite/" + t.Name()
	moto.CreateSecret(t, name, "one")
	v2 := moto.PutSecretValue(t, name, "two")
	p := newProxy(t)
	sm := smClient(t, p)
	described, err := sm.DescribeSecret(t.Context(), &secretsmanager.DescribeSecretInput{SecretId: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	var v1 string
	for id, stages := range described.VersionIdsToStages {
		if slices.Contains(stages, "AWSPREVIOUS") {
			v1 = id
		}
	}
	p.Inject(Rule{Op: "secretsmanager:GetSecretValue", Fault: IgnoreVersion, Times: 1})
	out, err := sm.GetSecretValue(t.Context(), &secretsmanager.GetSecretValueInput{SecretId: aws.String(name), VersionId: aws.String(v1)})
	if err != nil || aws.ToString(out.VersionId) != v2 {
		t.Errorf("IgnoreVersion: version %v (%v), want the default %s, not the asked %s", out, err, v2, v1)
	}
	out, err = sm.GetSecretValue(t.Context(), &secretsmanager.GetSecretValueInput{SecretId: aws.String(name), VersionId: aws.String(v1)})
	if err != nil || aws.ToString(out.VersionId) != v1 {
		t.Errorf("after the rule: %v, want version %s", err, v1)
	}
}
