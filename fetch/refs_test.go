package fetch

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/paramexec/paramexec/internal/motoserver"
)

func TestParseReference(t *testing.T) {
	const (
		ssmARN = "arn:aws:ssm:us-east-1:123456789012:parameter"
		smARN  = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf"
	)
	param := func(name, sel string) *Param {
		return &Param{Name: name, Selector: sel, Var: "V", Rank: refRank, Ref: true}
	}
	secret := func(id, key, stage, version string) *Secret {
		return &Secret{ID: id, JSONKey: key, VersionStage: stage, VersionID: version, Var: "V", Rank: refRank}
	}
	for _, tc := range []struct {
		value  string
		param  *Param
		secret *Secret
	}{
		{ssmARN + "/DATABASE_PASSWORD", param(ssmARN+"/DATABASE_PASSWORD", ""), nil},
		{ssmARN + "/app/db/password", param(ssmARN+"/app/db/password", ""), nil},
		{ssmARN + "/app/db/password:live", param(ssmARN+"/app/db/password", "live"), nil},
		{ssmARN + "/app/db/password:12", param(ssmARN+"/app/db/password", "12"), nil},
		{"arn:aws-us-gov:ssm:us-gov-west-1:123456789012:parameter/x", param("arn:aws-us-gov:ssm:us-gov-west-1:123456789012:parameter/x", ""), nil},
		{"ssm:/app/db/password", param("/app/db/password", ""), nil},
		{"ssm:/app/db/password:3", param("/app/db/password", "3"), nil},
		{"ssm:/app/db/password:live", param("/app/db/password", "live"), nil},
		{"ssm:/aws/reference/secretsmanager/db", param("/aws/reference/secretsmanager/db", ""), nil},
		{smARN, nil, secret(smARN, "", "", "")},
		{smARN + ":password::", nil, secret(smARN, "password", "", "")},
		{smARN + ":password", nil, secret(smARN, "password", "", "")},
		{smARN + "::AWSPREVIOUS:", nil, secret(smARN, "", "AWSPREVIOUS", "")},
		{smARN + ":::0a1b2c3d-aaaa-bbbb-cccc-0123456789ab", nil, secret(smARN, "", "", "0a1b2c3d-aaaa-bbbb-cccc-0123456789ab")},
		{smARN + ":user name:AWSCURRENT:", nil, secret(smARN, "user name", "AWSCURRENT", "")},
		{smARN + ":::", nil, secret(smARN, "", "", "")},
		{"arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db", nil, secret("arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db", "", "", "")},
		{"secretsmanager:prod/db", nil, secret("prod/db", "", "", "")},
		{"secretsmanager:prod/db#password", nil, secret("prod/db", "password", "", "")},
		{"secretsmanager:prod/db#key#with#hashes", nil, secret("prod/db", "key#with#hashes", "", "")},
	} {
		ref, ok := ParseReference("V", tc.value)
		if !ok {
			t.Errorf("%q: not taken for a reference", tc.value)
			continue
		}
		if ref.Var != "V" || (ref.Param == nil) == (ref.Secret == nil) {
			t.Errorf("%q: %+v", tc.value, ref)
			continue
		}
		switch {
		case tc.param != nil && (ref.Param == nil || *ref.Param != *tc.param):
			t.Errorf("%q: param %+v, want %+v", tc.value, ref.Param, tc.param)
		case tc.secret != nil && (ref.Secret == nil || *ref.Secret != *tc.secret):
			t.Errorf("%q: secret %+v, want %+v", tc.value, ref.Secret, tc.secret)
		}
	}
}

