// Package examples_test checks the deployment examples (Dockerfile.example,
// the ECS task definition, the IAM policy, the systemd unit) against the code.
//
// Each check reads the example the way its consumer would (Docker, ECS, IAM,
// systemd) and compares it with what the source says, so that a renamed flag,
// a new AWS call or a changed build line fails here instead of in production.
package examples_test

import (
	"bytes"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// repoRoot is the module root, where the Dockerfile's build runs.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod above examples/: %v", err)
	}
	return root
}

// A flagDef is one flag paramexec's config.go registers.
type flagDef struct {
	name string
	bool bool // takes no value
}

// configFiles are where paramexec declares its flags and their rules.
var configFiles = []string{"config.go", "flags.go", "filesflags.go"}

// configFlags reads the flags parseConfig registers, from the syntax of
// ../config.go and ../flags.go: fs.BoolVar(&x, "name", ...), fs.String("name", ...), and
// fs.Var(v, kind, ...) inside "for _, kind := range sourceKinds", where
// sourceKinds is a package-level []string literal.
func configFlags(t *testing.T) map[string]flagDef {
	t.Helper()
	var files []*ast.File
	var decls []ast.Decl
	for _, name := range configFiles {
		f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(repoRoot(t), name), nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		decls = append(decls, f.Decls...)
	}

	// Package-level string lists, for names registered in a loop.
	lists := map[string][]string{}
	for _, decl := range decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.VAR {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.CompositeLit); ok {
					if strs, ok := stringLits(lit.Elts); ok {
						lists[name.Name] = strs
					}
				}
			}
		}
	}

	// nameArg is where the flag's name is, per FlagSet method; bool says
	// whether the flag takes no value. Methods not listed register nothing.
	type reg struct {
		nameArg int
		bool    bool
	}
	registrations := map[string]reg{
		"Bool": {0, true}, "BoolVar": {1, true}, "BoolFunc": {0, true},
		"String": {0, false}, "StringVar": {1, false},
		"Int": {0, false}, "IntVar": {1, false}, "Int64": {0, false}, "Int64Var": {1, false},
		"Uint": {0, false}, "UintVar": {1, false}, "Uint64": {0, false}, "Uint64Var": {1, false},
		"Float64": {0, false}, "Float64Var": {1, false},
		"Duration": {0, false}, "DurationVar": {1, false},
		"Func": {0, false}, "TextVar": {1, false}, "Var": {1, false},
	}

	flags := map[string]flagDef{}
	// rangeVars maps a loop variable to the list it ranges over, while
	// inside that loop.
	var visit func(n ast.Node, rangeVars map[string][]string)
	visit = func(n ast.Node, rangeVars map[string][]string) {
		ast.Inspect(n, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.RangeStmt:
				key, _ := n.Value.(*ast.Ident)
				over, _ := n.X.(*ast.Ident)
				if key != nil && over != nil && lists[over.Name] != nil {
					inner := map[string][]string{key.Name: lists[over.Name]}
					for k, v := range rangeVars {
						inner[k] = v
					}
					visit(n.Body, inner)
					return false
				}
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if recv, ok := sel.X.(*ast.Ident); !ok || recv.Name != "fs" {
					return true
				}
				r, ok := registrations[sel.Sel.Name]
				if !ok || r.nameArg >= len(n.Args) {
					return true
				}
				switch arg := n.Args[r.nameArg].(type) {
				case *ast.BasicLit:
					name, err := strconv.Unquote(arg.Value)
					if err != nil {
						t.Fatalf("config.go: flag name %s: %v", arg.Value, err)
					}
					flags[name] = flagDef{name, r.bool}
				case *ast.Ident:
					names, ok := rangeVars[arg.Name]
					if !ok {
						t.Errorf("config.go: fs.%s registers a flag named by %s, which this test cannot resolve; teach configFlags", sel.Sel.Name, arg.Name)
					}
					for _, name := range names {
						flags[name] = flagDef{name, r.bool}
					}
				default:
					t.Errorf("config.go: fs.%s with a flag name this test cannot resolve; teach configFlags", sel.Sel.Name)
				}
			}
			return true
		})
	}
	for _, f := range files {
		visit(f, nil)
	}

	// The parse must have found the flags cli.md fixes, or it found nothing
	// real and every check built on it would pass vacuously.
	for _, want := range []string{"path", "param", "secret", "env-file", "interval", "grace", "init", "version"} {
		if _, ok := flags[want]; !ok {
			t.Fatalf("config.go: found no --%s among %d flags; has the registration changed shape?", want, len(flags))
		}
	}
	return flags
}

