package dotenv

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/paramexec/paramexec/internal/environ"
)

func TestParseDotenv(t *testing.T) {
	type kv = Entry
	tests := []struct {
		name string
		in   string
		want []kv
	}{
		{"empty", "", nil},
		{"blank and comments", "\n  \n# c\n   # indented\n\t\n", nil},
		{"simple", "A=1\nB=two", []kv{{"A", "1", 1}, {"B", "two", 2}}},
		{"export", "export A=1\nexport\tB=2\n  export   C = 3", []kv{{"A", "1", 1}, {"B", "2", 2}, {"C", "3", 3}}},
		{"export as a name", "export=1\nexport = 2\nexports=3", []kv{{"export", "1", 1}, {"export", "2", 2}, {"exports", "3", 3}}},
		{"spaces around key and =", "  A  =  1  \n\tB\t=\t2\t", []kv{{"A", "1", 1}, {"B", "2", 2}}},
		{"empty values", "A=\nB=   \nC=''\nD=\"\"\nE= # only a comment", []kv{{"A", "", 1}, {"B", "", 2}, {"C", "", 3}, {"D", "", 4}, {"E", "", 5}}},
		{"underscore and digits", "_=1\n_A9_b=2", []kv{{"_", "1", 1}, {"_A9_b", "2", 2}}},
		{"BOM", "\uFEFFA=1", []kv{{"A", "1", 1}}},
		{"CRLF", "A=1\r\nB='x'\r\n\r\nC=\"y\"\r\n", []kv{{"A", "1", 1}, {"B", "x", 2}, {"C", "y", 4}}},
		{"CRLF inside quotes", "A='x\r\ny'\r\nB=2", []kv{{"A", "x\ny", 1}, {"B", "2", 3}}},
		{"unquoted inline comment", "A=1 # c\nB=1\t#c\nC=a#b\nD=a #b #c", []kv{{"A", "1", 1}, {"B", "1", 2}, {"C", "a#b", 3}, {"D", "a", 4}}},
		{"unquoted hash first", "A=#x\nB= #x", []kv{{"A", "#x", 1}, {"B", "", 2}}},
		{"unquoted keeps inner text", `A=a b  c\n\t"q'` + "\n", []kv{{"A", `a b  c\n\t"q'`, 1}}},
		{"unquoted equals", "A=b=c==", []kv{{"A", "b=c==", 1}}},
		{"unquoted quote not first", `A=x"y"`, []kv{{"A", `x"y"`, 1}}},
		{"no interpolation", "A=$HOME\nB=\"${HOME}$x\"\nC='$x'", []kv{{"A", "$HOME", 1}, {"B", "${HOME}$x", 2}, {"C", "$x", 3}}},
		{"single quoted literal", `A='a\nb " # c  '`, []kv{{"A", `a\nb " # c  `, 1}}},
		{"single quoted multiline", "A='l1\nl2\n'\nB=2", []kv{{"A", "l1\nl2\n", 1}, {"B", "2", 4}}},
		{"double quoted escapes", `A="a\nb\rc\td\\e\"f\$g"`, []kv{{"A", "a\nb\rc\td\\e\"f$g", 1}}},
		{"double quoted unknown escape", `A="C:\dir\x\'"`, []kv{{"A", `C:\dir\x\'`, 1}}},
		{"double quoted keeps spaces and hash", `A="  a # b  "`, []kv{{"A", "  a # b  ", 1}}},
		{"double quoted multiline", "A=\"l1\nl2\"\nB=2", []kv{{"A", "l1\nl2", 1}, {"B", "2", 3}}},
		{"double quoted backslash newline", "A=\"x\\\ny\"\nB=2", []kv{{"A", "x\\\ny", 1}, {"B", "2", 3}}},
		{"double quoted escaped quote at end", `A="x\\"`, []kv{{"A", `x\`, 1}}},
		{"after closing quote", "A='x'  # c\nB=\"y\"\t\nC='z'#c", []kv{{"A", "x", 1}, {"B", "y", 2}, {"C", "z", 3}}},
		{"quote char in other quotes", `A="it's"` + "\n" + `B='say "hi"'`, []kv{{"A", "it's", 1}, {"B", `say "hi"`, 2}}},
		{"unicode", "A=héllo wörld ✓\nB=\"日本\"", []kv{{"A", "héllo wörld ✓", 1}, {"B", "日本", 2}}},
		{"duplicates in order", "A=1\nA=2", []kv{{"A", "1", 1}, {"A", "2", 2}}},
		{"no final newline after quote", `A="x"`, []kv{{"A", "x", 1}}},
		{"NUL in comment is fine", "# \x00\nA=1", []kv{{"A", "1", 2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("test.env", []byte(tt.in))
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse(%q)\n got %#v\nwant %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseDotenvErrors(t *testing.T) {
	// secret is the value-like text in each input; it must never show up in the
	// error.
	const secret = "s3cr3t"
	tests := []struct {
		name string
		in   string
		line int
		msg  string
	}{
		{"no equals", "A=1\n" + secret, 2, "expected KEY=VALUE"},
		{"bare export", "export " + secret, 1, "expected KEY=VALUE"},
		{"bare export alone", "export", 1, "expected KEY=VALUE"},
		{"missing name", "=" + secret, 1, "missing variable name"},
		{"missing name after export", "export =" + secret, 1, ""}, // "export" is the name: no error
		{"leading digit", "1A=" + secret, 1, "invalid variable name"},
		{"dash", "A-B=" + secret, 1, "invalid variable name"},
		{"dot", "a.b=" + secret, 1, "invalid variable name"},
		{"space inside", "A B=" + secret, 1, "invalid variable name"},
		{"name is value fragment", "A='x'\n" + secret + "+/x==" + secret, 2, "invalid variable name"},
		{"unicode name", "É=" + secret, 1, "invalid variable name"},
		{"unterminated single", "A=1\nB='" + secret + "\nC=2\n", 2, "unterminated quoted value"},
		{"unterminated double", "A=1\n\nB=\"" + secret + "\\\"", 3, "unterminated quoted value"},
		{"unterminated double trailing backslash", "B=\"" + secret + "\\", 1, "unterminated quoted value"},
		{"text after single quote", "A='" + secret + "'" + secret, 1, "unexpected text after closing quote"},
		{"text after double quote", "A=\"" + secret + "\" " + secret, 1, "unexpected text after closing quote"},
		{"text after multiline quote", "A=\"x\n" + secret + "\nx\" " + secret + "\nB=1", 3, "unexpected text after closing quote"},
		{"NUL unquoted", "A=" + secret + "\x00" + secret, 1, "NUL byte"},
		{"NUL quoted", "\nA='" + secret + "\n\x00'", 2, "NUL byte"},
		{"NUL in name", "A\x00=" + secret, 1, "invalid variable name"},
		{"error after BOM and CRLF", "\uFEFFA=1\r\nB='" + secret, 2, "unterminated quoted value"},
		// A lone CR is refused, never kept in a value nor taken as a line end.
		{"lone CR inside a value", "A=" + secret + "\r" + secret, 1, "carriage return"},
		{"lone CR at the end", "A=" + secret + "\r", 1, "carriage return"},
		{"classic Mac line ends", "A=" + secret + "\rB=2\r", 1, "carriage return"},
		{"lone CR after CRLF lines", "A=1\r\nB=2\n\nC='" + secret + "\r'\r\n", 4, "carriage return"},
		{"lone CR in a comment", "# note\r\nA=1\n#\r", 3, "carriage return"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("dir/test.env", []byte(tt.in))
			if tt.msg == "" {
				if err != nil {
					t.Fatalf("Parse(%q): %v", tt.in, err)
				}
				return
			}
			var de *Error
			if !errors.As(err, &de) {
				t.Fatalf("Parse(%q) error = %v (%T), want *Error", tt.in, err, err)
			}
			if de.File != "dir/test.env" || de.Line != tt.line {
				t.Errorf("error at %s:%d, want dir/test.env:%d", de.File, de.Line, tt.line)
			}
			if !strings.Contains(de.Msg, tt.msg) {
				t.Errorf("Msg = %q, want it to contain %q", de.Msg, tt.msg)
			}
			if want := fmt.Sprintf("dir/test.env:%d: %s", tt.line, de.Msg); err.Error() != want {
				t.Errorf("Error() = %q, want %q", err.Error(), want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q leaks the value", err)
			}
		})
	}
}

// dotenvQuote writes one assignment with the real quoter, the one --print
// uses, which Parse must read back exactly.
func dotenvQuote(key, value string) string {
	return key + "=" + Quote(value)
}

// dotenvRoundTrip writes values as a dotenv file, with some decoration the
// parser must skip, and checks they parse back unchanged.
func dotenvRoundTrip(t *testing.T, values []string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("\uFEFF# written by dotenvQuote\n")
	var want []Entry
	line := 2
	for i, v := range values {
		key := fmt.Sprintf("K_%d", i)
		if i%2 == 1 {
			b.WriteString("export ")
		}
		b.WriteString(dotenvQuote(key, v))
		b.WriteString(" # trailing comment\r\n\n")
		want = append(want, Entry{Key: key, Value: v, Line: line})
		line += 2
	}
	got, err := Parse("rt.env", []byte(b.String()))
	if err != nil {
		t.Fatalf("parse of written file: %v\nfile: %q", err, b.String())
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip\n got %#v\nwant %#v\nfile: %q", got, want, b.String())
	}
}

var dotenvTricky = []string{
	"", " ", "plain", `"`, `'`, `\`, `\\`, `\"`, `\n`, "#", " #", "a #b", "\n", "\r\n", "\r",
	"\t", "$", "${X}", "$$", `\$`, "é✓日本", "\uFEFF", "=", "a=b", "'\"'", "x\\\ny", "trailing \\",
	"line1\nline2\n", "-----BEGIN KEY-----\nMIIE+/==\n-----END KEY-----\n", "\xff\xfe invalid utf8",
}

func TestDotenvRoundTrip(t *testing.T) {
	for _, v := range dotenvTricky {
		dotenvRoundTrip(t, []string{v})
	}
	dotenvRoundTrip(t, dotenvTricky)
}

// FuzzParseDotenv checks that any input either parses or yields a *Error
// pointing into the file, and that quoted values written by dotenvQuote round
// trip. values holds the round-trip values separated by NUL, which no value may
// contain.
func FuzzParseDotenv(f *testing.F) {
	for _, v := range dotenvTricky {
		f.Add([]byte("A="+v), v)
		f.Add([]byte(dotenvQuote("A", v)), v+"\x00"+v)
		f.Add([]byte("A='"+v+"'\nB=\""+v+"\"\n"), "x\x00"+v)
	}
	f.Add([]byte("export A=1 # c\r\nB='x\ny'\n#c\nC=\"\\\"\"\n"), "a\x00b")
	f.Fuzz(func(t *testing.T, data []byte, values string) {
		lines := bytes.Count(data, []byte("\n")) + 1
		entries, err := Parse("fuzz.env", data)
		if err != nil {
			var de *Error
			if !errors.As(err, &de) {
				t.Fatalf("error %v is %T, want *Error", err, err)
			}
			if de.Line < 1 || de.Line > lines {
				t.Fatalf("error line %d outside 1..%d: %v", de.Line, lines, err)
			}
		}
		prev := 0
		for _, e := range entries {
			if !environ.ValidName(e.Key) || strings.IndexByte(e.Value, 0) >= 0 {
				t.Fatalf("bad entry %#v", e)
			}
			if e.Line <= prev || e.Line > lines {
				t.Fatalf("entry line %d after %d, file has %d lines", e.Line, prev, lines)
			}
			prev = e.Line
		}
		dotenvRoundTrip(t, strings.Split(values, "\x00"))
	})
}
