package examples_test

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// module is paramexec's module path (go.mod).
const module = "github.com/paramexec/paramexec"

// sdkService is the import path prefix of the AWS SDK's service clients.
const sdkService = "github.com/aws/aws-sdk-go-v2/service/"

// iamPrefix maps an SDK service package to its IAM action prefix. A service
// missing here fails the test: its actions need a thought about the policy.
var iamPrefix = map[string]string{
	"ssm":            "ssm",
	"secretsmanager": "secretsmanager",
	"kms":            "kms",
	"sts":            "sts",
}

// An awsCall is one operation the code can call, and where that shows.
type awsCall struct {
	action string // ssm:GetParameters
	where  string // file:line and how
}

// awsCalls finds every AWS operation the paramexec binary can call (the
// module's packages it is built from, as go list -deps says; test helpers
// and benchmarks are not in it), three ways:
//
//   - a method of any interface whose parameters take a service's XInput:
//     the narrow client interfaces (fetch.SSMClient, fetch.SecretsClient…)
//     list exactly the operations called;
//   - a composite literal svc.XInput{…}, which is how any call, through an
//     interface or the concrete client, builds its request;
//   - svc.NewXPaginator, which calls X.
func awsCalls(t *testing.T, root string) []awsCall {
	t.Helper()
	var calls []awsCall
	clientInterfaces := 0
	for _, path := range binarySources(t, root) {
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		// Local package names of the AWS service imports.
		services := map[string]string{}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			svc, ok := strings.CutPrefix(p, sdkService)
			if !ok || strings.Contains(svc, "/") {
				continue // types, internal packages: no operations
			}
			local := svc
			if imp.Name != nil {
				local = imp.Name.Name
			}
			services[local] = svc
		}
		if len(services) == 0 {
			continue
		}
		// svcType resolves svc.Name (or *svc.Name) to the service and Name.
		svcType := func(e ast.Expr) (svc, name string, ok bool) {
			if star, isStar := e.(*ast.StarExpr); isStar {
				e = star.X
			}
			sel, isSel := e.(*ast.SelectorExpr)
			if !isSel {
				return "", "", false
			}
			pkg, isIdent := sel.X.(*ast.Ident)
			if !isIdent || services[pkg.Name] == "" {
				return "", "", false
			}
			return services[pkg.Name], sel.Sel.Name, true
		}
		add := func(svc, op string, pos token.Pos, how string) {
			prefix, ok := iamPrefix[svc]
			if !ok {
				t.Errorf("%s: calls AWS service %q, which this test has no IAM prefix for; add it to iamPrefix and the policy", fset.Position(pos), svc)
				return
			}
			calls = append(calls, awsCall{action: prefix + ":" + op, where: fset.Position(pos).String() + " " + how})
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.TypeSpec:
				iface, ok := n.Type.(*ast.InterfaceType)
				if !ok {
					return true
				}
				isClient := strings.HasSuffix(n.Name.Name, "Client")
				for _, m := range iface.Methods.List {
					fn, ok := m.Type.(*ast.FuncType)
					if !ok || len(m.Names) == 0 {
						if isClient {
							t.Errorf("%s: %s embeds %s; list the operations themselves so this test sees them", fset.Position(m.Pos()), n.Name.Name, types(m.Type))
						}
						continue
					}
					found := false
					for _, p := range fn.Params.List {
						if svc, name, ok := svcType(p.Type); ok && strings.HasSuffix(name, "Input") {
							op := strings.TrimSuffix(name, "Input")
							if op != m.Names[0].Name {
								t.Errorf("%s: %s.%s takes %s.%s: the method name should be the operation", fset.Position(m.Pos()), n.Name.Name, m.Names[0].Name, svc, name)
							}
							add(svc, op, m.Pos(), "method of "+n.Name.Name)
							found = true
						}
					}
					if isClient && !found {
						t.Errorf("%s: %s.%s takes no AWS XInput, so this test cannot tell which IAM action it needs", fset.Position(m.Pos()), n.Name.Name, m.Names[0].Name)
					}
					if found && isClient {
						clientInterfaces++
					}
				}
			case *ast.CompositeLit:
				if svc, name, ok := svcType(n.Type); ok && strings.HasSuffix(name, "Input") {
					add(svc, strings.TrimSuffix(name, "Input"), n.Pos(), name+"{…}")
				}
			case *ast.CallExpr:
				if svc, name, ok := svcType(n.Fun); ok && strings.HasPrefix(name, "New") && strings.HasSuffix(name, "Paginator") {
					add(svc, strings.TrimSuffix(strings.TrimPrefix(name, "New"), "Paginator"), n.Pos(), name)
				}
			}
			return true
		})
	}
	// Vacuity guard: the scan must see the client interfaces fetch has
	// always had, or a change of shape made it blind.
	if clientInterfaces == 0 || !slices.ContainsFunc(calls, func(c awsCall) bool { return c.action == "ssm:GetParametersByPath" }) {
		t.Fatalf("scan found no client interface methods (%d) or no ssm:GetParametersByPath; is it still looking in the right place?", clientInterfaces)
	}
	return calls
}

