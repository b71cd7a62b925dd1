package fetch

import (
	"errors"
	"fmt"
)

// acrossAccounts adds to a denied read of a secret named by ARN what
// another account's secret needs besides this role's own permission, since
// paramexec cannot tell the caller's account without a call of its own:
// a denial of the action itself points at the secret's resource policy, a
// KMS denial at the key, which must be a customer managed key (the AWS
// managed aws/secretsmanager key cannot be used from another account).
// Other errors, and secrets named by name (always the caller's account),
// pass unchanged.
func acrossAccounts(id string, err error) error {
	a, isARN := parseARN(id)
	var denied *awsError
	if !isARN || !errors.As(err, &denied) || denied.action == "" {
		return err
	}
	if denied.action == "kms:Decrypt" {
		return fmt.Errorf("%w; if account %s is not this role's, the secret must be encrypted with a customer managed KMS key whose key policy lets this account use kms:Decrypt (aws/secretsmanager cannot be used across accounts)", err, a.AccountID)
	}
	return fmt.Errorf("%w; if account %s is not this role's, the secret's resource policy must also allow this role %s", err, a.AccountID, denied.action)
}
