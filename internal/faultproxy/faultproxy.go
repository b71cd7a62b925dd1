// Package faultproxy is a loopback reverse proxy for tests that sits in front of
// moto, injects AWS-shaped faults (throttling, 5xx, denials, dropped or hung connections, rewritten answers) and counts calls.
package faultproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Fault is what the proxy does to a request a Rule matches.
type Fault int

const (
	// Throttle answers 400 ThrottlingException "Rate exceeded", as SSM and
	// Secrets Manager do when the account's request quota is used up.
	Throttle Fault = iota + 1
	// ServerError answers 500 with the service's modelled internal error
	// (InternalServerError for SSM, InternalServiceError for Secrets Manager).
	ServerError
	// Unavailable answers 503 ServiceUnavailable.
	Unavailable
	// Delay waits Rule.Delay, then forwards the request.
	Delay
	// Drop closes the client's connection without any response.
	Drop
	// Hang holds the request until the client gives up or the proxy closes,
	// then closes the connection without a response.
	Hang
	// AccessDenied answers 400 AccessDeniedException worded like IAM's
	// denial of the operation's action on the named resource.
	AccessDenied
	// KMSAccessDenied answers 400 AccessDeniedException as the service does
	// when the caller may not use the KMS key: kms:Decrypt denied.
	KMSAccessDenied
	// ExpiredToken answers 400 ExpiredTokenException.
	ExpiredToken
	// CustomError answers Rule.Status (default 400) with Rule.Code (default
	// "CustomError") and Rule.Message.
	CustomError
)

var faultNames = map[Fault]string{
	Throttle: "Throttle", ServerError: "ServerError", Unavailable: "Unavailable", Delay: "Delay",
	Drop: "Drop", Hang: "Hang", AccessDenied: "AccessDenied", KMSAccessDenied: "KMSAccessDenied",
	ExpiredToken: "ExpiredToken", CustomError: "CustomError",
}

func (f Fault) String() string {
	if n, ok := faultNames[f]; ok {
		return n
	}
	if n, ok := rewriteNames[f]; ok {
		return n
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// Rule selects requests and the fault to inject into them.
type Rule struct {
	Op          string  // "ssm:GetParameters", "secretsmanager:GetSecretValue"; "" matches every request
	Fault       Fault   // what to do
	Times       int     // how many matching requests to hit, then the rule is spent; 0 = unlimited
	Probability float64 // chance that a matching request is hit; 0 or 1 (or outside (0,1)) = always
	Delay       time.Duration
	// Code and Status are used by CustomError. Message, when set, replaces
	// the default message of every error-answering fault.
	Code, Message string
	Status        int
	// Names are the parameters a rewriting fault acts on (see
	// OmitParameter), or the secret ids a rule is for; a GetParameters,
	// GetParameter, GetSecretValue or DescribeSecret request that names
	// none of them does not match.
	Names []string
	// WithDecryption, when set, matches only ssm requests whose
	// WithDecryption is the same: a version check (false) or a read of
	// values (true).
	WithDecryption *bool
}

// Counts is what the proxy has seen. Every request is counted, including
// those answered with a fault.
type Counts struct {
	ByOp         map[string]int // per operation name, e.g. "ssm:GetParameters"; requests without X-Amz-Target as "METHOD /path"
	Decrypting   int            // ssm requests whose JSON body has "WithDecryption":true
	SecretValues int            // secretsmanager GetSecretValue + BatchGetSecretValue requests
	Throttled    int            // answered ThrottlingException, by a Throttle rule or the rate limit
	Faulted      int            // hit by a rule (any Fault, Delay included)
	Forwarded    int            // passed on to the target (after any Delay)
	Total        int            // every request
}

const (
	accountID = "123456789012"
	principal = "arn:aws:sts::" + accountID + ":assumed-role/test/x"
	maxBody   = 16 << 20
)

// Proxy is a running fault-injecting proxy. It is safe for concurrent use.
type Proxy struct {
	ln      net.Listener
	srv     *http.Server
	rp      *httputil.ReverseProxy
	tr      *http.Transport
	served  chan struct{} // closed when srv.Serve returns
	closing context.Context
	stop    context.CancelFunc

	mu     sync.Mutex
	closed bool
	active sync.WaitGroup // handlers in flight; Close waits for them
	rules  []*ruleState
	counts Counts
	bucket bucket
	minted int // NextTokens minted by EndlessNextToken
	ram    ramState

	target *url.URL // moto, for the calls the RAM stand-in makes itself
}

type ruleState struct {
	Rule
	hits int
}

// Start listens on a loopback port and forwards to target, moto's URL.
func Start(target string) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("faultproxy: target %q is not an http(s) URL", target)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	closing, stop := context.WithCancel(context.Background())
	p := &Proxy{
		ln:      ln,
		served:  make(chan struct{}),
		closing: closing,
		stop:    stop,
		target:  u,
		counts:  Counts{ByOp: map[string]int{}},
		// Never through an HTTP(S)_PROXY from the environment: target is local.
		tr: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     30 * time.Second,
		},
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			// Keep the Host the client signed, so the SigV4 signature would
			// still verify were the target to check it.
			pr.Out.Host = pr.In.Host
		},
		Transport:    p.tr,
		ErrorHandler: p.upstreamError,
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 30 * time.Second}
	go func() {
		defer close(p.served)
		p.srv.Serve(ln)
	}()
	return p, nil
}

