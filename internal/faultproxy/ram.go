package faultproxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// The proxy can play AWS Resource Access Manager for Parameter Store, which
// moto does not have: moto keeps one backend per account and serves a
// request as the account named in an x-moto-account-id header. Share names
// parameters of another account as shared with the caller; then
//
//   - DescribeParameters with Shared=true is answered from that account's
//     parameters (moto's own listing of them, with the request's
//     ParameterFilters): those shared and on the advanced tier, each named
//     by its ARN (Name and ARN), in pages of at most SetSharePageSize
//     entries (AWS may return fewer than MaxResults a page);
//   - GetParameters whose names are all ARNs of that account is served from
//     that account by name, answering with the ARNs asked for; an ARN that
//     is not shared comes back in InvalidParameters, as AWS answers a name
//     the caller cannot see.
//
// Every request is still counted and matched against the rules first, so
// faults apply to a shared read like to any other.

// sharedPrefix starts the NextTokens of a shared listing.
const sharedPrefix = "faultproxy-ram-"

// ramState is what Share has configured.
type ramState struct {
	shared   map[string]map[string]bool // account -> parameter names
	pageSize int
}

// Share shares account's parameters names (as named in that account,
// "/org/prd/db") with the caller. A name shared that does not exist, or is
// on the standard tier, is listed by no shared listing.
func (p *Proxy) Share(account string, names ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ram.shared == nil {
		p.ram.shared = map[string]map[string]bool{}
	}
	if p.ram.shared[account] == nil {
		p.ram.shared[account] = map[string]bool{}
	}
	for _, n := range names {
		p.ram.shared[account][n] = true
	}
}

// Unshare takes names out of account's share.
func (p *Proxy) Unshare(account string, names ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range names {
		delete(p.ram.shared[account], n)
	}
}

// SetSharePageSize bounds the entries of one page of a shared listing; 0
// means 10.
func (p *Proxy) SetSharePageSize(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ram.pageSize = n
}

// shares returns a copy of the shares and the page size.
func (p *Proxy) shares() (map[string][]string, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string][]string{}
	for acct, names := range p.ram.shared {
		for n := range names {
			out[acct] = append(out[acct], n)
		}
	}
	size := p.ram.pageSize
	if size <= 0 {
		size = 10
	}
	return out, size
}

// ramRequest is the part of a request the RAM stand-in reads.
type ramRequest struct {
	Shared           bool
	ParameterFilters json.RawMessage `json:",omitempty"`
	MaxResults       int
	NextToken        string
	Names            []string
	WithDecryption   *bool `json:",omitempty"`
}

// playRAM answers the request as RAM would have AWS answer it, and reports
// whether it did; false: forward it as it is.
func (p *Proxy) playRAM(w http.ResponseWriter, r *http.Request, op string, raw []byte) bool {
	shares, pageSize := p.shares()
	if len(shares) == 0 {
		return false
	}
	var req ramRequest
	if json.Unmarshal(raw, &req) != nil {
		return false
	}
	switch {
	case op == "ssm:DescribeParameters" && req.Shared:
		p.sharedListing(w, r, req, shares, pageSize)
		return true
	case op == "ssm:GetParameters":
		acct, ok := oneAccount(req.Names)
		if !ok || shares[acct] == nil {
			return false
		}
		p.sharedRead(w, r, req, acct, shares[acct])
		return true
	}
	return false
}

// oneAccount is the account of names when every one is a parameter ARN of
// the same account.
func oneAccount(names []string) (string, bool) {
	acct := ""
	for _, n := range names {
		parts := strings.SplitN(n, ":", 6)
		if len(parts) != 6 || parts[0] != "arn" || parts[2] != "ssm" || !strings.HasPrefix(parts[5], "parameter/") {
			return "", false
		}
		if acct != "" && parts[4] != acct {
			return "", false
		}
		acct = parts[4]
	}
	return acct, acct != ""
}

// nameOfARN is the parameter name inside a parameter ARN.
func nameOfARN(a string) string {
	_, res, _ := strings.Cut(strings.SplitN(a, ":", 6)[5], "parameter")
	return res
}

// sharedListing answers DescribeParameters(Shared=true) from the shared
// accounts' parameters.
func (p *Proxy) sharedListing(w http.ResponseWriter, r *http.Request, req ramRequest, shares map[string][]string, pageSize int) {
	var all []map[string]json.RawMessage
	for acct, names := range shares {
		got, status, answer := p.listAccount(r, acct, req.ParameterFilters)
		if status != http.StatusOK {
			writeRaw(w, status, answer)
			return
		}
		for _, m := range got {
			var name, tier string
			json.Unmarshal(m["Name"], &name)
			json.Unmarshal(m["Tier"], &tier)
			if !slices.Contains(names, name) || tier != "Advanced" {
				continue
			}
			arn := "arn:aws:ssm:" + regionOf(r) + ":" + acct + ":parameter/" + strings.TrimPrefix(name, "/")
			setJSON(m, "Name", arn)
			setJSON(m, "ARN", arn)
			all = append(all, m)
		}
	}
	slices.SortFunc(all, func(a, b map[string]json.RawMessage) int { return bytes.Compare(a["ARN"], b["ARN"]) })
	start, _ := strconv.Atoi(strings.TrimPrefix(req.NextToken, sharedPrefix))
	size := pageSize
	if req.MaxResults > 0 {
		size = min(size, req.MaxResults)
	}
	start = min(start, len(all))
	end := min(start+size, len(all))
	answer := map[string]any{"Parameters": nonNil(all[start:end])}
	if end < len(all) {
		answer["NextToken"] = sharedPrefix + strconv.Itoa(end)
	}
	b, _ := json.Marshal(answer)
	writeRaw(w, http.StatusOK, b)
}

