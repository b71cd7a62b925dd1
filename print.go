package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/paramexec/paramexec/fetch"
	"github.com/paramexec/paramexec/internal/dotenv"
)

// masked stands in for every value unless --reveal is given. It has a fixed
// length so that it does not leak a value's length either.
const masked = "********"

// printVars writes the resolved variables in the chosen format, one per
// line, sorted by name. Values are masked unless reveal is set.
func printVars(w io.Writer, vars []fetch.Var, format string, reveal bool) error {
	value := func(v fetch.Var) string {
		if reveal {
			return v.Value
		}
		return masked
	}
	var b strings.Builder
	switch format {
	case "json":
		obj := make(map[string]string, len(vars))
		for _, v := range vars {
			obj[v.Name] = value(v)
		}
		out, err := json.MarshalIndent(obj, "", "  ")
		if err != nil {
			return err
		}
		b.Write(out)
		b.WriteByte('\n')
	case "shell":
		for _, v := range vars {
			fmt.Fprintf(&b, "export %s=%s\n", v.Name, shellQuote(value(v)))
		}
	default:
		for _, v := range vars {
			fmt.Fprintf(&b, "%s=%s\n", v.Name, dotenv.Quote(value(v)))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// shellQuote quotes s for a POSIX shell: inside single quotes nothing is
// special but the single quote itself.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
