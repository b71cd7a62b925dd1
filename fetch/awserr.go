package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
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

// credentialsError is a call that failed because the SDK's default chain
// found no credentials and fell through to the instance metadata service,
// which had none either (off EC2, or an instance without a role). The SDK's
// text says only that; this says what to set, as the region message does.
type credentialsError struct{ err error }

func (e *credentialsError) Error() string {
	return fmt.Sprintf("no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give the task or instance an IAM role (instance metadata, asked because nothing else is set, gave none: %v)", e.err)
}

func (e *credentialsError) Unwrap() error { return e.err }

// withCredentialsHint marks err as a credentialsError when a call failed
// on the instance metadata service, inside a call to another service: the
// only way the default chain reaches it for a call is in search of
// credentials (the Region lookup is not a call of a source).
func withCredentialsHint(err error) error {
	var outer *smithy.OperationError
	if !errors.As(err, &outer) || outer.ServiceID == "ec2imds" {
		return err
	}
	for e := outer.Err; e != nil; e = errors.Unwrap(e) {
		if op, ok := e.(*smithy.OperationError); ok && op.ServiceID == "ec2imds" {
			return &credentialsError{err: err}
		}
	}
	return err
}

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

// sanitizeErrors is an SDK API option (aws.Config.APIOptions) that keeps
// every word of an AWS answer's body out of the errors paramexec sees. It
// is the one place AWS errors enter paramexec: added to the Config that
// every client is made from, it also runs in the clients the SDK makes for
// itself from that Config (container credentials, instance metadata, STS).
//
// The SDK quotes answers in its errors: an error message, an error code, a
// token that failed to decode ("cannot unmarshal number 123456 into ..."),
// a field that held the wrong kind of text. A broken or hostile endpoint,
// or a proxy in between, could so put a secret into a log line. What
// survives of an answer that came back is only what paramexec can vouch
// for: the HTTP status; the error code when it is one of the operation's
// modelled errors (the SDK matched it against a literal) or a well-known
// AWS code (knownCodes); a fixed message of our own for well-known codes;
// the request id when it has the UUID shape AWS uses; whether the SDK would
// retry it; and a timeout or dropped connection while reading it. The
// operation and service come from paramexec's own call. An error without
// an answer (a refused connection, a timeout, a local configuration
// problem) holds no answer text and passes unchanged.
func sanitizeErrors(stack *middleware.Stack) error {
	// First in the Deserialize step: it sees what every deserializer of the
	// attempt produced, and nothing of it reaches the retry, signing or
	// operation layers above.
	return stack.Deserialize.Add(middleware.DeserializeMiddlewareFunc("paramexec.SanitizeErrors",
		func(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (middleware.DeserializeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleDeserialize(ctx, in)
			if err == nil {
				return out, md, nil
			}
			resp, ok := out.RawResponse.(*smithyhttp.Response)
			if !ok || resp == nil || resp.Response == nil || resp.StatusCode == 0 {
				// No answer came back: the SDK stands a zero response in for
				// the one it did not get.
				return out, md, err
			}
			return out, md, sanitize(resp.StatusCode, resp.Header.Get("X-Amzn-Requestid"), err)
		}), middleware.Before)
}

// vouchErrors is an SDK API option, the door every error of an SDK call
// passes on its way into paramexec: first in the Initialize step, it sees
// what every later step made of the call (the answer, the credentials, the
// signing, the send) before the client wraps it in an OperationError of
// paramexec's own service and operation. What it lets through is only an
// error whose text is paramexec's or the SDK's fixed words around things
// that are not secret (see vouch); everything else becomes a fixed text.
// Like sanitizeErrors, it also runs in the clients the SDK makes for
// itself from the Config, so that an STS or SSO call made for credentials
// is vouched for before the credential provider wraps it.
func vouchErrors(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("paramexec.VouchErrors",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleInitialize(ctx, in)
			return out, md, vouch(err)
		}), middleware.Before)
}

// vouch keeps of err the one part of it paramexec can vouch for, dropping
// the SDK's wrapping around it: a credential failure told in our words
// (credentialsFailure), an answer reduced by sanitizeErrors, a request that
// could not be sent (a URL and a network error), a call cut short, a
// rejected input (field names only) or the retry quota. Any other error,
// whatever wrote it, is replaced: its text might quote a credential_process
// output, a token file or a configuration file.
func vouch(err error) error {
	var (
		creds    *credentialsFailure
		answer   *answerError
		send     *smithyhttp.RequestSendError
		canceled *smithy.CanceledError
		params   smithy.InvalidParamsError
		quota    ratelimit.QuotaExceededError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &creds):
		return creds
	case errors.As(err, &answer):
		return answer
	case errors.As(err, &send):
		return send
	case errors.As(err, &canceled):
		return canceled
	case errors.As(err, &params):
		return params
	case errors.As(err, &quota):
		return quota
	case errors.Is(err, context.DeadlineExceeded):
		return context.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return context.Canceled
	}
	return unvouchedError{}
}

// unvouchedError stands in for an SDK error paramexec cannot vouch for.
type unvouchedError struct{}

func (unvouchedError) Error() string {
	return "failed before any answer came (the AWS SDK's message is not shown: it may quote credentials or configuration)"
}

// answerError is what paramexec keeps of an error that came with an answer.
type answerError struct {
	status    int
	requestID string // empty unless UUID-shaped
	code      string // empty unless vouched for
	message   string // our own words, never the answer's
	retryable bool   // the SDK's verdict on the original error
	cause     error  // a timeout or dropped connection while reading, or nil
}

