package examples_test

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// staticBuild is the one build line the Dockerfile must use: CGO off for a
// static binary that runs in scratch, paths trimmed, symbols and DWARF off.
const staticBuild = `CGO_ENABLED=0 go build -trimpath -tags nethttpomithttp2 -ldflags='-s -w' -o /out/paramexec .`

// An instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int    // where it starts, for messages
	cmd  string // upper-cased: FROM, RUN, COPY, ...
	args string // the rest, trimmed
}

// A stage is a FROM and the instructions up to the next FROM.
type stage struct {
	base, name string
	instrs     []instruction
}

// parseDockerfile reads instructions as BuildKit does for the subset the
// example uses: "#" comment lines (parser directives included), blank
// lines, and "\" continuations, which may be interleaved with comments.
// Heredocs are refused rather than misread.
func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var instrs []instruction
	var cur *instruction
	for i, raw := range strings.Split(string(data), "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.Contains(line, "<<") {
			t.Fatalf("%s:%d: heredocs are beyond this test's parser", path, i+1)
		}
		cont := strings.HasSuffix(line, `\`)
		line = strings.TrimSpace(strings.TrimSuffix(line, `\`))
		if cur == nil {
			cmd, args, _ := strings.Cut(line, " ")
			instrs = append(instrs, instruction{line: i + 1, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
			cur = &instrs[len(instrs)-1]
		} else {
			cur.args = strings.TrimSpace(cur.args + " " + line)
		}
		if !cont {
			cur = nil
		}
	}
	var stages []stage
	for _, in := range instrs {
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			for len(f) > 0 && strings.HasPrefix(f[0], "--") { // --platform=...
				f = f[1:]
			}
			if len(f) == 0 {
				t.Fatalf("line %d: FROM without an image", in.line)
			}
			s := stage{base: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("line %d: %s before the first FROM", in.line, in.cmd)
			}
			continue
		}
		stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, in)
	}
	if len(stages) == 0 {
		t.Fatalf("%s: no FROM", path)
	}
	return stages
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.instrs {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// A copy is a COPY instruction: its --from stage, sources and destination.
type copyInstr struct {
	from string
	srcs []string
	dst  string
}

func (s stage) copies() []copyInstr {
	var out []copyInstr
	for _, in := range s.all("COPY") {
		var c copyInstr
		f := strings.Fields(in.args)
		for len(f) > 0 && strings.HasPrefix(f[0], "--") {
			if v, ok := strings.CutPrefix(f[0], "--from="); ok {
				c.from = v
			}
			f = f[1:]
		}
		if len(f) >= 2 {
			c.srcs, c.dst = f[:len(f)-1], f[len(f)-1]
		}
		out = append(out, c)
	}
	return out
}

// execForm parses an ENTRYPOINT or CMD written as a JSON array. Anything
// else is shell form, which Docker runs as /bin/sh -c.
func execForm(in instruction) ([]string, error) {
	if !strings.HasPrefix(in.args, "[") {
		return nil, fmt.Errorf("line %d: %s %s is shell form; want a JSON array", in.line, in.cmd, in.args)
	}
	var argv []string
	if err := json.Unmarshal([]byte(in.args), &argv); err != nil {
		// Docker falls back to shell form for an invalid array, silently.
		return nil, fmt.Errorf("line %d: %s is not a valid JSON array of strings (Docker would run it as shell form): %v", in.line, in.cmd, err)
	}
	if len(argv) == 0 || argv[0] == "" {
		return nil, fmt.Errorf("line %d: %s is empty", in.line, in.cmd)
	}
	return argv, nil
}

func dockerfilePath(t *testing.T) string { return filepath.Join(repoRoot(t), "Dockerfile.example") }

// finalStage returns the image's stage and its single ENTRYPOINT and CMD.
func finalStage(t *testing.T) (stage, []string, []string) {
	t.Helper()
	stages := parseDockerfile(t, dockerfilePath(t))
	final := stages[len(stages)-1]
	var argvs [2][]string
	for i, cmd := range []string{"ENTRYPOINT", "CMD"} {
		ins := final.all(cmd)
		if len(ins) != 1 {
			t.Fatalf("final stage: %d %s instructions, want 1", len(ins), cmd)
		}
		argv, err := execForm(ins[0])
		if err != nil {
			t.Fatal(err)
		}
		argvs[i] = argv
	}
	return final, argvs[0], argvs[1]
}

// dockerfileBuildCommand finds the builder stage (the one the final stage
// copies /out/paramexec from) and returns its go build line.
func dockerfileBuildCommand(t *testing.T) string {
	t.Helper()
	stages := parseDockerfile(t, dockerfilePath(t))
	final := stages[len(stages)-1]
	var builder string
	for _, c := range final.copies() {
		if c.dst == "/paramexec" && len(c.srcs) == 1 && c.srcs[0] == "/out/paramexec" {
			builder = c.from
		}
	}
	if builder == "" {
		t.Fatal("final stage has no COPY --from=BUILDER /out/paramexec /paramexec")
	}
	for _, s := range stages[:len(stages)-1] {
		if s.name != builder {
			continue
		}
		if !strings.HasPrefix(s.base, "golang:1.26") {
			t.Errorf("builder stage %q is FROM %s, want golang:1.26 (go.mod's go 1.26)", builder, s.base)
		}
		var builds []string
		for _, in := range s.all("RUN") {
			if strings.Contains(in.args, "go build") {
				builds = append(builds, in.args)
			}
		}
		if len(builds) != 1 {
			t.Fatalf("builder stage %q: %d RUN lines with go build, want 1", builder, len(builds))
		}
		return builds[0]
	}
	t.Fatalf("no stage named %q to copy /out/paramexec from", builder)
	return ""
}

func TestDockerfile(t *testing.T) {
	final, entrypoint, cmd := finalStage(t)

	if final.base != "scratch" && !strings.HasPrefix(final.base, "gcr.io/distroless/static") {
		t.Errorf("final stage FROM %s; want scratch or gcr.io/distroless/static", final.base)
	}
	if len(entrypoint) != 1 || entrypoint[0] != "/paramexec" {
		t.Errorf("ENTRYPOINT %q, want [\"/paramexec\"] (CMD is the command it runs)", entrypoint)
	}

	// CMD runs something the image holds: an absolute path copied in.
	copied := map[string]bool{}
	for _, c := range final.copies() {
		for _, src := range c.srcs {
			copied[filepath.Join(c.dst, filepath.Base(src))] = true
			copied[c.dst] = true
		}
	}
	if !filepath.IsAbs(cmd[0]) || !copied[cmd[0]] {
		t.Errorf("CMD runs %s, which no COPY in the final stage puts there", cmd[0])
	}
	if final.base == "scratch" && !copied["/etc/ssl/certs/ca-certificates.crt"] {
		t.Error("scratch stage without /etc/ssl/certs/ca-certificates.crt: TLS to AWS would fail")
	}

	users := final.all("USER")
	if len(users) == 0 {
		t.Fatal("final stage has no USER: it would run as root")
	}
	user := users[len(users)-1].args
	ids := strings.Split(user, ":")
	for _, id := range ids {
		if n, err := strconv.Atoi(id); err != nil || n == 0 || len(ids) > 2 {
			t.Errorf("USER %s: want numeric non-zero UID[:GID] (runAsNonRoot cannot check names, and scratch has no /etc/passwd)", user)
			break
		}
	}

	// Without PARAMEXEC_INIT the app would be PID 1 whenever no interval is
	// set, and the kernel ignores SIGTERM for a PID 1 without a handler.
	init := false
	for _, in := range final.all("ENV") {
		for _, kv := range strings.Fields(in.args) {
			if kv == "PARAMEXEC_INIT=true" {
				init = true
			}
		}
	}
	if !init {
		t.Error("final stage does not set ENV PARAMEXEC_INIT=true")
	}

	build := dockerfileBuildCommand(t)
	if build != staticBuild {
		t.Errorf("builder runs\n\t%s\nwant\n\t%s", build, staticBuild)
	}

	// The same command, run here: its output must be a static ELF.
	bin := paramexecBinary(t)
	if problems := notStatic(t, bin, repoRoot(t)); len(problems) > 0 {
		t.Errorf("%s is not the static, stripped binary the build line promises:\n\t%s", bin, strings.Join(problems, "\n\t"))
	}
}

// notStatic lists what makes bin unfit for scratch: a dynamic loader or
// shared libraries, symbols or DWARF left in (-s -w), or build paths (-trimpath).
func notStatic(t *testing.T, bin, buildDir string) []string {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	defer f.Close()
	var problems []string
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			problems = append(problems, "PT_INTERP program header: needs a dynamic loader")
		case elf.PT_DYNAMIC:
			problems = append(problems, "PT_DYNAMIC program header: dynamically linked")
		}
	}
	if f.Section(".dynamic") != nil {
		problems = append(problems, ".dynamic section")
	}
	if libs, err := f.ImportedLibraries(); err != nil {
		problems = append(problems, "reading DT_NEEDED: "+err.Error())
	} else if len(libs) > 0 {
		problems = append(problems, fmt.Sprintf("DT_NEEDED %v", libs))
	}
	if f.Section(".symtab") != nil {
		problems = append(problems, ".symtab present: -s did not apply")
	}
	for _, name := range []string{".debug_info", ".zdebug_info"} {
		if f.Section(name) != nil {
			problems = append(problems, name+" present: -w did not apply")
		}
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(buildDir+"/")) {
		problems = append(problems, "holds the build directory "+buildDir+": -trimpath did not apply")
	}
	return problems
}
