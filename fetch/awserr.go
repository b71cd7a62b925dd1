package fetch

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
)

// transientCodes are AWS error codes that say "try again later" but are not
// in the SDK's retryable set: expired credentials are refreshed by the
// credential provider on the next attempt.
var transientCodes = map[string]bool{
	"ExpiredToken":          true,
	"ExpiredTokenException": true,
	"RequestExpired":        true,
	"InternalFailure":       true,
}

// Transient reports whether err may go away on its own: throttling, 5xx,
// timeouts, refused or dropped connections, expired credentials, and the
// SDK's client-side retry quota running dry.
func Transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var quota ratelimit.QuotaExceededError
	if errors.As(err, &quota) {
		return true
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && transientCodes[apiErr.ErrorCode()] {
		return true
	}
	return retry.IsErrorRetryables(retry.DefaultRetryables).IsErrorRetryable(err) == aws.TrueTernary
}

// awsError is an AWS error explained for the person who must act on it.
type awsError struct {
	err    error
	action string // the IAM action that was denied, if any
}

func (e *awsError) Error() string {
	if e.action != "" {
		return fmt.Sprintf("access denied: allow %s to this role (%v)", e.action, e.err)
	}
	return e.err.Error()
}

func (e *awsError) Unwrap() error { return e.err }

// explain names the IAM action behind an AccessDenied error, so the message
// says what policy to fix rather than only that something was refused. A
// denied KMS key surfaces through SSM or Secrets Manager as AccessDenied
// with "KMS" in the message; the action to allow is then kms:Decrypt.
func explain(err error) error {
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || !strings.Contains(apiErr.ErrorCode(), "AccessDenied") {
		return err
	}
	msg := apiErr.ErrorMessage()
	if strings.Contains(strings.ToLower(msg), "kms") {
		return &awsError{err: err, action: "kms:Decrypt"}
	}
	var opErr *smithy.OperationError
	if errors.As(err, &opErr) {
		return &awsError{err: err, action: iamPrefix(opErr.ServiceID) + opErr.OperationName}
	}
	return err
}

// iamPrefix turns an SDK service ID into the IAM action prefix.
func iamPrefix(serviceID string) string {
	switch serviceID {
	case "Secrets Manager":
		return "secretsmanager:"
	default:
		return strings.ToLower(strings.ReplaceAll(serviceID, " ", "")) + ":"
	}
}

// errorCode is the AWS error code inside err, for logs: ThrottlingException,
// AccessDeniedException. Empty for errors that carry none.
func errorCode(err error) string {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode()
	}
	return ""
}
