package values

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/paramexec/paramexec/internal/harness"
)

// garbler is a reverse proxy in front of moto that spoils real answers the
// way a broken or hostile endpoint could, putting the value the answer
// carries where the SDK quotes text in its errors. It answers truly while
// no mode is set.
type garbler struct {
	url  string
	mode atomic.Value // string; "" forwards answers as they are
	hits atomic.Int64 // answers spoilt
}

// The modes, each a place where the SDK's error would quote the value.
var garbleModes = []string{"denial", "code", "request-id", "version", "number"}

func startGarbler(t *testing.T) *garbler {
	t.Helper()
	target, err := url.Parse(harness.Moto.URL)
	if err != nil {
		t.Fatal(err)
	}
	g := &garbler{}
	g.mode.Store("")
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if spoilt, ok := g.spoil(resp, body); ok {
			body = spoilt
			g.hits.Add(1)
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	g.url = srv.URL
	return g
}

// spoil rewrites an answer that carries a value: a parameter's Value or a
// secret's SecretString.
func (g *garbler) spoil(resp *http.Response, body []byte) ([]byte, bool) {
	mode := g.mode.Load().(string)
	var a map[string]any
	if mode == "" || json.Unmarshal(body, &a) != nil {
		return nil, false
	}
	item, key := a, "SecretString"
	if ps, ok := a["Parameters"].([]any); ok && len(ps) > 0 {
		item, key = ps[0].(map[string]any), "Value"
	}
	v, ok := item[key].(string)
	if !ok {
		return nil, false
	}
	fail := func(status int, code, msg string) []byte {
		resp.StatusCode = status
		resp.Header.Set("X-Amzn-ErrorType", code)
		b, _ := json.Marshal(map[string]string{"__type": code, "message": msg})
		return b
	}
	switch mode {
	case "denial":
		return fail(400, "AccessDeniedException", "User is not authorized to read "+v), true
	case "code":
		return fail(400, v, v), true
	case "request-id":
		resp.Header.Set("X-Amzn-Requestid", v)
		return fail(400, "ThrottlingException", v), true
	case "version":
		// A string where a number belongs: the SDK quotes the string.
		item["Version"], item["CreatedDate"] = v, v
	case "number":
		// A value that is a number token where a string belongs.
		item[key] = json.Number("12345678901234567890123")
		item["Version"] = json.Number("98765432109876543210")
	}
	b, _ := json.Marshal(a)
	return b, true
}

// No text of a spoilt answer reaches the log, at start-up or while polling;
// the suite's log scan (logScan) checks the same for every run.
func TestGarbledAnswersNeverLogValues(t *testing.T) {
	harness.ParallelE2E(t)
	g := startGarbler(t)
	path := harness.UniquePath(t)
	value := harness.Val("garbled-" + strconv.FormatInt(int64(len(path)), 10))
	harness.Moto.PutParameter(t, path+"/TOKEN", value, "String")
	secret := harness.Moto.CreateSecret(t, strings.TrimPrefix(path, "/")+"-secret", harness.Val("secret-garbled"))
	leaks := func(stderr string) bool {
		return strings.Contains(stderr, harness.ValueMark) || strings.Contains(stderr, "12345678901234567890123") ||
			strings.Contains(stderr, "98765432109876543210")
	}

	t.Run("start-up", func(t *testing.T) {
		for _, mode := range garbleModes {
			for _, source := range [][]string{{"--path", path}, {"--secret", secret}} {
				g.mode.Store(mode)
				args, rec := harness.ChildArgs(t, "-exit", "0")
				r := harness.RunBinary(t, harness.BaseEnv(g.url), append(append(source, "--startup-timeout", "1s"), args...)...)
				if r.Code != harness.ExitSource || len(harness.ReadRecords(t, rec)) != 0 {
					t.Errorf("%s %v: exit %d (want %d, command not run); stderr:\n%s", mode, source, r.Code, harness.ExitSource, r.Stderr)
				}
				if leaks(r.Stderr) {
					t.Errorf("%s %v: the log holds text of the answer:\n%s", mode, source, r.Stderr)
				}
			}
		}
	})

	t.Run("polling", func(t *testing.T) {
		g.mode.Store("")
		args, rec := harness.ChildArgs(t)
		pe := harness.StartBinary(t, harness.BaseEnv(g.url), append([]string{"--path", path, "--secret", secret, "--interval", "1s"}, args...)...)
		harness.WaitStarts(t, rec, 1)
		for _, mode := range garbleModes {
			before := strings.Count(pe.Stderr.String(), "poll failed")
			g.mode.Store(mode)
			harness.WaitFor(t, "a failed poll on a "+mode+" answer", func() bool {
				return strings.Count(pe.Stderr.String(), "poll failed") > before
			})
		}
		g.mode.Store("")
		harness.WaitFor(t, "polling to recover", func() bool { return strings.Contains(pe.Stderr.String(), "poll recovered") })
		if n := len(harness.Starts(harness.ReadRecords(t, rec))); n != 1 {
			t.Errorf("%d child starts; a garbled answer must never restart the child", n)
		}
		pe.Signal(syscall.SIGTERM)
		pe.Wait()
		if leaks(pe.Stderr.String()) {
			t.Errorf("the log holds text of the answer:\n%s", pe.Stderr.String())
		}
		t.Logf("%d answers spoilt; stderr:\n%s", g.hits.Load(), pe.Stderr.String())
	})
}

// The SDK's own clients, made from the same configuration, are sanitised
// too: a credentials endpoint's error text never reaches the log.
func TestCredentialsAnswerNeverLogged(t *testing.T) {
	harness.ParallelE2E(t)
	creds := startHungServer(t)
	for _, answer := range []http.HandlerFunc{
		func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"code": harness.Val("creds-code"), "message": harness.Val("creds-message")})
		},
		func(w http.ResponseWriter, r *http.Request) {
			json.NewEncoder(w).Encode(map[string]string{"AccessKeyId": "a", "SecretAccessKey": "s", "Expiration": harness.Val("creds-expiration")})
		},
	} {
		creds.answer(answer)
		args, rec := harness.ChildArgs(t, "-exit", "0")
		r := harness.RunBinary(t, credentialsEnv(harness.Moto.URL, creds.URL), append([]string{"--path", "/app", "--startup-timeout", "1s"}, args...)...)
		t.Logf("exit %d; stderr:\n%s", r.Code, r.Stderr)
		if r.Code != harness.ExitSource || len(harness.ReadRecords(t, rec)) != 0 {
			t.Errorf("exit %d, want %d, command not run; stderr:\n%s", r.Code, harness.ExitSource, r.Stderr)
		}
		if strings.Contains(r.Stderr, harness.ValueMark) {
			t.Errorf("the log holds the credentials endpoint's text:\n%s", r.Stderr)
		}
	}
}