// binarySources lists the Go files the paramexec binary is built from that
// belong to this module, by asking go list, which applies build tags and
// follows imports exactly as go build does.
func binarySources(t *testing.T, root string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-json=Dir,GoFiles,Module", ".")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go list -deps: %v\n%s", err, stderr)
	}
	var files []string
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var pkg struct {
			Dir     string
			GoFiles []string
			Module  *struct{ Path string }
		}
		if err := dec.Decode(&pkg); err != nil {
			t.Fatal(err)
		}
		if pkg.Module == nil || pkg.Module.Path != module {
			continue // the standard library and the SDK itself
		}
		for _, f := range pkg.GoFiles {
			files = append(files, filepath.Join(pkg.Dir, f))
		}
	}
	return files
}

func types(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return types(e.X) + "." + e.Sel.Name
	}
	return "an interface"
}

// An IAM policy document, the parts this test reads.
type policy struct {
	Version   string
	Statement []statement
}

type statement struct {
	Sid       string
	Effect    string
	Action    stringList
	NotAction stringList
	Resource  stringList
	Condition map[string]map[string]stringList
}

// stringList is IAM's "one string or a list of strings".
type stringList []string

func (l *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = stringList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*l = many
	return nil
}

func readPolicy(t *testing.T) policy {
	t.Helper()
	data, err := os.ReadFile("iam-policy.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields() // a misspelt "Resources" would silently widen nothing, or everything
	var p policy
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("iam-policy.json: %v", err)
	}
	return p
}

// allowedResources lists the resources the policy allows action on.
func (p policy) allowedResources(action string) []string {
	var out []string
	for _, st := range p.Statement {
		if st.Effect == "Allow" && slices.Contains(st.Action, action) {
			out = append(out, st.Resource...)
		}
	}
	return out
}

// iamMatch reports whether an IAM resource pattern matches arn: "*" any
// run of characters ("/" included), "?" any one.
func iamMatch(pattern, arn string) bool {
	re := "^" + strings.NewReplacer(`\*`, ".*", `\?`, ".").Replace(regexp.QuoteMeta(pattern)) + "$"
	return regexp.MustCompile(re).MatchString(arn)
}

func allows(p policy, action, arn string) bool {
	return slices.ContainsFunc(p.allowedResources(action), func(r string) bool { return iamMatch(r, arn) })
}

// Every AWS operation the code calls is allowed by the example policy, and
// the policy allows nothing the code does not call, so the two never drift.
func TestIAMPolicyCoversEveryAWSCall(t *testing.T) {
	calls := awsCalls(t, repoRoot(t))
	p := readPolicy(t)

	if p.Version != "2012-10-17" {
		t.Errorf("Version %q, want 2012-10-17 (the older one does not support policy variables)", p.Version)
	}
	allowed := map[string]statement{}
	sids := map[string]bool{}
	for _, st := range p.Statement {
		if !regexp.MustCompile(`^[A-Za-z0-9]+$`).MatchString(st.Sid) || sids[st.Sid] {
			t.Errorf("statement Sid %q: want a unique [A-Za-z0-9]+ name saying what it is for", st.Sid)
		}
		sids[st.Sid] = true
		if st.Effect != "Allow" || len(st.NotAction) > 0 {
			t.Errorf("%s: want Effect Allow with Action, got Effect %q, NotAction %v", st.Sid, st.Effect, st.NotAction)
		}
		if len(st.Action) == 0 || len(st.Resource) == 0 {
			t.Errorf("%s: no Action or no Resource", st.Sid)
		}
		for _, a := range st.Action {
			if strings.ContainsAny(a, "*?") {
				t.Errorf("%s: wildcard action %s is not least privilege", st.Sid, a)
			}
			allowed[a] = st
		}
		// Only BatchGetSecretValue and DescribeParameters have no resource
		// type: AWS authorizes each secret BatchGetSecretValue returns
		// through GetSecretValue instead, and AWS's own examples grant
		// DescribeParameters on "*" ("Restricting access to Systems
		// Manager parameters using IAM policies", Systems Manager User
		// Guide); it lists names and versions, never a value.
		if slices.Contains(st.Resource, "*") && !unscoped(st.Action) {
			t.Errorf("%s: Resource \"*\" for %v; only secretsmanager:BatchGetSecretValue or ssm:DescribeParameters, alone in its statement, needs it", st.Sid, st.Action)
		}
	}

	needed := map[string][]string{}
	for _, c := range calls {
		needed[c.action] = append(needed[c.action], c.where)
	}
	actions := make([]string, 0, len(needed))
	for a := range needed {
		actions = append(actions, a)
	}
	sort.Strings(actions)
	t.Logf("AWS actions the code calls: %v", actions)
	for _, a := range actions {
		if _, ok := allowed[a]; !ok {
			t.Errorf("the code calls %s (%s) but iam-policy.json does not allow it", a, needed[a][0])
		}
	}
	// SecureString parameters and secrets under a customer managed key need
	// kms:Decrypt; the SDK calls it on paramexec's behalf, so no code shows it.
	needed["kms:Decrypt"] = nil
	for a, st := range allowed {
		if _, ok := needed[a]; !ok {
			t.Errorf("%s allows %s, which the code never calls: not least privilege", st.Sid, a)
		}
	}

	kms, ok := allowed["kms:Decrypt"]
	if !ok {
		t.Fatal("no kms:Decrypt: SecureString parameters under a customer managed key cannot be read")
	}
	via := kms.Condition["StringEquals"]["kms:ViaService"]
	for _, svc := range []string{"ssm", "secretsmanager"} {
		if !slices.ContainsFunc(via, func(v string) bool {
			return regexp.MustCompile(`^` + svc + `\.[a-z0-9-]+\.amazonaws\.com$`).MatchString(v)
		}) {
			t.Errorf("%s: kms:ViaService does not allow %s.REGION.amazonaws.com (got %v)", kms.Sid, svc, via)
		}
	}
	for _, r := range kms.Resource {
		if !strings.HasPrefix(r, "arn:aws:kms:") || strings.Contains(r, "*") {
			t.Errorf("%s: kms:Decrypt on %s; scope it to the key's ARN", kms.Sid, r)
		}
	}

	// Scope: Parameter Store actions on the app's path only, Secrets
	// Manager actions on its secrets only.
	for a, st := range allowed {
		svc, _, _ := strings.Cut(a, ":")
		for _, r := range st.Resource {
			switch svc {
			case "ssm":
				if r == "*" && unscoped(st.Action) {
					continue
				}
				if !strings.HasPrefix(r, "arn:aws:ssm:") || !strings.Contains(r, ":parameter/myapp/prod") {
					t.Errorf("%s: %s on %s, outside parameter/myapp/prod", st.Sid, a, r)
				}
			case "secretsmanager":
				if r != "*" && (!strings.HasPrefix(r, "arn:aws:secretsmanager:") || !strings.Contains(r, ":secret:myapp/prod/")) {
					t.Errorf("%s: %s on %s, outside secret:myapp/prod/", st.Sid, a, r)
				}
			}
		}
	}
}

