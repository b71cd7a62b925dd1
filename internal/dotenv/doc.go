// Package dotenv reads and writes dotenv files: KEY=VALUE lines, quotes,
// export and comments, as --env-file takes them and --print writes them.
//
// The format, as Parse reads it:
//
//   - One assignment per line: `KEY=VALUE`, optionally prefixed with `export `.
//     Spaces and tabs are allowed around KEY and around `=`.
//   - KEY must be a POSIX environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
//   - Blank lines and lines whose first non-blank character is `#` are skipped.
//     A UTF-8 byte order mark at the start of the file is ignored, and CRLF line
//     endings are read as LF (also inside quoted values). A carriage return not
//     followed by a line feed is an error, wherever it is: kept, it would end up
//     unseen in a value, and a classic Mac file would read as one line. Write
//     `\r` inside double quotes for a CR in a value.
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
package dotenv