// lookAlikes are values that must reach the child untouched.
var lookAlikes = []string{
	"",
	"plain value",
	"https://ssm.us-east-1.amazonaws.com/",
	"https://example.com/ssm:/x",
	"see ssm:/app/db for details",
	"value with ssm:/x inside",
	"ssm:",
	"ssm:app/db",
	"ssm:/",
	"ssm://host/path",
	"ssm:/app/db/",
	"ssm:/app db",
	"ssm:/app/db:",
	"ssm:/app/db:x:y",
	" ssm:/app/db",
	"ssm:/app/db ",
	"ssm:/app/db\n",
	"SSM:/app/db",
	"Ssm:/app/db",
	"secretsmanager:",
	"secretsmanager: prod/db",
	"secretsmanager:prod/db#",
	"secretsmanager:prod db",
	"secretsmanager:prod:db",
	"my secretsmanager:prod/db",
	"arn:aws:s3:::my-bucket/key",
	"arn:aws:iam::123456789012:role/app",
	"arn:aws:sns:us-east-1:123456789012:topic",
	"arn:aws:kms:us-east-1:123456789012:key/0a1b2c3d",
	"arn:aws:ssm:us-east-1:123456789012:document/AWS-RunShellScript",
	"arn:aws:ssm:us-east-1:123456789012:parameter",
	"arn:aws:ssm:us-east-1:123456789012:parameter/",
	"arn:aws:ssm:us-east-1:123456789012:parameter/a b",
	"arn:aws:ssm:us-east-1:1234:parameter/x",
	"arn:aws:ssm::123456789012:parameter/x",
	"arn:aws:ssm:US-EAST-1:123456789012:parameter/x",
	"arn:notaws:ssm:us-east-1:123456789012:parameter/x",
	"arn:aws:secretsmanager:us-east-1:123456789012:secret:",
	"arn:aws:secretsmanager:us-east-1:123456789012:secret:db:key:stage:id:extra",
	"arn:aws:secretsmanager:us-east-1:123456789012:secret:db::stage with space:",
	"arn:aws:secretsmanager:us-east-1:123456789012:secret:bad name",
	"arn:aws:secretsmanager:us-east-1:123456789012:rotation:db",
	"arn:aws",
	"arn:",
	"postgres://user@host/db?sslmode=require",
	"{\"json\": \"ssm:/x\"}",
}

func TestParseReferenceLeavesLookAlikes(t *testing.T) {
	for _, v := range lookAlikes {
		if ref, ok := ParseReference("V", v); ok {
			t.Errorf("%q taken for a reference: %+v %+v", v, ref.Param, ref.Secret)
		}
	}
}

func FuzzParseReference(f *testing.F) {
	for _, v := range lookAlikes {
		f.Add(v)
	}
	for _, v := range []string{
		"ssm:/app/db", "ssm:/a:1", "secretsmanager:db#k",
		"arn:aws:ssm:us-east-1:123456789012:parameter/x:l",
		"arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf:k:s:v",
	} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, value string) {
		ref, ok := ParseReference("V", value)
		if !ok {
			return
		}
		if !strings.HasPrefix(value, "arn:") && !strings.HasPrefix(value, "ssm:/") && !strings.HasPrefix(value, "secretsmanager:") {
			t.Fatalf("%q taken for a reference without a reference prefix", value)
		}
		if (ref.Param == nil) == (ref.Secret == nil) || ref.Var != "V" {
			t.Fatalf("%q: malformed reference %+v", value, ref)
		}
		switch {
		case ref.Param != nil:
			if ref.Param.Name == "" || !ref.Param.Ref || ref.Param.Rank != refRank || !strings.Contains(value, ref.Param.Name) {
				t.Fatalf("%q: param %+v", value, ref.Param)
			}
		case ref.Secret != nil:
			if ref.Secret.ID == "" || ref.Secret.Rank != refRank || !strings.Contains(value, ref.Secret.ID) {
				t.Fatalf("%q: secret %+v", value, ref.Secret)
			}
		}
		if strings.ContainsAny(value, " \t\n") && ref.Secret == nil {
			t.Fatalf("%q: whitespace in a parameter reference", value)
		}
	})
}

func TestFindReferences(t *testing.T) {
	refs := findReferences([]string{
		"B=ssm:/b",
		"A=ssm:/a",
		"PLAIN=hello",
		"URL=https://ssm.example.com",
		"TWICE=ssm:/first",
		"TWICE=not a reference any more",
		"AGAIN=plain",
		"AGAIN=secretsmanager:db",
		"NOEQUALS",
	})
	var got []string
	for _, r := range refs {
		got = append(got, r.Var)
	}
	if want := []string{"A", "AGAIN", "B"}; !slices.Equal(got, want) {
		t.Errorf("references in %v, want %v", got, want)
	}
}

