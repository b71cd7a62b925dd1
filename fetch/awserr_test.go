package fetch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go/middleware"
)

// rewritingProxy is a reverse proxy in front of moto that hands every real
// answer to rewrite, which may change its status, headers and body.
func rewritingProxy(t *testing.T, rewrite func(resp *http.Response, body []byte) []byte) string {
	t.Helper()
	target, err := url.Parse(moto.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		body = rewrite(resp, body)
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return srv.URL
}

// garble turns moto's GetParameters answer, whose first parameter's value
// is v, into one that a broken or hostile endpoint could send.
type garble func(resp *http.Response, answer map[string]any, v string) []byte

func errorAnswer(resp *http.Response, status int, code, msg string) []byte {
	resp.StatusCode = status
	resp.Header.Set("X-Amzn-ErrorType", code)
	b, _ := json.Marshal(map[string]string{"__type": code, "message": msg})
	return b
}

func TestSanitizeErrorsKeepsAnswersOutOfErrors(t *testing.T) {
	// A numeric value is what the SDK quotes when it cannot decode a
	// number ("parsing \"98765...\": value out of range").
	name, numeric := "/"+uniq(t)+"/n", "98765432109876543210987"
	moto.PutParameter(t, name, numeric, "SecureString")
	secretName, secret := "/"+uniq(t)+"/s", "zqv_sanitise_"+uniq(t)
	moto.PutParameter(t, secretName, secret, "SecureString")

	const reqID = "0f8fad5b-d9cb-469f-a165-70867728950e"
	for _, tc := range []struct {
		name   string
		param  string
		garble garble
		// want is in the sanitised error; leaks says the SDK's own error
		// holds the value, so that the case proves something.
		want      []string
		code      string
		transient bool
		leaks     bool
	}{
		{"denial quoting the value", secretName, func(resp *http.Response, _ map[string]any, v string) []byte {
			resp.Header.Set("X-Amzn-Requestid", reqID)
			return errorAnswer(resp, 400, "AccessDeniedException", "not authorized to use KMS key for "+v)
		}, []string{"HTTP 400", "AccessDeniedException: access denied by KMS", "request id " + reqID, "access denied: allow kms:Decrypt"}, "AccessDeniedException", false, true},
		{"value as the error code", secretName, func(resp *http.Response, _ map[string]any, v string) []byte {
			return errorAnswer(resp, 400, v, v)
		}, []string{"HTTP 400", "unrecognised error code"}, "", false, true},
		{"value as the request id", secretName, func(resp *http.Response, _ map[string]any, v string) []byte {
			resp.Header.Set("X-Amzn-Requestid", v)
			return errorAnswer(resp, 400, "ThrottlingException", v)
		}, []string{"ThrottlingException: rate exceeded"}, "ThrottlingException", true, true},
		{"modelled error quoting the value", secretName, func(resp *http.Response, _ map[string]any, v string) []byte {
			return errorAnswer(resp, 500, "InternalServerError", v)
		}, []string{"HTTP 500", "InternalServerError: the service failed"}, "InternalServerError", true, true},
		{"number that does not fit the version", name, func(resp *http.Response, a map[string]any, v string) []byte {
			b, _ := json.Marshal(a)
			return bytes.Replace(b, []byte(`"Version":1`), []byte(`"Version":`+v), 1)
		}, []string{"HTTP 200", "could not be decoded"}, "", false, true},
		{"value where the version is", secretName, func(resp *http.Response, a map[string]any, v string) []byte {
			a["Parameters"].([]any)[0].(map[string]any)["Version"] = v
			b, _ := json.Marshal(a)
			return b
		}, []string{"HTTP 200", "could not be decoded"}, "", false, true},
		{"not JSON at all", secretName, func(resp *http.Response, _ map[string]any, v string) []byte {
			return []byte(v + `{"`)
		}, []string{"HTTP 200", "could not be decoded"}, "", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			endpoint := rewritingProxy(t, func(resp *http.Response, body []byte) []byte {
				var a map[string]any
				if json.Unmarshal(body, &a) != nil || a["Parameters"] == nil {
					return body
				}
				v := a["Parameters"].([]any)[0].(map[string]any)["Value"].(string)
				return tc.garble(resp, a, v)
			})
			value := secret
			if tc.param == name {
				value = numeric
			}
			call := func(sanitise bool) error {
				cfg := moto.Config(context.Background())
				cfg.BaseEndpoint = aws.String(endpoint)
				cfg.Retryer = func() aws.Retryer { return aws.NopRetryer{} }
				if sanitise {
					cfg.APIOptions = []func(*middleware.Stack) error{sanitizeErrors}
				}
				_, _, err := getParameters(t.Context(), ssm.NewFromConfig(cfg), []string{tc.param}, true)
				if err == nil {
					t.Fatal("the garbled answer was accepted")
				}
				return err
			}
			if raw := call(false); tc.leaks != strings.Contains(raw.Error(), value) {
				t.Errorf("without sanitising, leak = %v, want %v: %v", !tc.leaks, tc.leaks, raw)
			}
			err := call(true)
			msg := err.Error()
			if strings.Contains(msg, value) {
				t.Fatalf("sanitised error holds the value: %s", msg)
			}
			for _, w := range append(tc.want, "operation error SSM: GetParameters") {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q: %s", w, msg)
				}
			}
			if got := errorCode(err); got != tc.code {
				t.Errorf("code %q, want %q (%s)", got, tc.code, msg)
			}
			if got := Transient(err); got != tc.transient {
				t.Errorf("Transient = %v, want %v (%s)", got, tc.transient, msg)
			}
		})
	}
}

// A modelled error keeps its code, which the sources act on, and an
// answer that never comes stays the timeout it is.
func TestSanitizeErrorsKeepsWhatPollingNeeds(t *testing.T) {
	cfg := moto.Config(context.Background())
	cfg.Retryer = func() aws.Retryer { return aws.NopRetryer{} }
	cfg.APIOptions = []func(*middleware.Stack) error{sanitizeErrors}
	_, err := ssm.NewFromConfig(cfg).GetParameter(t.Context(), &ssm.GetParameterInput{Name: aws.String("/" + uniq(t) + "/absent")})
	if errorCode(err) != "ParameterNotFound" || !strings.Contains(err.Error(), "HTTP 400, ParameterNotFound: parameter not found") {
		t.Errorf("got code %q: %v", errorCode(err), err)
	}

	// Accepts and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	cfg.BaseEndpoint = aws.String("http://" + ln.Addr().String())
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err = ssm.NewFromConfig(cfg).GetParameters(ctx, &ssm.GetParametersInput{Names: []string{"/x"}})
	if !errors.Is(err, context.DeadlineExceeded) || !Transient(err) {
		t.Errorf("a hung call gave %v, want a transient deadline error", err)
	}
}
