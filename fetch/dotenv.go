package fetch

// Dotenv file format, as read by ParseDotenv:
//
//   - One assignment per line: `KEY=VALUE`, optionally prefixed with `export `.
//     Spaces and tabs are allowed around KEY and around `=`.
//   - KEY must be a POSIX environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
//   - Blank lines and lines whose first non-blank character is `#` are skipped.
//     A UTF-8 byte order mark at the start of the file is ignored, and CRLF line
//     endings are read as LF (also inside quoted values).
//   - A line without `=` is an error; so is a bare `export KEY`.
//   - Unquoted values are taken literally, with surrounding spaces and tabs
//     removed. A `#` preceded by a space or tab starts a comment that runs to the
//     end of the line; a `#` anywhere else (`KEY=a#b`) is part of the value.
//     Backslashes are not escapes.
//   - 'Single-quoted' values are literal: no escapes, and they cannot contain a
//     single quote. They may span several lines.
//   - "Double-quoted" values understand the escapes \n \r \t \\ \" and \$; a
//     backslash before any other character is kept along with that character.
//     They may span several lines; the raw newlines are kept.
//   - After a closing quote only spaces, tabs and an optional `# comment` may
//     follow on that line.
//   - There is no variable interpolation: `$HOME` and `${HOME}` stay literal, as
//     in `docker run --env-file`, so a password containing `$` is read as written.
//   - A value cannot contain a NUL byte, because an environment variable cannot.
//   - A key may be assigned more than once; the last assignment wins.
//
// Errors name the file and line, never the value: a malformed line may well be a
// fragment of a secret (an unquoted multi-line key, say), so not even the text
// before `=` is echoed back.

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/paramexec/paramexec/internal/environ"
)

// DotenvEntry is one assignment read from a dotenv file.
type DotenvEntry struct {
	Key   string
	Value string
	Line  int // 1-based line of the key
}

// DotenvError reports a malformed dotenv file. Msg never contains a value.
type DotenvError struct {
	File string
	Line int
	Msg  string
}

func (e *DotenvError) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// ParseDotenv parses dotenv text (see the format above) and returns its
// assignments in file order, duplicates included; the caller keeps the last
// value of each key. name is the file name used in errors.
func ParseDotenv(name string, data []byte) ([]DotenvEntry, error) {
	data = bytes.TrimPrefix(data, []byte("\uFEFF"))
	p := &dotenvParser{
		file: name,
		src:  strings.ReplaceAll(string(data), "\r\n", "\n"),
		line: 1,
	}
	var entries []DotenvEntry
	for p.pos < len(p.src) {
		e, ok, err := p.next()
		if err != nil {
			return nil, err
		}
		if ok {
			entries = append(entries, e)
		}
	}
	return entries, nil
}

// dotenvParser walks the whole text rather than splitting it into lines first,
// because quoted values may span lines.
type dotenvParser struct {
	file string
	src  string
	pos  int // start of the current line
	line int // 1-based number of the line starting at pos
}

func (p *dotenvParser) errorf(line int, format string, args ...any) error {
	return &DotenvError{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)}
}

// lineEnd returns the index of the newline ending the line that holds i, or
// len(src).
func (p *dotenvParser) lineEnd(i int) int {
	if n := strings.IndexByte(p.src[i:], '\n'); n >= 0 {
		return i + n
	}
	return len(p.src)
}

// advance moves past the line that ends at end.
func (p *dotenvParser) advance(end int) {
	p.pos = end + 1
	p.line++
}