// unscoped reports whether actions are one action that has no resource
// type, and so takes Resource "*".
func unscoped(actions []string) bool {
	return slices.Equal(actions, []string{"secretsmanager:BatchGetSecretValue"}) || slices.Equal(actions, []string{"ssm:DescribeParameters"})
}

func TestIAMMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, arn string
		want         bool
	}{
		{"arn:aws:ssm:us-east-1:123456789012:parameter/myapp/prod/*", "arn:aws:ssm:us-east-1:123456789012:parameter/myapp/prod/db/password", true},
		{"arn:aws:ssm:us-east-1:123456789012:parameter/myapp/prod/*", "arn:aws:ssm:us-east-1:123456789012:parameter/myapp/prod", false},
		{"arn:aws:ssm:us-east-1:123456789012:parameter/myapp/prod", "arn:aws:ssm:us-east-1:123456789012:parameter/myapp/prodX", false},
		{"arn:aws:secretsmanager:*:123456789012:secret:a-??????", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:a-AbCdEf", true},
		{"arn:aws:secretsmanager:*:123456789012:secret:a-??????", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:a-AbCdE", false},
	} {
		if got := iamMatch(tc.pattern, tc.arn); got != tc.want {
			t.Errorf("iamMatch(%s, %s) = %v, want %v", tc.pattern, tc.arn, got, tc.want)
		}
	}
}

// TestIAMDocListsTheIAMActions keeps the IAM section of docs/iam.md (the
// README links it), which is what a reader copies into a role, to exactly
// the actions iam-policy.json allows (and TestIAMPolicyCoversEveryAWSCall
// ties those to the code): its table of actions and its policy example may
// name no other and leave none out.
func TestIAMDocListsTheIAMActions(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "iam.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n## IAM\n")
	if !ok {
		t.Fatal("docs/iam.md has no ## IAM section")
	}
	section, _, _ = strings.Cut(section, "\n## ")

	want := map[string]bool{}
	for _, st := range readPolicy(t).Statement {
		for _, a := range st.Action {
			want[a] = true
		}
	}
	table := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z]+:[A-Za-z]+)` \\|").FindAllStringSubmatch(section, -1) {
		table[m[1]] = true
	}
	block := map[string]bool{}
	_, js, ok := strings.Cut(section, "```json\n")
	if !ok {
		t.Fatal("the IAM section has no ```json policy example")
	}
	js, _, _ = strings.Cut(js, "```")
	var example policy
	if err := json.Unmarshal([]byte(js), &example); err != nil {
		t.Fatalf("the IAM section's policy example is not a policy: %v", err)
	}
	for _, st := range example.Statement {
		for _, a := range st.Action {
			block[a] = true
		}
	}
	for name, got := range map[string]map[string]bool{"table of actions": table, "policy example": block} {
		for a := range want {
			if !got[a] {
				t.Errorf("docs/iam.md %s lacks %s, which iam-policy.json allows", name, a)
			}
		}
		for a := range got {
			if !want[a] {
				t.Errorf("docs/iam.md %s names %s, which iam-policy.json does not allow", name, a)
			}
		}
	}
}
