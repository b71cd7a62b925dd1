package faultproxy

import (
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// The RAM stand-in lists only what is shared and advanced, by ARN and in
// pages; reads shared ARNs from the other account; reports an unshared ARN
// missing; and leaves every other request to moto.
func TestShare(t *testing.T) {
	const other = "210987654321"
	path := "/ram/" + t.Name()
	for _, n := range []string{"a", "b", "c"} {
		moto.PutParameterIn(t, other, path+"/"+n, "v-"+n, "String", "Advanced")
	}
	moto.PutParameterIn(t, other, path+"/std", "v-std", "String", "Standard")
	moto.PutParameterIn(t, other, path+"/unshared", "v-u", "String", "Advanced")
	p := newProxy(t)
	p.Share(other, path+"/a", path+"/b", path+"/c", path+"/std")
	p.SetSharePageSize(2)
	client := ssmClient(t, p)
	arn := func(n string) string { return "arn:aws:ssm:us-east-1:" + other + ":parameter" + path + "/" + n }

	var listed []string
	pages := 0
	pager := ssm.NewDescribeParametersPaginator(client, &ssm.DescribeParametersInput{
		Shared: aws.Bool(true),
		ParameterFilters: []ssmtypes.ParameterStringFilter{{
			Key: aws.String("Path"), Option: aws.String("Recursive"), Values: []string{path},
		}},
	})
	for pager.HasMorePages() {
		page, err := pager.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, m := range page.Parameters {
			if aws.ToString(m.Name) != aws.ToString(m.ARN) {
				t.Errorf("entry named %s with ARN %s; want both the ARN", aws.ToString(m.Name), aws.ToString(m.ARN))
			}
			listed = append(listed, aws.ToString(m.ARN))
		}
	}
	if want := []string{arn("a"), arn("b"), arn("c")}; !slices.Equal(listed, want) || pages != 2 {
		t.Errorf("listed %v in %d pages, want %v in 2", listed, pages, want)
	}

	out, err := client.GetParameters(t.Context(), &ssm.GetParametersInput{Names: []string{arn("a"), arn("unshared"), arn("gone")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Parameters) != 1 || aws.ToString(out.Parameters[0].Name) != arn("a") || aws.ToString(out.Parameters[0].Value) != "v-a" {
		t.Errorf("read %+v, want only a, named by its ARN", out.Parameters)
	}
	if slices.Sort(out.InvalidParameters); !slices.Equal(out.InvalidParameters, []string{arn("gone"), arn("unshared")}) {
		t.Errorf("invalid %v, want gone and unshared, by ARN", out.InvalidParameters)
	}

	p.Unshare(other, path+"/a")
	out, err = client.GetParameters(t.Context(), &ssm.GetParametersInput{Names: []string{arn("a")}})
	if err != nil || len(out.Parameters) != 0 || !slices.Equal(out.InvalidParameters, []string{arn("a")}) {
		t.Errorf("after Unshare: %+v, %v; want a invalid", out, err)
	}
	// The caller's own account is moto's, untouched.
	own, err := client.GetParameters(t.Context(), &ssm.GetParametersInput{Names: []string{path + "/a"}})
	if err != nil || len(own.Parameters) != 0 {
		t.Errorf("own account read %+v, %v; want nothing there", own, err)
	}
	if c := p.Counts(); c.ByOp["ssm:DescribeParameters"] != 2 || c.ByOp["ssm:GetParameters"] != 3 {
		t.Errorf("counts %v: each request counted once, the proxy's own calls to moto not at all", c.ByOp)
	}
}
