package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"

	"github.com/paramexec/paramexec/fetch"
	"github.com/paramexec/paramexec/internal/dotenv"
)

// masked stands in for every value unless --reveal is given. It has a fixed
// length so that it does not leak a value's length either.
const masked = "********"

// printVars writes the resolved variables in the chosen format, one per
// line, sorted by name. Values are masked unless reveal is set. With
// explain, each variable also says where its value came from and what it
// overrode (see fetch.Provenance): in dotenv and shell as a comment at the
// end of its line, which keeps the output valid for both; in json as
// fields beside the value.
func printVars(w io.Writer, vars []fetch.Var, format string, reveal, explain bool) error {
	value := func(v fetch.Var) string {
		if reveal {
			return v.Value
		}
		return masked
	}
	comment := func(v fetch.Var) string {
		if !explain {
			return ""
		}
		return " # " + explainLine(v)
	}
	var b strings.Builder
	switch format {
	case "json":
		out, err := printJSON(vars, value, explain)
		if err != nil {
			return err
		}
		b.Write(out)
		b.WriteByte('\n')
	case "shell":
		for _, v := range vars {
			fmt.Fprintf(&b, "export %s=%s%s\n", v.Name, shellQuote(value(v)), comment(v))
		}
	default:
		for _, v := range vars {
			fmt.Fprintf(&b, "%s=%s%s\n", v.Name, dotenv.Quote(value(v)), comment(v))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// printJSON is the json format: an object of names and values, or with
// explain of names and objects that hold the value and its provenance.
func printJSON(vars []fetch.Var, value func(fetch.Var) string, explain bool) ([]byte, error) {
	if !explain {
		obj := make(map[string]string, len(vars))
		for _, v := range vars {
			obj[v.Name] = value(v)
		}
		return json.MarshalIndent(obj, "", "  ")
	}
	obj := make(map[string]explained, len(vars))
	for _, v := range vars {
		e := explained{Value: value(v), provenanceJSON: provenanceOf(v.From)}
		for _, o := range v.Overrode {
			e.Overrides = append(e.Overrides, provenanceOf(o))
		}
		obj[v.Name] = e
	}
	return json.MarshalIndent(obj, "", "  ")
}

// explained is one variable in --print --explain --format json.
type explained struct {
	Value string `json:"value"`
	provenanceJSON
	// Overrides lists what the value took the place of, lowest
	// precedence first.
	Overrides []provenanceJSON `json:"overrides,omitempty"`
}

// provenanceJSON is fetch.Provenance with the names the json format uses.
type provenanceJSON struct {
	Source   string `json:"source"`
	Item     string `json:"item,omitempty"`
	Key      string `json:"json_key,omitempty"`
	Selector string `json:"selector,omitempty"`
	Version  string `json:"version,omitempty"`
	Modified string `json:"modified,omitempty"`
}

func provenanceOf(p fetch.Provenance) provenanceJSON {
	return provenanceJSON{Source: p.Source, Item: p.Item, Key: p.Key, Selector: p.Selector, Version: p.Version, Modified: p.Modified}
}

// explainLine is a variable's provenance in one line of words, for a
// comment: "from --path /app: /app/db (latest, version 3); overrides
// --env-file .env: .env:2 (version 1f2e…)".
func explainLine(v fetch.Var) string {
	line := "from " + v.From.String()
	if len(v.Overrode) > 0 {
		over := make([]string, len(v.Overrode))
		for i, o := range v.Overrode {
			over[i] = o.String()
		}
		line += "; overrides " + strings.Join(over, "; ")
	}
	return commentSafe(line)
}

// commentSafe keeps a comment on its line: a file name or flag can hold a
// newline, which would end the comment and start a line of its own.
func commentSafe(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	q := strconv.QuoteToGraphic(s)
	return q[1 : len(q)-1]
}

// shellQuote quotes s for a POSIX shell: inside single quotes nothing is
// special but the single quote itself.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
