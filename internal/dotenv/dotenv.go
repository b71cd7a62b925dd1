package dotenv

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/paramexec/paramexec/internal/environ"
)

// Entry is one assignment read from a dotenv file.
type Entry struct {
	Key   string
	Value string
	Line  int // 1-based line of the key
}

// Error reports a malformed dotenv file. Msg never contains a value.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// Parse parses dotenv text (see the format above) and returns its
// assignments in file order, duplicates included; the caller keeps the last
// value of each key. name is the file name used in errors.
func Parse(name string, data []byte) ([]Entry, error) {
	data = bytes.TrimPrefix(data, []byte("\uFEFF"))
	p := &parser{
		file: name,
		src:  strings.ReplaceAll(string(data), "\r\n", "\n"),
		line: 1,
	}
	// A CR left now ends no line of this format, and kept it would end up
	// in a value unseen ("A=1\r" read as "1\r"), while a classic Mac file
	// would read as one line. Neither guess is safe for a password, so the
	// file is refused; a CR meant as part of a value is written \r inside
	// double quotes.
	if i := strings.IndexByte(p.src, '\r'); i >= 0 {
		return nil, p.errorf(1+strings.Count(p.src[:i], "\n"),
			"carriage return without a line feed (a classic Mac line ending?): use LF or CRLF line endings, and write \\r inside double quotes for a CR in a value")
	}
	var entries []Entry
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

// parser walks the whole text rather than splitting it into lines first,
// because quoted values may span lines.
type parser struct {
	file string
	src  string
	pos  int // start of the current line
	line int // 1-based number of the line starting at pos
}

func (p *parser) errorf(line int, format string, args ...any) error {
	return &Error{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)}
}

// lineEnd returns the index of the newline ending the line that holds i, or
// len(src).
func (p *parser) lineEnd(i int) int {
	if n := strings.IndexByte(p.src[i:], '\n'); n >= 0 {
		return i + n
	}
	return len(p.src)
}

// advance moves past the line that ends at end.
func (p *parser) advance(end int) {
	p.pos = end + 1
	p.line++
}

// next reads one line, or one assignment spanning several lines. ok is false
// for blank and comment lines.
func (p *parser) next() (e Entry, ok bool, err error) {
	end := p.lineEnd(p.pos)
	start := p.line
	text := strings.TrimLeft(p.src[p.pos:end], blank)
	if text == "" || text[0] == '#' {
		p.advance(end)
		return Entry{}, false, nil
	}
	if after, found := strings.CutPrefix(text, "export"); found && after != "" && strings.ContainsRune(blank, rune(after[0])) {
		// "export = x" assigns a variable called export.
		if rest := strings.TrimLeft(after, blank); !strings.HasPrefix(rest, "=") {
			text = rest
		}
	}
	eq := strings.IndexByte(text, '=')
	if eq < 0 {
		return Entry{}, false, p.errorf(start, "expected KEY=VALUE")
	}
	key := strings.TrimRight(text[:eq], blank)
	if key == "" {
		return Entry{}, false, p.errorf(start, "missing variable name before '='")
	}
	if !environ.ValidName(key) {
		return Entry{}, false, p.errorf(start, "invalid variable name (want letters, digits and '_', not starting with a digit)")
	}

	raw := text[eq+1:]
	trimmed := strings.TrimLeft(raw, blank)
	var value string
	if trimmed != "" && (trimmed[0] == '\'' || trimmed[0] == '"') {
		// Offset of the opening quote within src: text is a suffix of the line.
		open := end - len(trimmed)
		value, err = p.quoted(open, start)
		if err != nil {
			return Entry{}, false, err
		}
	} else {
		value = unquoted(raw)
		p.advance(end)
	}
	if strings.IndexByte(value, 0) >= 0 {
		return Entry{}, false, p.errorf(start, "value of %s contains a NUL byte", key)
	}
	return Entry{Key: key, Value: value, Line: start}, true, nil
}

// quoted reads the quoted value whose opening quote is at src[open], then
// checks the rest of the line holding the closing quote and moves past it.
func (p *parser) quoted(open, start int) (string, error) {
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
		var err error
		if value, i, err = p.doubleQuoted(i, start); err != nil {
			return "", err
		}
	}
	if q == '\'' {
		p.line += strings.Count(value, "\n")
	}
	end := p.lineEnd(i)
	if tail := strings.TrimLeft(p.src[i:end], blank); tail != "" && tail[0] != '#' {
		return "", p.errorf(p.line, "unexpected text after closing quote")
	}
	p.advance(end)
	return value, nil
}

// doubleQuoted reads a double-quoted value from src[i], just after its
// opening quote, and returns it with the index just after its closing one.
func (p *parser) doubleQuoted(i, start int) (string, int, error) {
	var b strings.Builder
	for {
		if i >= len(p.src) {
			return "", 0, p.errorf(start, "unterminated quoted value")
		}
		c := p.src[i]
		if c == '"' {
			return b.String(), i + 1, nil
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
}

// blank is the whitespace allowed around keys, '=' and unquoted values.
const blank = " \t"

// unquoted cuts an inline comment (blank then '#') off raw, the text
// after '=', and trims it.
func unquoted(raw string) string {
	for i := 1; i < len(raw); i++ {
		if raw[i] == '#' && (raw[i-1] == ' ' || raw[i-1] == '\t') {
			raw = raw[:i]
			break
		}
	}
	return strings.Trim(raw, blank)
}

// Quote writes s as a double-quoted value that Parse gives back unchanged:
// every character special inside double quotes, and every line break, is
// escaped.
func Quote(s string) string {
	return `"` + quoter.Replace(s) + `"`
}

var quoter = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`, "$", `\$`)
