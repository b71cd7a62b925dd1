package faultproxy

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/paramexec/paramexec/internal/motoserver"
)

var moto *motoserver.Server

func TestMain(m *testing.M) { os.Exit(motoserver.Main(m, &moto)) }

func newProxy(t *testing.T) *Proxy {
	t.Helper()
	p, err := Start(moto.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// Retries are off so that every SDK call is exactly one request.
func ssmClient(t *testing.T, p *Proxy) *ssm.Client {
	return ssm.NewFromConfig(moto.Config(t.Context()), func(o *ssm.Options) {
		o.BaseEndpoint = aws.String(p.URL())
		o.Retryer = aws.NopRetryer{}
	})
}

func smClient(t *testing.T, p *Proxy) *secretsmanager.Client {
	return secretsmanager.NewFromConfig(moto.Config(t.Context()), func(o *secretsmanager.Options) {
		o.BaseEndpoint = aws.String(p.URL())
		o.Retryer = aws.NopRetryer{}
	})
}

// apiError returns the error code, HTTP status and message the SDK saw.
func apiError(t *testing.T, err error) (code string, status int, msg string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v is not an API error", err)
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	return ae.ErrorCode(), status, ae.ErrorMessage()
}

func getByPath(t *testing.T, c *ssm.Client) error {
	_, err := c.GetParametersByPath(t.Context(), &ssm.GetParametersByPathInput{Path: aws.String("/app"), WithDecryption: aws.Bool(true)})
	return err
}

func TestForwardsAndCounts(t *testing.T) {
	moto.Reset()
	moto.PutParameter(t, "/app/a", "va", "String")
	moto.PutParameter(t, "/app/b", "vb", "SecureString")
	moto.CreateSecret(t, "s1", "sv")
	p := newProxy(t)
	c, sm := ssmClient(t, p), smClient(t, p)
	ctx := t.Context()

	got, err := c.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/app/b"), WithDecryption: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(got.Parameter.Value) != "vb" {
		t.Error("GetParameter through the proxy returned a different value")
	}
	if _, err := c.GetParameters(ctx, &ssm.GetParametersInput{Names: []string{"/app/a", "/app/b"}, WithDecryption: aws.Bool(false)}); err != nil {
		t.Fatal(err)
	}
	byPath, err := c.GetParametersByPath(ctx, &ssm.GetParametersByPathInput{Path: aws.String("/app"), WithDecryption: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	if len(byPath.Parameters) != 2 {
		t.Errorf("GetParametersByPath returned %d parameters, want 2", len(byPath.Parameters))
	}
	if _, err := c.GetParameters(ctx, &ssm.GetParametersInput{Names: []string{"/app/a"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("s1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := sm.BatchGetSecretValue(ctx, &secretsmanager.BatchGetSecretValueInput{SecretIdList: []string{"s1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := sm.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String("s1")}); err != nil {
		t.Fatal(err)
	}

	n := p.Counts()
	want := map[string]int{
		"ssm:GetParameter": 1, "ssm:GetParameters": 2, "ssm:GetParametersByPath": 1,
		"secretsmanager:GetSecretValue": 1, "secretsmanager:BatchGetSecretValue": 1, "secretsmanager:DescribeSecret": 1,
	}
	for op, w := range want {
		if n.ByOp[op] != w {
			t.Errorf("ByOp[%s] = %d, want %d (all: %v)", op, n.ByOp[op], w, n.ByOp)
		}
	}
	if len(n.ByOp) != len(want) {
		t.Errorf("ByOp has unexpected operations: %v", n.ByOp)
	}
	if n.Decrypting != 2 || n.SecretValues != 2 || n.Total != 7 || n.Forwarded != 7 || n.Faulted != 0 || n.Throttled != 0 {
		t.Errorf("counts %+v, want Decrypting 2, SecretValues 2, Total 7, Forwarded 7", n)
	}

	// Counts is a copy.
	n.ByOp["ssm:GetParameter"] = 100
	if p.Counts().ByOp["ssm:GetParameter"] != 1 {
		t.Error("changing the returned Counts changed the proxy's")
	}
	p.ResetCounts()
	if n := p.Counts(); n.Total != 0 || len(n.ByOp) != 0 || n.Decrypting != 0 {
		t.Errorf("after ResetCounts: %+v", n)
	}
}

func TestErrorFaultsAsSeenBySDK(t *testing.T) {
	moto.Reset()
	for _, tc := range []struct {
		rule       Rule
		code       string
		status     int
		msgContain []string
	}{
		{Rule{Fault: Throttle}, "ThrottlingException", 400, []string{"Rate exceeded"}},
		{Rule{Fault: ServerError}, "InternalServerError", 500, nil},
		{Rule{Fault: Unavailable}, "ServiceUnavailable", 503, nil},
		{Rule{Fault: AccessDenied}, "AccessDeniedException", 400, []string{
			"User: arn:aws:sts::123456789012:assumed-role/test/x is not authorized to perform: ssm:GetParametersByPath on resource: arn:aws:ssm:us-east-1:123456789012:parameter/app",
			"because no identity-based policy allows the ssm:GetParametersByPath action",
		}},
		{Rule{Fault: KMSAccessDenied}, "AccessDeniedException", 400, []string{"not authorized to perform: kms:Decrypt", "arn:aws:kms:us-east-1:"}},
		{Rule{Fault: ExpiredToken}, "ExpiredTokenException", 400, []string{"expired"}},
		{Rule{Fault: CustomError, Code: "InvalidKeyId", Status: 400, Message: "custom words"}, "InvalidKeyId", 400, []string{"custom words"}},
		{Rule{Fault: CustomError}, "CustomError", 400, nil},
		{Rule{Fault: Throttle, Message: "Slow down"}, "ThrottlingException", 400, []string{"Slow down"}},
	} {
		t.Run(tc.rule.Fault.String()+tc.rule.Code, func(t *testing.T) {
			p := newProxy(t)
			tc.rule.Op = "ssm:GetParametersByPath"
			p.Inject(tc.rule)
			code, status, msg := apiError(t, getByPath(t, ssmClient(t, p)))
			if code != tc.code || status != tc.status {
				t.Errorf("SDK saw %s (HTTP %d), want %s (HTTP %d)", code, status, tc.code, tc.status)
			}
			for _, s := range tc.msgContain {
				if !strings.Contains(msg, s) {
					t.Errorf("message %q lacks %q", msg, s)
				}
			}
			n := p.Counts()
			if n.ByOp["ssm:GetParametersByPath"] != 1 || n.Faulted != 1 || n.Forwarded != 0 || n.Decrypting != 1 {
				t.Errorf("counts %+v, want the faulted request counted once and not forwarded", n)
			}
			if wantThrottled := tc.rule.Fault == Throttle; (n.Throttled == 1) != wantThrottled {
				t.Errorf("Throttled = %d for %v", n.Throttled, tc.rule.Fault)
			}
		})
	}
}

// A CustomError with a modelled code must come out as the SDK's typed error.
func TestCustomErrorIsModelledError(t *testing.T) {
	p := newProxy(t)
	p.Inject(Rule{Op: "ssm:GetParameter", Fault: CustomError, Code: "ParameterNotFound"})
	_, err := ssmClient(t, p).GetParameter(t.Context(), &ssm.GetParameterInput{Name: aws.String("/x")})
	var nf *ssmtypes.ParameterNotFound
	if !errors.As(err, &nf) {
		t.Errorf("got %v, want *types.ParameterNotFound", err)
	}
}

func TestSecretsManagerFaults(t *testing.T) {
	moto.Reset()
	p := newProxy(t)
	sm := smClient(t, p)
	get := func() error {
		_, err := sm.GetSecretValue(t.Context(), &secretsmanager.GetSecretValueInput{SecretId: aws.String("db-password")})
		return err
	}
	for _, tc := range []struct {
		fault  Fault
		code   string
		status int
		msg    string
	}{
		{Throttle, "ThrottlingException", 400, "Rate exceeded"},
		{ServerError, "InternalServiceError", 500, ""},
		{AccessDenied, "AccessDeniedException", 400, "not authorized to perform: secretsmanager:GetSecretValue on resource: db-password because no identity-based policy allows the secretsmanager:GetSecretValue action"},
		{KMSAccessDenied, "AccessDeniedException", 400, "KMS"},
	} {
		p.Inject(Rule{Op: "secretsmanager:GetSecretValue", Fault: tc.fault, Times: 1})
		code, status, msg := apiError(t, get())
		if code != tc.code || status != tc.status || !strings.Contains(msg, tc.msg) {
			t.Errorf("%v: SDK saw %s (HTTP %d) %q, want %s (HTTP %d) containing %q", tc.fault, code, status, msg, tc.code, tc.status, tc.msg)
		}
	}
	if n := p.Counts(); n.SecretValues != 4 || n.Faulted != 4 {
		t.Errorf("counts %+v, want 4 secret-value requests, all faulted", n)
	}
}

func TestThrottleIsRetriedBySDK(t *testing.T) {
	moto.Reset()
	moto.PutParameter(t, "/app/a", "va", "String")
	p := newProxy(t)
	p.Inject(Rule{Op: "ssm:GetParametersByPath", Fault: Throttle, Times: 2})
	c := ssm.NewFromConfig(moto.Config(t.Context()), func(o *ssm.Options) {
		o.BaseEndpoint = aws.String(p.URL())
		o.Retryer = retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = 3
			o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
		})
	})
	if err := getByPath(t, c); err != nil {
		t.Fatalf("SDK did not retry past two throttles: %v", err)
	}
	if n := p.Counts(); n.ByOp["ssm:GetParametersByPath"] != 3 || n.Throttled != 2 || n.Forwarded != 1 {
		t.Errorf("counts %+v, want 3 requests: 2 throttled, 1 forwarded", n)
	}
}

func TestDropIsConnectionError(t *testing.T) {
	p := newProxy(t)
	p.Inject(Rule{Fault: Drop})
	err := getByPath(t, ssmClient(t, p))
	if err == nil {
		t.Fatal("dropped request succeeded")
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		t.Errorf("dropped request surfaced as API error %s", ae.ErrorCode())
	}
	var se *smithyhttp.RequestSendError
	if !errors.As(err, &se) {
		t.Errorf("dropped request: %v, want a RequestSendError", err)
	}
	if n := p.Counts(); n.Total != 1 || n.Faulted != 1 {
		t.Errorf("counts %+v", n)
	}
}

func TestHangUntilClientGivesUp(t *testing.T) {
	p := newProxy(t)
	p.Inject(Rule{Op: "ssm:GetParametersByPath", Fault: Hang})
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err := ssmClient(t, p).GetParametersByPath(ctx, &ssm.GetParametersByPathInput{Path: aws.String("/app")})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hung request ended with %v, want the client's deadline", err)
	}
}

func TestCloseReleasesHungRequest(t *testing.T) {
	p := newProxy(t)
	p.Inject(Rule{Fault: Hang})
	errc := make(chan error, 1)
	go func() { errc <- getByPath(t, ssmClient(t, p)) }()
	waitFor(t, func() bool { return p.Counts().Total == 1 })
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err == nil {
			t.Error("hung request succeeded after Close")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not release the hung request")
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestDelayThenForward(t *testing.T) {
	moto.Reset()
	moto.PutParameter(t, "/app/a", "va", "String")
	p := newProxy(t)
	const delay = 200 * time.Millisecond
	p.Inject(Rule{Op: "ssm:GetParametersByPath", Fault: Delay, Delay: delay})
	start := time.Now()
	if err := getByPath(t, ssmClient(t, p)); err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed < delay {
		t.Errorf("delayed request answered after %v, before the %v delay", elapsed, delay)
	}
	if n := p.Counts(); n.Faulted != 1 || n.Forwarded != 1 {
		t.Errorf("counts %+v, want the delayed request faulted and forwarded", n)
	}
}

func TestTimesOpFilterRemoveClear(t *testing.T) {
	moto.Reset()
	moto.PutParameter(t, "/app/a", "va", "String")
	p := newProxy(t)
	c := ssmClient(t, p)
	get := func() error {
		_, err := c.GetParameter(t.Context(), &ssm.GetParameterInput{Name: aws.String("/app/a")})
		return err
	}
	isThrottle := func(err error) bool {
		var ae smithy.APIError
		return errors.As(err, &ae) && ae.ErrorCode() == "ThrottlingException"
	}

	p.Inject(Rule{Op: "ssm:GetParameters", Fault: Throttle}) // another operation
	p.Inject(Rule{Op: "ssm:GetParameter", Fault: Throttle, Times: 2})
	for i := range 2 {
		if err := get(); !isThrottle(err) {
			t.Fatalf("call %d: %v, want throttled", i+1, err)
		}
	}
	if err := get(); err != nil {
		t.Fatalf("call after Times ran out: %v", err)
	}

	remove := p.Inject(Rule{Op: "ssm:GetParameter", Fault: ServerError})
	if err := get(); err == nil {
		t.Fatal("unlimited rule did not fire")
	}
	remove()
	remove()
	if err := get(); err != nil {
		t.Fatalf("after remove: %v", err)
	}

	p.Inject(Rule{Fault: Unavailable})
	if err := get(); err == nil {
		t.Fatal(`rule with Op "" did not match`)
	}
	p.Clear()
	if err := get(); err != nil {
		t.Fatalf("after Clear: %v", err)
	}
	if _, err := c.GetParameters(t.Context(), &ssm.GetParametersInput{Names: []string{"/app/a"}}); err != nil {
		t.Fatalf("after Clear, GetParameters: %v", err)
	}
}

func TestProbability(t *testing.T) {
	p := newProxy(t)
	c := ssmClient(t, p)
	p.Inject(Rule{Fault: Throttle, Probability: 0.5})
	const n = 60
	for range n {
		c.DescribeParameters(t.Context(), &ssm.DescribeParametersInput{})
	}
	// A fair coin gives all-or-nothing in 60 tosses with odds of 2^-59.
	if got := p.Counts(); got.Faulted == 0 || got.Faulted == n || got.Faulted+got.Forwarded != n {
		t.Errorf("counts %+v: a 0.5 rule should hit some of %d requests, not all or none", got, n)
	}
}

func TestRateLimit(t *testing.T) {
	moto.Reset()
	p := newProxy(t)
	c := ssmClient(t, p)
	// Slow enough that no token comes back during the test.
	p.RateLimit(0.001, 3)
	var throttled int
	for range 5 {
		err := getByPath(t, c)
		if err == nil {
			continue
		}
		if code, status, msg := apiError(t, err); code != "ThrottlingException" || status != 400 || msg != "Rate exceeded" {
			t.Fatalf("over the limit: %s (HTTP %d) %q", code, status, msg)
		}
		throttled++
	}
	if n := p.Counts(); throttled != 2 || n.Throttled != 2 || n.Forwarded != 3 || n.Faulted != 0 {
		t.Errorf("%d throttled, counts %+v; want 3 of 5 through a bucket of 3", throttled, n)
	}
	p.RateLimit(0, 0)
	for range 5 {
		if err := getByPath(t, c); err != nil {
			t.Fatalf("rate limit off: %v", err)
		}
	}
}

func TestBucketRefills(t *testing.T) {
	now := time.Unix(1000, 0)
	b := bucket{tps: 2, burst: 2, tokens: 2, last: now}
	// takes asks for n tokens at the current time and counts those given.
	takes := func(n int) (given int) {
		for range n {
			if b.take(now) {
				given++
			}
		}
		return given
	}
	if got := takes(3); got != 2 {
		t.Fatalf("a full bucket of 2 gave %d of 3 tokens, want exactly 2", got)
	}
	now = now.Add(500 * time.Millisecond) // one token at 2/s
	if got := takes(2); got != 1 {
		t.Fatalf("half a second at 2/s gave back %d tokens, want exactly 1", got)
	}
	now = now.Add(time.Hour)
	if got := takes(3); got != 2 {
		t.Fatalf("after an hour the bucket gave %d tokens, want its burst of 2", got)
	}
}

func TestConcurrentClientsAndRuleChanges(t *testing.T) {
	moto.Reset()
	moto.PutParameter(t, "/app/a", "va", "String")
	p := newProxy(t)
	p.Inject(Rule{Op: "ssm:GetParameter", Fault: Throttle, Times: 10})
	const workers, calls = 6, 15

	stop := make(chan struct{})
	churned := make(chan struct{})
	go func() { // rules come and go while requests flow
		defer close(churned)
		for {
			select {
			case <-stop:
				return
			default:
			}
			remove := p.Inject(Rule{Op: "ssm:DeleteParameter", Fault: Drop})
			p.Counts()
			remove()
		}
	}()

	var mu sync.Mutex
	throttled := 0
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			c := ssmClient(t, p)
			for range calls {
				_, err := c.GetParameter(t.Context(), &ssm.GetParameterInput{Name: aws.String("/app/a")})
				if err == nil {
					continue
				}
				var ae smithy.APIError
				if !errors.As(err, &ae) || ae.ErrorCode() != "ThrottlingException" {
					t.Errorf("unexpected error: %v", err)
					continue
				}
				mu.Lock()
				throttled++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(stop)
	<-churned
	n := p.Counts()
	if throttled != 10 || n.Faulted != 10 || n.Total != workers*calls || n.Forwarded != workers*calls-10 {
		t.Errorf("clients saw %d throttles, counts %+v; want exactly 10 of %d", throttled, n, workers*calls)
	}
}

func TestOpName(t *testing.T) {
	for target, want := range map[string]string{
		"AmazonSSM.GetParametersByPath":           "ssm:GetParametersByPath",
		"secretsmanager.GetSecretValue":           "secretsmanager:GetSecretValue",
		"secretsmanager.BatchGetSecretValue":      "secretsmanager:BatchGetSecretValue",
		"TrentService.Decrypt":                    "trentservice:Decrypt",
		"":                                        "POST /moto-api/reset",
		"AmazonSSM.GetParameters":                 "ssm:GetParameters",
		"AWSSecretsManager.nonsense-without-dots": "awssecretsmanager:nonsense-without-dots",
	} {
		r, _ := http.NewRequest(http.MethodPost, "http://x/moto-api/reset", nil)
		if target != "" {
			r.Header.Set("X-Amz-Target", target)
		}
		if got := opName(r); got != want {
			t.Errorf("opName(%q) = %q, want %q", target, got, want)
		}
	}
}

func TestInjectRejectsUnknownFault(t *testing.T) {
	p := newProxy(t)
	defer func() {
		if recover() == nil {
			t.Error("Inject accepted the zero Fault")
		}
	}()
	p.Inject(Rule{})
}

func TestStartRejectsBadTarget(t *testing.T) {
	for _, target := range []string{"", "127.0.0.1:1", "ftp://x"} {
		if p, err := Start(target); err == nil {
			p.Close()
			t.Errorf("Start(%q) accepted", target)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