// sanitize reduces err, the SDK's error for an answer of the given status,
// to an answerError.
func sanitize(status int, requestID string, err error) *answerError {
	e := &answerError{
		status:    status,
		retryable: retry.IsErrorRetryables(retry.DefaultRetryables).IsErrorRetryable(err) == aws.TrueTernary,
	}
	if uuidShaped(requestID) {
		e.requestID = requestID
	}
	var apiErr smithy.APIError
	var generic *smithy.GenericAPIError
	switch {
	case errors.As(err, &generic):
		if knownCodes[generic.Code] {
			e.code = generic.Code
		}
	case errors.As(err, &apiErr):
		// A modelled error: the SDK made this type only because the code
		// matched one of the operation's own error names.
		e.code = apiErr.ErrorCode()
	}
	if errors.As(err, &apiErr) {
		e.message = safeMessage(e.code, apiErr.ErrorMessage())
	} else {
		var de *smithy.DeserializationError
		if errors.As(err, &de) {
			e.message = "the answer could not be decoded (its text is not shown: it may hold a value)"
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		e.cause = context.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		e.cause = context.Canceled
	case errors.Is(err, io.ErrUnexpectedEOF):
		e.cause = io.ErrUnexpectedEOF
	default:
		var opErr *net.OpError
		if errors.As(err, &opErr) {
			e.cause = opErr
		}
	}
	return e
}

func (e *answerError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP %d", e.status)
	switch {
	case e.code != "":
		b.WriteString(", " + e.code)
	case e.message == "" || e.status >= 300:
		b.WriteString(", unrecognised error code (not shown)")
	}
	if e.message != "" {
		b.WriteString(": " + e.message)
	}
	if e.cause != nil {
		b.WriteString(" (reading the answer: " + e.cause.Error() + ")")
	}
	if e.requestID != "" {
		b.WriteString(", request id " + e.requestID)
	}
	return b.String()
}

func (e *answerError) Unwrap() error { return e.cause }

// ErrorCode, ErrorMessage and ErrorFault make an answerError a
// smithy.APIError, so that code that tells errors apart by code works on
// it unchanged.
func (e *answerError) ErrorCode() string             { return e.code }
func (e *answerError) ErrorMessage() string          { return e.message }
func (e *answerError) ErrorFault() smithy.ErrorFault { return smithy.FaultUnknown }

// HTTPStatusCode and RetryableError carry what the SDK's retry rules
// (and Transient) look at.
func (e *answerError) HTTPStatusCode() int  { return e.status }
func (e *answerError) RetryableError() bool { return e.retryable }

// knownCodes are AWS error codes common to services, which arrive as the
// SDK's generic error rather than as a modelled one. Any other code in a
// generic error is dropped: it is text from the answer.
var knownCodes = map[string]bool{
	"AccessDenied": true, "AccessDeniedException": true, "NotAuthorized": true,
	"ThrottlingException": true, "Throttling": true, "ThrottledException": true,
	"RequestThrottled": true, "RequestThrottledException": true, "TooManyRequestsException": true,
	"RequestLimitExceeded": true, "LimitExceededException": true, "SlowDown": true,
	"EC2ThrottledException": true, "PriorRequestNotComplete": true, "TransactionInProgressException": true,
	"ServiceUnavailable": true, "ServiceUnavailableException": true, "ServiceUnavailableError": true,
	"InternalFailure": true, "InternalError": true, "InternalServerError": true, "InternalServiceError": true,
	"RequestTimeout": true, "RequestTimeoutException": true,
	"ExpiredToken": true, "ExpiredTokenException": true, "RequestExpired": true,
	"UnrecognizedClientException": true, "InvalidClientTokenId": true, "InvalidSignatureException": true,
	"SignatureDoesNotMatch": true, "IncompleteSignature": true, "MissingAuthenticationToken": true,
	"InvalidAction": true, "UnknownOperationException": true, "ValidationException": true,
	"OptInRequired": true, "UnknownError": true,
}

// safeMessage is our own wording for well-known codes. raw, the answer's
// message, is only looked at, never kept: an access denial that names KMS
// is a key policy to fix, not a role's.
func safeMessage(code, raw string) string {
	switch code {
	case "AccessDenied", "AccessDeniedException", "NotAuthorized":
		if strings.Contains(strings.ToLower(raw), "kms") {
			return "access denied by KMS"
		}
		return "access denied"
	case "ThrottlingException", "Throttling", "ThrottledException", "RequestThrottled",
		"RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded", "SlowDown":
		return "rate exceeded"
	case "ExpiredToken", "ExpiredTokenException", "RequestExpired":
		return "the credentials or the request have expired"
	case "UnrecognizedClientException", "InvalidClientTokenId":
		return "the credentials are not valid"
	case "InvalidSignatureException", "SignatureDoesNotMatch", "IncompleteSignature":
		return "the request signature does not match (wrong secret key, or a skewed clock)"
	case "ServiceUnavailable", "ServiceUnavailableException", "InternalFailure", "InternalError",
		"InternalServerError", "InternalServiceError":
		return "the service failed"
	case "ParameterNotFound":
		return "parameter not found"
	case "ParameterVersionNotFound":
		return "parameter version not found"
	case "ResourceNotFoundException":
		return "not found"
	case "DecryptionFailure":
		return "the value could not be decrypted with its KMS key"
	}
	return ""
}

// uuidShaped reports whether s looks like the request ids AWS's JSON
// services send: 8-4-4-4-12 hex digits.
func uuidShaped(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