// next reads one line, or one assignment spanning several lines. ok is false
// for blank and comment lines.
func (p *dotenvParser) next() (e DotenvEntry, ok bool, err error) {
	end := p.lineEnd(p.pos)
	start := p.line
	text := strings.TrimLeft(p.src[p.pos:end], dotenvBlank)
	if text == "" || text[0] == '#' {
		p.advance(end)
		return DotenvEntry{}, false, nil
	}
	if after, found := strings.CutPrefix(text, "export"); found && after != "" && strings.ContainsRune(dotenvBlank, rune(after[0])) {
		// "export = x" assigns a variable called export.
		if rest := strings.TrimLeft(after, dotenvBlank); !strings.HasPrefix(rest, "=") {
			text = rest
		}
	}
	eq := strings.IndexByte(text, '=')
	if eq < 0 {
		return DotenvEntry{}, false, p.errorf(start, "expected KEY=VALUE")
	}
	key := strings.TrimRight(text[:eq], dotenvBlank)
	if key == "" {
		return DotenvEntry{}, false, p.errorf(start, "missing variable name before '='")
	}
	if !environ.ValidName(key) {
		return DotenvEntry{}, false, p.errorf(start, "invalid variable name (want letters, digits and '_', not starting with a digit)")
	}

	raw := text[eq+1:]
	trimmed := strings.TrimLeft(raw, dotenvBlank)
	var value string
	if trimmed != "" && (trimmed[0] == '\'' || trimmed[0] == '"') {
		// Offset of the opening quote within src: text is a suffix of the line.
		open := end - len(trimmed)
		value, err = p.quoted(open, start)
		if err != nil {
			return DotenvEntry{}, false, err
		}
	} else {
		value = dotenvUnquoted(raw)
		p.advance(end)
	}
	if strings.IndexByte(value, 0) >= 0 {
		return DotenvEntry{}, false, p.errorf(start, "value of %s contains a NUL byte", key)
	}
	return DotenvEntry{Key: key, Value: value, Line: start}, true, nil
}

// quoted reads the quoted value whose opening quote is at src[open], then
// checks the rest of the line holding the closing quote and moves past it.
func (p *dotenvParser) quoted(open, start int) (string, error) {
	q := p.src[open]
	i := open + 1
	var value string
	if q == '\'' {
		n := strings.IndexByte(p.src[i:], '\'')
		if n < 0 {
			return "", p.errorf(start, "unterminated quoted value")
		}
		value = p.src[i : i+n]
		i += n + 1
	} else {
		var b strings.Builder
		for {
			if i >= len(p.src) {
				return "", p.errorf(start, "unterminated quoted value")
			}
			c := p.src[i]
			if c == '"' {
				i++
				break
			}
			if c == '\\' && i+1 < len(p.src) {
				i++
				switch esc := p.src[i]; esc {
				case 'n':
					b.WriteByte('\n')
				case 'r':
					b.WriteByte('\r')
				case 't':
					b.WriteByte('\t')
				case '\\', '"', '$':
					b.WriteByte(esc)
				default:
					// Unknown escapes stay as written, so a Windows path or a
					// regexp survives.
					b.WriteByte('\\')
					b.WriteByte(esc)
					if esc == '\n' {
						p.line++
					}
				}
				i++
				continue
			}
			if c == '\n' {
				p.line++
			}
			b.WriteByte(c)
			i++
		}
		value = b.String()
	}
	if q == '\'' {
		p.line += strings.Count(value, "\n")
	}
	end := p.lineEnd(i)
	if tail := strings.TrimLeft(p.src[i:end], dotenvBlank); tail != "" && tail[0] != '#' {
		return "", p.errorf(p.line, "unexpected text after closing quote")
	}
	p.advance(end)
	return value, nil
}

// dotenvBlank is the whitespace allowed around keys, '=' and unquoted values.
const dotenvBlank = " \t"

// dotenvUnquoted cuts an inline comment (blank then '#') off raw, the text
// after '=', and trims it.
func dotenvUnquoted(raw string) string {
	for i := 1; i < len(raw); i++ {
		if raw[i] == '#' && (raw[i-1] == ' ' || raw[i-1] == '\t') {
			raw = raw[:i]
			break
		}
	}
	return strings.Trim(raw, dotenvBlank)
}