// URL is the proxy's base URL, http://127.0.0.1:PORT, to use as an AWS endpoint.
func (p *Proxy) URL() string { return "http://" + p.ln.Addr().String() }

// Close stops the proxy, releases hung and delayed requests and waits for
// every handler to finish.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()

	p.stop()
	err := p.srv.Close()
	<-p.served
	p.active.Wait()
	p.tr.CloseIdleConnections()
	if err != nil {
		return fmt.Errorf("faultproxy: close: %w", err)
	}
	return nil
}

// Inject adds a rule. Rules are tried in the order added; the first one that
// matches a request and fires decides it. remove takes the rule out again
// and may be called more than once.
func (p *Proxy) Inject(r Rule) (remove func()) {
	if _, ok := faultNames[r.Fault]; !ok && !r.Fault.rewrites() {
		panic(fmt.Sprintf("faultproxy: Inject: invalid fault %v", r.Fault))
	}
	rs := &ruleState{Rule: r}
	p.mu.Lock()
	p.rules = append(p.rules, rs)
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.rules = slices.DeleteFunc(p.rules, func(x *ruleState) bool { return x == rs })
	}
}

// Clear removes every rule.
func (p *Proxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = nil
}

// RateLimit puts a token bucket of tps tokens a second holding at most burst
// (at least 1) in front of every forwarded request; a request finding the
// bucket empty is answered ThrottlingException. The bucket starts full.
// tps <= 0 turns it off.
func (p *Proxy) RateLimit(tps float64, burst int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bucket = bucket{tps: tps, burst: float64(max(burst, 1)), tokens: float64(max(burst, 1)), last: time.Now()}
}

// Counts returns a copy of what the proxy has seen since the last ResetCounts.
func (p *Proxy) Counts() Counts {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.counts
	c.ByOp = make(map[string]int, len(p.counts.ByOp))
	for k, v := range p.counts.ByOp {
		c.ByOp[k] = v
	}
	return c
}

// ResetCounts zeroes the counts.
func (p *Proxy) ResetCounts() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = Counts{ByOp: map[string]int{}}
}

// bucket is a token bucket; the zero value (tps 0) lets everything through.
type bucket struct {
	tps, burst, tokens float64
	last               time.Time
}

func (b *bucket) take(now time.Time) bool {
	if b.tps <= 0 {
		return true
	}
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.tps)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// opName names an awsJson1_1 request like an IAM action: the X-Amz-Target
// "AmazonSSM.GetParameters" becomes "ssm:GetParameters".
func opName(r *http.Request) string {
	target := r.Header.Get("X-Amz-Target")
	if target == "" {
		return r.Method + " " + r.URL.Path
	}
	svc, op, ok := strings.Cut(target, ".")
	if !ok {
		return target
	}
	if svc == "AmazonSSM" {
		svc = "ssm"
	}
	return strings.ToLower(svc) + ":" + op
}