func TestRefSourceResolvesEveryForm(t *testing.T) {
	u := uniq(t)
	base := "/" + u
	putVersions(t, base+"/db/password", "SecureString", "param-1", "param-2")
	moto.LabelParameter(t, base+"/db/password", 1, "stable")
	topName := strings.ReplaceAll(u, "-", "_") + "_TOP" // a name without "/"
	moto.PutParameter(t, topName, "top-value", "String")
	dbARN, v1 := createSecret(t, u+"/db", `{"password":"pw-1","user":"app"}`, nil)
	moto.PutSecretValue(t, u+"/db", `{"password":"pw-2","user":"app"}`)
	createSecret(t, u+"/token", "token-value", nil)
	euSM := secretsmanager.NewFromConfig(direct(), func(o *secretsmanager.Options) { o.Region = "eu-west-1" })
	euOut, err := euSM.CreateSecret(t.Context(), &secretsmanager.CreateSecretInput{Name: aws.String(u + "/eu"), SecretString: aws.String("eu-value")})
	if err != nil {
		t.Fatal(err)
	}
	ssmARN := "arn:aws:ssm:" + motoserver.Region + ":" + account + ":parameter"

	inherited := []string{
		"PATH=/usr/bin",
		"SSM_ARN=" + ssmARN + base + "/db/password",
		"SSM_ARN_TOP=" + ssmARN + "/" + topName,
		"SSM_ARN_LABEL=" + ssmARN + base + "/db/password:stable",
		"SSM_SHORT=ssm:" + base + "/db/password",
		"SSM_SHORT_VERSION=ssm:" + base + "/db/password:1",
		"SSM_TO_SECRET=ssm:" + secretsRefPrefix + u + "/token",
		"SM_ARN=" + dbARN,
		"SM_ARN_KEY=" + dbARN + ":password::",
		"SM_ARN_PREVIOUS=" + dbARN + ":password:AWSPREVIOUS:",
		"SM_ARN_VERSION=" + dbARN + ":user::" + v1,
		"SM_ARN_VERSION_WHOLE=" + dbARN + ":::" + v1,
		"SM_ARN_PARTIAL=" + dbARN[:len(dbARN)-7] + ":password",
		"SM_ARN_EU=" + aws.ToString(euOut.ARN),
		"SM_SHORT=secretsmanager:" + u + "/token",
		"SM_SHORT_KEY=secretsmanager:" + u + "/db#user",
	}
	for i, v := range lookAlikes {
		inherited = append(inherited, "LOOKALIKE_"+string(rune('A'+i%26))+strings.Repeat("X", i/26)+"="+v)
	}

	refs := findReferences(inherited)
	if len(refs) != 15 {
		t.Fatalf("%d references found, want 15", len(refs))
	}
	proxy, cfg := proxied(t)
	layers, err := loadAll(t.Context(), refSources(refs, clientsFor(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	env, effective := Merge(inherited, layers, false)
	want := map[string]string{
		"SSM_ARN":              "param-2",
		"SSM_ARN_TOP":          "top-value",
		"SSM_ARN_LABEL":        "param-1",
		"SSM_SHORT":            "param-2",
		"SSM_SHORT_VERSION":    "param-1",
		"SSM_TO_SECRET":        "token-value",
		"SM_ARN":               `{"password":"pw-2","user":"app"}`,
		"SM_ARN_KEY":           "pw-2",
		"SM_ARN_PREVIOUS":      "pw-1",
		"SM_ARN_VERSION":       "app",
		"SM_ARN_VERSION_WHOLE": `{"password":"pw-1","user":"app"}`,
		"SM_ARN_PARTIAL":       "pw-2",
		"SM_ARN_EU":            "eu-value",
		"SM_SHORT":             "token-value",
		"SM_SHORT_KEY":         "app",
	}
	if len(effective) != len(want) {
		t.Errorf("%d variables resolved, want %d", len(effective), len(want))
	}
	for _, v := range effective {
		if v.Rank != refRank {
			t.Errorf("%s has rank %d, want %d", v.Name, v.Rank, refRank)
		}
	}
	seen := map[string]bool{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if seen[k] {
			t.Errorf("%s twice in the environment", k)
		}
		seen[k] = true
		if w, ok := want[k]; ok {
			if v != w {
				t.Errorf("%s = %q, want %q", k, v, w)
			}
			continue
		}
		if !slices.Contains(inherited, kv) {
			t.Errorf("%s changed though it is no reference", k)
		}
	}
	if len(env) != len(inherited) {
		t.Errorf("%d variables in the environment, %d inherited", len(env), len(inherited))
	}
	// Same-Region secrets following AWSCURRENT share one batch.
	if n := proxy.Counts().ByOp["secretsmanager:BatchGetSecretValue"]; n != 1 {
		t.Errorf("%d BatchGetSecretValue calls, want 1", n)
	}
}

func TestRefSourceErrors(t *testing.T) {
	u := uniq(t)
	base := "/" + u
	moto.PutParameter(t, base+"/there", "there-value", "String")
	dbARN, _ := createSecret(t, u+"/db", `{"user":"user-value"}`, nil)
	for _, tc := range []struct {
		name string
		env  string
		want []string
	}{
		{"parameter", "DB_URL=ssm:" + base + "/gone", []string{"variable DB_URL", base + "/gone", "not found"}},
		{"parameter ARN", "DB_URL=arn:aws:ssm:us-east-1:" + account + ":parameter" + base + "/gone", []string{"variable DB_URL", base + "/gone", "not found"}},
		{"label", "DB_URL=ssm:" + base + "/there:nolabel", []string{"variable DB_URL", base + "/there:nolabel", "not found"}},
		{"secret", "DB_PASSWORD=secretsmanager:" + u + "/gone", []string{"variable DB_PASSWORD", u + "/gone", "not found"}},
		{"secret ARN", "DB_PASSWORD=" + dbARN + "x:password::", []string{"variable DB_PASSWORD", dbARN + "x", "not found"}},
		{"JSON key", "DB_PASSWORD=" + dbARN + ":password::", []string{"variable DB_PASSWORD", dbARN, `"password"`}},
		{"JSON key, short form", "DB_PASSWORD=secretsmanager:" + u + "/db#password", []string{"variable DB_PASSWORD", u + "/db", `"password"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := []string{"OK=ssm:" + base + "/there", "ALSO_OK=secretsmanager:" + u + "/db#user", tc.env}
			_, err := loadAll(t.Context(), refSources(findReferences(env), clientsFor(direct())))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "variable OK") || strings.Contains(err.Error(), "variable ALSO_OK") {
				t.Errorf("error %q blames a good reference", err)
			}
			if Transient(err) {
				t.Errorf("reported as transient: %v", err)
			}
			noValues(t, err, "there-value", "user-value")
		})
	}
}

func TestRefSourceVersions(t *testing.T) {
	u := uniq(t)
	base := "/" + u
	moto.PutParameter(t, base+"/p", "p-1", "SecureString")
	createSecret(t, u+"/s", `{"k":"s-1"}`, nil)
	env := []string{"P=ssm:" + base + "/p", "S=secretsmanager:" + u + "/s#k", "PINNED=ssm:" + base + "/p:1"}
	proxy, cfg := proxied(t)
	srcs := refSources(findReferences(env), clientsFor(cfg))
	if len(srcs) != 2 {
		t.Fatalf("%d sources for parameter and secret references, want 2", len(srcs))
	}
	layers, err := loadAll(t.Context(), srcs)
	if err != nil {
		t.Fatal(err)
	}
	all := func() Layer {
		return Layer{Vars: slices.Concat(layers[0].Vars, layers[1].Vars)}
	}
	poll := func(what string, want bool) {
		t.Helper()
		proxy.ResetCounts()
		got := false
		for i, src := range srcs {
			m, err := moved(t, src, layers[i], false)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			got = got || m
		}
		if got != want {
			t.Fatalf("%s: Changed = %v, want %v", what, got, want)
		}
		if c := proxy.Counts(); c.SecretValues != 0 || c.Decrypting != 0 {
			t.Errorf("%s: calls %v read values", what, c.ByOp)
		}
	}
	// reload refreshes as a poll does, only the sources whose versions
	// moved, and checks that only the kind that moved read values.
	reload := func(wantSecretReads, wantDecrypting int) {
		t.Helper()
		nows := make([]map[string]string, len(srcs))
		for i, src := range srcs {
			if nows[i], err = src.Versions(t.Context(), layers[i], false); err != nil {
				t.Fatal(err)
			}
		}
		proxy.ResetCounts()
		for i, src := range srcs {
			if maps.Equal(nows[i], layers[i].Versions) {
				continue
			}
			if layers[i], err = src.Refresh(t.Context(), layers[i], nows[i]); err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(layers[i].Versions, nows[i]) {
				t.Errorf("refreshed versions %v, want %v", layers[i].Versions, nows[i])
			}
		}
		if c := proxy.Counts(); c.SecretValues != wantSecretReads || c.Decrypting != wantDecrypting {
			t.Errorf("refresh: calls %v, want %d secret reads and %d decrypting", c.ByOp, wantSecretReads, wantDecrypting)
		}
	}
	poll("nothing moved", false)
	if c := proxy.Counts(); c.ByOp["ssm:GetParameters"] != 1 || c.ByOp["secretsmanager:DescribeSecret"] != 1 || c.Total != 2 {
		t.Errorf("a poll made calls %v, want one GetParameters and one DescribeSecret", c.ByOp)
	}
	moto.PutSecretValue(t, u+"/s", `{"k":"s-2"}`)
	poll("secret rotated", true)
	reload(1, 0)
	wantVars(t, all(), map[string]string{"P": "p-1", "S": "s-2", "PINNED": "p-1"})
	poll("after the reload", false)
	moto.PutParameter(t, base+"/p", "p-2", "SecureString")
	poll("parameter changed", true)
	// Only what moved is read again: p, not the pinned p:1.
	reload(0, 1)
	wantVars(t, all(), map[string]string{"P": "p-2", "S": "s-2", "PINNED": "p-1"})
	moveCurrent(t, u+"/s", `{"k":"s-3"}`)
	poll("secret's stage moved", true)
	reload(1, 0)
	wantVars(t, all(), map[string]string{"P": "p-2", "S": "s-3", "PINNED": "p-1"})
	poll("after the second reload", false)
}

func TestWatcherRestartsOnceOnLabelMove(t *testing.T) {
	base := "/" + uniq(t)
	putVersions(t, base+"/db", "String", "db-1", "db-2")
	moto.LabelParameter(t, base+"/db", 1, "live")
	proxy, cfg := proxied(t)
	src := &paramSource{Params: []Param{{Name: base + "/db", Selector: "live", Var: "DB"}}, Clients: clientsFor(cfg)}
	watchForOneUpdate(t, proxy, []Source{src}, "ssm:GetParameters", func() {
		moto.LabelParameter(t, base+"/db", 2, "live")
	}, []string{"DB"})
}

// TestPrecedenceAcrossKinds shows the order Merge applies: inherited
// variables, then references resolved in their place, then the sources in
// command-line order (here --env-file, --path, --param, --secret, --param),
// a later one winning. --no-override keeps every inherited variable, a
// resolved reference included.
func TestPrecedenceAcrossKinds(t *testing.T) {
	u := uniq(t)
	base := "/" + u
	envFile := filepath.Join(t.TempDir(), "dev.env")
	if err := os.WriteFile(envFile, []byte("INHERITED=file\nREF=file\nV_FILE=file\nV_PATH=file\nV_PARAM=file\nV_SECRET=file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"REF", "V_PATH", "V_PARAM", "V_SECRET", "V_LAST"} {
		moto.PutParameter(t, base+"/path/"+name, "path", "String")
	}
	moto.PutParameter(t, base+"/param", "param", "String")
	moto.PutParameter(t, base+"/late", "param-late", "String")
	moto.PutParameter(t, base+"/ref", "resolved", "String")
	createSecret(t, u+"/s", `{"V_SECRET":"secret","V_LAST":"secret"}`, nil)

	inherited := []string{
		"ONLY_INHERITED=kept",
		"INHERITED=inherited",
		"REF=ssm:" + base + "/ref",
		"REF_ONLY=ssm:" + base + "/ref",
	}
	clients := clientsFor(direct())
	path, err := newPathSource(base+"/path", moto.SSM(), 1)
	if err != nil {
		t.Fatal(err)
	}
	mustParam := func(flag string, rank int) Param {
		p, err := parseParamFlag(flag, rank)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	secret, err := ParseSecretFlag(u+"/s", 3)
	if err != nil {
		t.Fatal(err)
	}
	// As Build builds them: one source per kind, each variable ranked by
	// its flag's position.
	sources := append([]Source{
		&EnvFileSource{Path: envFile, Rank: 0},
		path,
		&paramSource{Params: []Param{mustParam(base+"/param=V_PARAM", 2), mustParam(base+"/late=V_LAST", 4)}, Clients: clients},
		&secretSource{Secrets: []Secret{secret}, Clients: clients},
	}, refSources(findReferences(inherited), clients)...)
	layers, err := loadAll(t.Context(), sources)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, env []string, want map[string]string) {
		t.Helper()
		got := map[string]string{}
		for _, kv := range env {
			k, v, _ := strings.Cut(kv, "=")
			got[k] = v
		}
		for k, w := range want {
			if got[k] != w {
				t.Errorf("%s: %s = %q, want %q", what, k, got[k], w)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: %d variables, want %d", what, len(got), len(want))
		}
	}
	env, _ := Merge(inherited, layers, false)
	check("sources override", env, map[string]string{
		"ONLY_INHERITED": "kept",
		"INHERITED":      "file",       // any source beats an inherited value
		"REF":            "path",       // and a resolved reference
		"REF_ONLY":       "resolved",   // a reference nothing else sets
		"V_FILE":         "file",       // --env-file alone
		"V_PATH":         "path",       // --path after --env-file
		"V_PARAM":        "param",      // --param after --path
		"V_SECRET":       "secret",     // --secret after --path
		"V_LAST":         "param-late", // a later --param after --secret
	})
	env, _ = Merge(inherited, layers, true)
	check("--no-override", env, map[string]string{
		"ONLY_INHERITED": "kept",
		"INHERITED":      "inherited",
		"REF":            "resolved",
		"REF_ONLY":       "resolved",
		"V_FILE":         "file",
		"V_PATH":         "path",
		"V_PARAM":        "param",
		"V_SECRET":       "secret",
		"V_LAST":         "param-late",
	})
}
