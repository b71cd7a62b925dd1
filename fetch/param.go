package fetch

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/paramexec/paramexec/internal/environ"
)

// A Param is one parameter asked for by name: a --param flag or a
// reference in an inherited variable.
type Param struct {
	// Name is the parameter's name, or its full ARN (the only way to name a
	// parameter shared from another account), without a selector.
	Name string
	// Selector pins a version (digits) or a label; empty follows the
	// latest version.
	Selector string
	// Var is the variable the value goes to.
	Var  string
	Rank int
	// Ref says an inherited variable (Var) referred to the parameter, so
	// errors name that variable, which is what the user can find and fix.
	Ref bool
}

// parseParamFlag parses a --param value: NAME[:SELECTOR][=VAR], where NAME
// is a name or an ARN and SELECTOR a version number or a label. Neither
// names, ARNs nor labels can hold "=", so the first one ends the name. VAR
// defaults to the name's last segment, named as --path names it.
func parseParamFlag(s string, rank int) (Param, error) {
	spec, varName, hasVar := strings.Cut(s, "=")
	p, err := parseParamSpec(spec)
	if err != nil {
		return Param{}, fmt.Errorf("--param %q: %w", s, err)
	}
	p.Rank = rank
	if hasVar {
		if !environ.ValidName(varName) {
			return Param{}, fmt.Errorf("--param %q: %q is not a valid variable name", s, varName)
		}
		p.Var = varName
		return p, nil
	}
	name := p.Name
	if a, ok := parseARN(name); ok {
		name = strings.TrimPrefix(a.Resource, "parameter")
	}
	if p.Var, err = VarName(lastSegment(name)); err != nil {
		return Param{}, fmt.Errorf("--param %q: %w", s, err)
	}
	return p, nil
}

// parseParamSpec splits NAME[:SELECTOR] and checks both. A parameter name
// cannot hold ":", so in a plain name the first ":" starts the selector; in
// an ARN, whose fields are separated by ":", the selector follows the
// resource's last ":".
func parseParamSpec(spec string) (Param, error) {
	name, sel, hasSel := spec, "", false
	if a, ok := parseARN(spec); ok {
		if a.Service != "ssm" || !strings.HasPrefix(a.Resource, "parameter/") {
			return Param{}, fmt.Errorf("not a parameter ARN (want arn:aws:ssm:REGION:ACCOUNT:parameter/NAME)")
		}
		res := a.Resource
		if i := strings.LastIndexByte(res, ':'); i >= 0 {
			res, sel, hasSel = res[:i], res[i+1:], true
			name = spec[:len(spec)-len(sel)-1]
		}
		if !validParamName(strings.TrimPrefix(res, "parameter")) {
			return Param{}, fmt.Errorf("invalid parameter name in ARN")
		}
	} else {
		if strings.HasPrefix(spec, "arn:") {
			return Param{}, fmt.Errorf("malformed ARN (want arn:aws:ssm:REGION:ACCOUNT:parameter/NAME)")
		}
		name, sel, hasSel = strings.Cut(spec, ":")
		if !validParamName(name) {
			return Param{}, fmt.Errorf("invalid parameter name (letters, digits and _.-/ only)")
		}
	}
	if hasSel && !validSelector(sel) {
		return Param{}, fmt.Errorf("selector %q after ':' is neither a version number nor a label", sel)
	}
	return Param{Name: name, Selector: sel}, nil
}

// validParamName accepts what Parameter Store accepts in a name, without
// judging hierarchy depth, which AWS checks with a better message. An empty
// level ("//") is refused too, which keeps a URL such as ssm://host/path
// from passing for a reference.
func validParamName(name string) bool {
	if name == "" || len(name) > 2048 || strings.Trim(name, "/") == "" || strings.HasSuffix(name, "/") || strings.Contains(name, "//") {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_.-/", c) >= 0) {
			return false
		}
	}
	return true
}

// validSelector accepts a version number or a label ([A-Za-z0-9_.-], at
// most 100 characters).
func validSelector(sel string) bool {
	if sel == "" || len(sel) > 100 {
		return false
	}
	for i := 0; i < len(sel); i++ {
		c := sel[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// request is the string Parameter Store is asked for: the name or ARN with
// its selector.
func (p Param) request() string {
	if p.Selector == "" {
		return p.Name
	}
	return p.Name + ":" + p.Selector
}

// source is the flag or reference that asked for the parameter, for
// Provenance, in a canonical spelling: "--param /app/db:prod=DB",
// "reference DB=ssm:/app/db". A reference names an item, never holds a
// value, so it may be shown.
func (p Param) source() string {
	if !p.Ref {
		return "--param " + p.request() + "=" + p.Var
	}
	if strings.HasPrefix(p.Name, "arn:") {
		return "reference " + p.Var + "=" + p.request()
	}
	return "reference " + p.Var + "=ssm:" + p.request()
}

// selector says in words what the parameter follows, for Provenance.
func (p Param) selector() string {
	switch {
	case p.Selector == "":
		return "latest"
	case p.pinned():
		return "version " + p.Selector
	}
	return "label " + p.Selector
}

// pinned reports whether the parameter is pinned to a version number, which
// can never change.
func (p Param) pinned() bool {
	if p.Selector == "" {
		return false
	}
	_, err := strconv.ParseUint(p.Selector, 10, 64)
	return err == nil
}

// describe names the parameter in errors: the variable first when a
// reference asked for it.
func (p Param) describe() string {
	if p.Ref {
		return fmt.Sprintf("variable %s (parameter %s)", p.Var, p.request())
	}
	return "parameter " + p.request()
}
