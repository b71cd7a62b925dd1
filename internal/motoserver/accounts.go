package motoserver

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// AccountHeader is the request header that makes moto serve a request as
// the account it names; without it, moto serves the credentials' account
// (DefaultAccount for the dummy keys the tests use).
const AccountHeader = "x-moto-account-id"

// DefaultAccount is the account moto serves requests without AccountHeader as.
const DefaultAccount = "123456789012"

// SSMAs is an SSM client of this server that acts as account, for seeding
// another account's parameters: moto keeps one backend per account.
func (s *Server) SSMAs(account string) *ssm.Client {
	return ssm.NewFromConfig(s.Config(context.Background()), func(o *ssm.Options) {
		o.APIOptions = append(o.APIOptions, smithyhttp.SetHeaderValue(AccountHeader, account))
	})
}

// PutParameterIn creates or overwrites parameter name in account, on tier
// ("Standard" or "Advanced"; only advanced parameters can be shared).
func (s *Server) PutParameterIn(t testing.TB, account, name, value, typ, tier string) {
	t.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	_, err := s.SSMAs(account).PutParameter(ctx, &ssm.PutParameterInput{
		Name:      aws.String(name),
		Value:     aws.String(value),
		Type:      ssmtypes.ParameterType(typ),
		Tier:      ssmtypes.ParameterTier(tier),
		Overwrite: aws.Bool(true),
	})
	if err != nil {
		t.Fatalf("put parameter %s (%s) in account %s: %s", name, typ, account, redact(err, value))
	}
}

// DeleteParameterIn deletes parameter name of account; it fails the test
// if there is none.
func (s *Server) DeleteParameterIn(t testing.TB, account, name string) {
	t.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	if _, err := s.SSMAs(account).DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String(name)}); err != nil {
		t.Fatalf("delete parameter %s in account %s: %v", name, account, err)
	}
}
