package main

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
	target, err := url.Parse(moto.URL)
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
	parallelE2E(t)
	g := startGarbler(t)
	path := uniquePath(t)
	value := val("garbled-" + strconv.FormatInt(int64(len(path)), 10))
	moto.PutParameter(t, path+"/TOKEN", value, "String")
	secret := moto.CreateSecret(t, strings.TrimPrefix(path, "/")+"-secret", val("secret-garbled"))
	leaks := func(stderr string) bool {
		return strings.Contains(stderr, valueMark) || strings.Contains(stderr, "12345678901234567890123") ||
			strings.Contains(stderr, "98765432109876543210")
	}

	t.Run("start-up", func(t *testing.T) {
		for _, mode := range garbleModes {
			for _, source := range [][]string{{"--path", path}, {"--secret", secret}} {
				g.mode.Store(mode)
				args, rec := childArgs(t, "-exit", "0")
				r := runBinary(t, baseEnv(g.url), append(append(source, "--startup-timeout", "1s"), args...)...)
				if r.code != exitSource || len(readRecords(t, rec)) != 0 {
					t.Errorf("%s %v: exit %d (want %d, command not run); stderr:\n%s", mode, source, r.code, exitSource, r.stderr)
				}
				if leaks(r.stderr) {
					t.Errorf("%s %v: the log holds text of the answer:\n%s", mode, source, r.stderr)
				}
			}
		}
	})

	t.Run("polling", func(t *testing.T) {
		g.mode.Store("")
		args, rec := childArgs(t)
		pe := startBinary(t, baseEnv(g.url), append([]string{"--path", path, "--secret", secret, "--interval", "1s"}, args...)...)
		waitStarts(t, rec, 1)
		for _, mode := range garbleModes {
			before := strings.Count(pe.stderr.String(), "poll failed")
			g.mode.Store(mode)
			waitFor(t, "a failed poll on a "+mode+" answer", func() bool {
				return strings.Count(pe.stderr.String(), "poll failed") > before
			})
		}
		g.mode.Store("")
		waitFor(t, "polling to recover", func() bool { return strings.Contains(pe.stderr.String(), "poll recovered") })
		if n := len(starts(readRecords(t, rec))); n != 1 {
			t.Errorf("%d child starts; a garbled answer must never restart the child", n)
		}
		pe.signal(syscall.SIGTERM)
		pe.wait()
		if leaks(pe.stderr.String()) {
			t.Errorf("the log holds text of the answer:\n%s", pe.stderr.String())
		}
		t.Logf("%d answers spoilt; stderr:\n%s", g.hits.Load(), pe.stderr.String())
	})
}

// The SDK's own clients, made from the same configuration, are sanitised
// too: a credentials endpoint's error text never reaches the log.
func TestCredentialsAnswerNeverLogged(t *testing.T) {
	parallelE2E(t)
	creds := startHungServer(t)
	for _, answer := range []http.HandlerFunc{
		func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"code": val("creds-code"), "message": val("creds-message")})
		},
		func(w http.ResponseWriter, r *http.Request) {
			json.NewEncoder(w).Encode(map[string]string{"AccessKeyId": "a", "SecretAccessKey": "s", "Expiration": val("creds-expiration")})
		},
	} {
		creds.answer(answer)
		args, rec := childArgs(t, "-exit", "0")
		r := runBinary(t, credentialsEnv(moto.URL, creds.URL), append([]string{"--path", "/app", "--startup-timeout", "1s"}, args...)...)
		t.Logf("exit %d; stderr:\n%s", r.code, r.stderr)
		if r.code != exitSource || len(readRecords(t, rec)) != 0 {
			t.Errorf("exit %d, want %d, command not run; stderr:\n%s", r.code, exitSource, r.stderr)
		}
		if strings.Contains(r.stderr, valueMark) {
			t.Errorf("the log holds the credentials endpoint's text:\n%s", r.stderr)
		}
	}
}