// listAccount lists every parameter of acct that filters select, paging
// through moto's answers. On an error answer it returns its status and body.
func (p *Proxy) listAccount(r *http.Request, acct string, filters json.RawMessage) ([]map[string]json.RawMessage, int, []byte) {
	var all []map[string]json.RawMessage
	token := ""
	for {
		in := map[string]any{"MaxResults": 50}
		if len(filters) > 0 && string(filters) != "null" {
			in["ParameterFilters"] = filters
		}
		if token != "" {
			in["NextToken"] = token
		}
		body, _ := json.Marshal(in)
		status, answer := p.callAs(r, acct, body)
		if status != http.StatusOK {
			return nil, status, answer
		}
		var page struct {
			Parameters []map[string]json.RawMessage
			NextToken  string
		}
		if err := json.Unmarshal(answer, &page); err != nil {
			return nil, http.StatusBadGateway, errorBody("BadGateway", "faultproxy: RAM: "+err.Error())
		}
		all = append(all, page.Parameters...)
		if page.NextToken == "" {
			return all, http.StatusOK, nil
		}
		token = page.NextToken
	}
}

// sharedRead answers GetParameters of ARNs of acct from acct: the shared
// ones by name, the others as InvalidParameters.
func (p *Proxy) sharedRead(w http.ResponseWriter, r *http.Request, req ramRequest, acct string, shared []string) {
	byName := map[string]string{}
	var names, invalid []string
	for _, a := range req.Names {
		n := nameOfARN(a)
		if !slices.Contains(shared, n) {
			invalid = append(invalid, a)
			continue
		}
		byName[n] = a
		names = append(names, n)
	}
	var params []map[string]json.RawMessage
	if len(names) > 0 {
		body, _ := json.Marshal(map[string]any{"Names": names, "WithDecryption": req.WithDecryption})
		status, answer := p.callAs(r, acct, body)
		if status != http.StatusOK {
			writeRaw(w, status, answer)
			return
		}
		var out struct {
			Parameters        []map[string]json.RawMessage
			InvalidParameters []string
		}
		if err := json.Unmarshal(answer, &out); err != nil {
			writeRaw(w, http.StatusBadGateway, errorBody("BadGateway", "faultproxy: RAM: "+err.Error()))
			return
		}
		for _, m := range out.Parameters {
			var name string
			json.Unmarshal(m["Name"], &name)
			setJSON(m, "Name", byName[name])
			params = append(params, m)
		}
		for _, n := range out.InvalidParameters {
			invalid = append(invalid, byName[n])
		}
	}
	b, _ := json.Marshal(map[string]any{"Parameters": nonNil(params), "InvalidParameters": nonNil(invalid)})
	writeRaw(w, http.StatusOK, b)
}

// callAs sends the request's operation with body to the target as acct,
// and returns the answer's status and body.
func (p *Proxy) callAs(r *http.Request, acct string, body []byte) (int, []byte) {
	out, err := http.NewRequestWithContext(r.Context(), http.MethodPost, p.target.String()+"/", bytes.NewReader(body))
	if err != nil {
		return http.StatusBadGateway, errorBody("BadGateway", "faultproxy: RAM: "+err.Error())
	}
	for _, h := range []string{"X-Amz-Target", "Content-Type", "Authorization", "X-Amz-Date"} {
		out.Header.Set(h, r.Header.Get(h))
	}
	out.Header.Set("x-moto-account-id", acct)
	resp, err := p.tr.RoundTrip(out)
	if err != nil {
		return http.StatusBadGateway, errorBody("BadGateway", "faultproxy: RAM: "+err.Error())
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return http.StatusBadGateway, errorBody("BadGateway", "faultproxy: RAM: "+err.Error())
	}
	return resp.StatusCode, b
}

// errorBody is an awsJson1_1 error body.
func errorBody(code, message string) []byte {
	b, _ := json.Marshal(map[string]string{"__type": code, "message": message})
	return b
}

// writeRaw answers with status and an awsJson1_1 body.
func writeRaw(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/x-amz-json-1.1")
	h.Set("X-Amzn-RequestId", requestID())
	h.Set("Content-Length", fmt.Sprint(len(body)))
	if status != http.StatusOK {
		var e struct {
			Type string `json:"__type"`
		}
		if json.Unmarshal(body, &e) == nil && e.Type != "" {
			h.Set("X-Amzn-ErrorType", e.Type)
		}
	}
	w.WriteHeader(status)
	w.Write(body)
}