// requestBody holds the fields of SSM and Secrets Manager requests the proxy
// looks at. Values are never read.
type requestBody struct {
	WithDecryption *bool
	Name           string
	Names          []string
	Path           string
	SecretId       string
	SecretIdList   []string
	NextToken      string
}

// decision is what to do with one request, made under p.mu.
type decision struct {
	rule      *Rule // nil: no rule fired
	throttled bool  // the rate limit refused it
}

func (p *Proxy) decide(op string, body *requestBody) decision {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := &p.counts
	c.Total++
	c.ByOp[op]++
	if strings.HasPrefix(op, "ssm:") && body.WithDecryption != nil && *body.WithDecryption {
		c.Decrypting++
	}
	if op == "secretsmanager:GetSecretValue" || op == "secretsmanager:BatchGetSecretValue" {
		c.SecretValues++
	}

	var d decision
	for i, rs := range p.rules {
		if rs.Op != "" && rs.Op != op || !rs.matches(op, body) {
			continue
		}
		if pr := rs.Probability; pr > 0 && pr < 1 && rand.Float64() >= pr {
			continue
		}
		rs.hits++
		if rs.Times > 0 && rs.hits >= rs.Times {
			p.rules = slices.Delete(p.rules, i, i+1)
		}
		r := rs.Rule
		d.rule = &r
		break
	}
	if d.rule != nil {
		c.Faulted++
		if d.rule.Fault == Throttle {
			c.Throttled++
		}
		if d.rule.Fault != Delay {
			return d
		}
	}
	if !p.bucket.take(time.Now()) {
		c.Throttled++
		d.throttled = true
		return d
	}
	c.Forwarded++
	return d
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		panic(http.ErrAbortHandler)
	}
	p.active.Add(1)
	p.mu.Unlock()
	defer p.active.Done()

	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		// The client went away or sent too much: nothing sensible to answer.
		panic(http.ErrAbortHandler)
	}
	var body requestBody
	json.Unmarshal(raw, &body) // non-JSON bodies (moto-api calls) just have no fields
	op := opName(r)

	d := p.decide(op, &body)
	if d.throttled {
		writeError(w, http.StatusBadRequest, "ThrottlingException", "Rate exceeded")
		return
	}
	if d.rule != nil && d.rule.Fault.rewrites() {
		p.rewrite(w, r, op, raw, &body, d.rule)
		return
	}
	if d.rule != nil {
		if done := p.inject(w, r, op, &body, d.rule); done {
			return
		}
	}
	if p.playRAM(w, r, op, raw) {
		return
	}
	p.forward(w, r, stripMinted(op, raw, &body))
}

// forward passes the request, with body raw, on to the target.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, raw []byte) {
	// Cancel the upstream call when the proxy closes, not only when the
	// client goes away, so Close never waits on the target.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(p.closing, cancel)()
	out := r.WithContext(ctx)
	out.Body = io.NopCloser(bytes.NewReader(raw))
	out.ContentLength = int64(len(raw))
	out.TransferEncoding = nil
	p.rp.ServeHTTP(w, out)
}