func stringLits(exprs []ast.Expr) ([]string, bool) {
	var out []string
	for _, e := range exprs {
		lit, ok := e.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return nil, false
		}
		s, err := strconv.Unquote(lit.Value)
		if err != nil {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// usageText is the usage constant of ../usage.go, the --help text.
func usageText(t *testing.T) string {
	t.Helper()
	path := filepath.Join(repoRoot(t), "usage.go")
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if name.Name != "usage" || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Fatal("usage.go: usage is not a string literal")
				}
				s, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
		}
	}
	t.Fatal("usage.go: no const usage")
	return ""
}

// The --help text lists every flag at the start of a line, as an option
// list does, and lists no flag that does not exist.
func TestUsageDocumentsEveryFlag(t *testing.T) {
	flags := configFlags(t)
	text := usageText(t)
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-h, )?--([a-z][a-z0-9-]*)`).FindAllStringSubmatch(text, -1) {
		listed[m[1]] = true
	}
	for name := range flags {
		if !listed[name] {
			t.Errorf("usage.go does not document --%s in an option list", name)
		}
	}
	for name := range listed {
		if _, ok := flags[name]; !ok && name != "help" {
			t.Errorf("usage.go documents --%s, which flags.go does not define", name)
		}
	}
	for _, m := range regexp.MustCompile(`PARAMEXEC_([A-Z0-9_]+)`).FindAllStringSubmatch(text, -1) {
		if _, ok := flags[flagOfVar(m[0])]; !ok {
			t.Errorf("usage.go mentions %s, which stands for no flag", m[0])
		}
	}
}

// flagOfVar is the flag a PARAMEXEC_* variable stands for:
// PARAMEXEC_LOG_FORMAT is --log-format.
func flagOfVar(name string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, "PARAMEXEC_"), "_", "-"))
}

// The paramexec binary, built once by the Dockerfile's own build command
// (TestDockerfile checks it is static); tests run it to check that an
// example's flags and PARAMEXEC_* values parse.
var built struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// paramexecBinary runs the Dockerfile's build command, once, and returns
// the binary's path.
func paramexecBinary(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	build := dockerfileBuildCommand(t)
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "paramexec-examples")
		if built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "paramexec")
		built.err = runBuild(root, build, built.path)
	})
	if built.err != nil {
		t.Fatalf("building paramexec with the Dockerfile's command: %v", built.err)
	}
	return built.path
}

// runBuild runs a shell command line of the form "VAR=value ... go build
// ... -o OUT ." with OUT replaced by out, in dir.
func runBuild(dir, line, out string) error {
	words, err := shellWords(line)
	if err != nil {
		return err
	}
	var env []string
	assignment := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)
	for len(words) > 0 && assignment.MatchString(words[0]) {
		env, words = append(env, words[0]), words[1:]
	}
	if len(words) < 2 || words[0] != "go" || words[1] != "build" {
		return errors.New("not a go build command: " + line)
	}
	args := slices.Clone(words[1:])
	i := slices.Index(args, "-o")
	if i < 0 || i+1 >= len(args) {
		return errors.New("no -o in " + line)
	}
	args[i+1] = out
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return errors.New(err.Error() + ": " + stderr.String())
	}
	return nil
}

// shellWords splits a POSIX shell command line without expansions: words
// separated by blanks, with '...' and "..." quoting and backslash escapes.
// Anything that would need a real shell ($, `, ;, |, &, <, >) is refused,
// since the test runs the command without one.
func shellWords(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated ' in " + line)
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			j := strings.IndexByte(line[i+1:], '"')
			if j < 0 {
				return nil, errors.New(`unterminated " in ` + line)
			}
			quoted := line[i+1 : i+1+j]
			if strings.ContainsAny(quoted, "$`\\") {
				return nil, errors.New("expansion inside \"...\" in " + line)
			}
			cur.WriteString(quoted)
			i += j + 1
			inWord = true
		case c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
			inWord = true
		case strings.IndexByte("$`;|&<>(){}*?[#~", c) >= 0:
			return nil, errors.New("needs a shell: " + line)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// runParamexec runs the built binary with args and only env, and returns
// its exit code and combined output.
func runParamexec(t *testing.T, args, env []string) (int, string) {
	t.Helper()
	cmd := exec.Command(paramexecBinary(t), args...)
	cmd.Env = append([]string{}, env...) // never nil: nil would pass ours on
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exitErr):
		return exitErr.ExitCode(), string(out)
	}
	t.Fatalf("running paramexec: %v", err)
	return 0, ""
}