// inject applies rule to the request; it reports whether the request has
// been answered (false: forward it).
func (p *Proxy) inject(w http.ResponseWriter, r *http.Request, op string, body *requestBody, rule *Rule) bool {
	msg := func(def string) string {
		if rule.Message != "" {
			return rule.Message
		}
		return def
	}
	ssm := strings.HasPrefix(op, "ssm:")
	switch rule.Fault {
	case Throttle:
		writeError(w, http.StatusBadRequest, "ThrottlingException", msg("Rate exceeded"))
	case ServerError:
		if ssm {
			writeError(w, http.StatusInternalServerError, "InternalServerError", msg("An internal error occurred."))
		} else {
			writeError(w, http.StatusInternalServerError, "InternalServiceError", msg("An error occurred on the server side."))
		}
	case Unavailable:
		writeError(w, http.StatusServiceUnavailable, "ServiceUnavailable", msg("Service Unavailable"))
	case AccessDenied:
		writeError(w, http.StatusBadRequest, "AccessDeniedException", msg(fmt.Sprintf(
			"User: %s is not authorized to perform: %s on resource: %s because no identity-based policy allows the %s action",
			principal, op, resource(op, regionOf(r), body), op)))
	case KMSAccessDenied:
		if ssm {
			writeError(w, http.StatusBadRequest, "AccessDeniedException", msg(fmt.Sprintf(
				"User: %s is not authorized to perform: kms:Decrypt on resource: arn:aws:kms:%s:%s:key/00000000-0000-0000-0000-000000000000 because no identity-based policy allows the kms:Decrypt action (Service: AWSKMS; Status Code: 400; Error Code: AccessDeniedException; Request ID: %s; Proxy: null)",
				principal, regionOf(r), accountID, requestID())))
		} else {
			writeError(w, http.StatusBadRequest, "AccessDeniedException", msg("Access to KMS is not allowed"))
		}
	case ExpiredToken:
		writeError(w, http.StatusBadRequest, "ExpiredTokenException", msg("The security token included in the request is expired"))
	case CustomError:
		code, status := rule.Code, rule.Status
		if code == "" {
			code = "CustomError"
		}
		if status == 0 {
			status = http.StatusBadRequest
		}
		writeError(w, status, code, rule.Message)
	case Drop:
		drop(w)
	case Hang:
		select {
		case <-r.Context().Done():
		case <-p.closing.Done():
		}
		drop(w)
	case Delay:
		t := time.NewTimer(rule.Delay)
		defer t.Stop()
		select {
		case <-t.C:
			return false
		case <-r.Context().Done():
			drop(w)
		case <-p.closing.Done():
			drop(w)
		}
	}
	return true
}

// drop closes the client's connection without writing a response.
func drop(w http.ResponseWriter) {
	rc := http.NewResponseController(w)
	conn, _, err := rc.Hijack()
	if err != nil {
		// Not hijackable (HTTP/2): aborting the handler resets the stream.
		panic(http.ErrAbortHandler)
	}
	conn.Close()
}

func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		// The client left or the proxy is closing: nobody to answer.
		drop(w)
		return
	}
	writeError(w, http.StatusBadGateway, "BadGateway", "faultproxy: forward: "+err.Error())
}

// writeError answers like an awsJson1_1 service: the SDK reads the code
// from X-Amzn-ErrorType or, failing that, the body's __type.
func writeError(w http.ResponseWriter, status int, code, message string) {
	b, _ := json.Marshal(struct {
		Type    string `json:"__type"`
		Message string `json:"message"`
	}{code, message})
	h := w.Header()
	h.Set("Content-Type", "application/x-amz-json-1.1")
	h.Set("X-Amzn-ErrorType", code)
	h.Set("X-Amzn-RequestId", requestID())
	h.Set("Content-Length", fmt.Sprint(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

func requestID() string {
	a, b := rand.Uint64(), rand.Uint64()
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", a>>32, a>>16&0xffff, a&0xffff, b>>48, b&0xffffffffffff)
}

// regionOf reads the Region from the SigV4 credential scope
// (Credential=AKID/DATE/REGION/SERVICE/aws4_request).
func regionOf(r *http.Request) string {
	_, cred, ok := strings.Cut(r.Header.Get("Authorization"), "Credential=")
	if ok {
		if parts := strings.Split(cred, "/"); len(parts) >= 3 && parts[2] != "" {
			return parts[2]
		}
	}
	return "us-east-1"
}

// resource names what the request acts on the way IAM's denial message does.
func resource(op, region string, b *requestBody) string {
	if strings.HasPrefix(op, "secretsmanager:") {
		// Secrets Manager's denial repeats the SecretId as the caller gave it.
		id := b.SecretId
		if id == "" && len(b.SecretIdList) > 0 {
			id = b.SecretIdList[0]
		}
		if id == "" {
			return "*"
		}
		return id
	}
	name := b.Path
	if name == "" {
		name = b.Name
	}
	if name == "" && len(b.Names) > 0 {
		name = b.Names[0]
	}
	switch {
	case strings.HasPrefix(name, "arn:"):
		return name
	case name == "":
		return "arn:aws:ssm:" + region + ":" + accountID + ":*"
	case strings.HasPrefix(name, "/"):
		return "arn:aws:ssm:" + region + ":" + accountID + ":parameter" + name
	default:
		return "arn:aws:ssm:" + region + ":" + accountID + ":parameter/" + name
	}
}
