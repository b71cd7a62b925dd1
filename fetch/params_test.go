package fetch

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/paramexec/paramexec/internal/faultproxy"
	"github.com/paramexec/paramexec/internal/motoserver"
)

const account = "123456789012" // moto's default account

func TestParseParamFlag(t *testing.T) {
	arn := "arn:aws:ssm:eu-west-1:" + account + ":parameter/app/db/password"
	for _, tc := range []struct {
		in   string
		want Param
	}{
		{"/app/db/password", Param{Name: "/app/db/password", Var: "PASSWORD"}},
		{"/app/db/api-key=API", Param{Name: "/app/db/api-key", Var: "API"}},
		{"/app/db/api-key", Param{Name: "/app/db/api-key", Var: "API_KEY"}},
		{"DATABASE_PASSWORD", Param{Name: "DATABASE_PASSWORD", Var: "DATABASE_PASSWORD"}},
		{"/app/3rd", Param{Name: "/app/3rd", Var: "_3RD"}},
		{"/app/db:3", Param{Name: "/app/db", Selector: "3", Var: "DB"}},
		{"/app/db:prod=DB_URL", Param{Name: "/app/db", Selector: "prod", Var: "DB_URL"}},
		{arn, Param{Name: arn, Var: "PASSWORD"}},
		{arn + ":7=PW", Param{Name: arn, Selector: "7", Var: "PW"}},
		{arn + ":live", Param{Name: arn, Selector: "live", Var: "PASSWORD"}},
		{"arn:aws:ssm:us-east-1:" + account + ":parameter/TOP", Param{Name: "arn:aws:ssm:us-east-1:" + account + ":parameter/TOP", Var: "TOP"}},
		{"arn:aws-cn:ssm:cn-north-1:" + account + ":parameter/x", Param{Name: "arn:aws-cn:ssm:cn-north-1:" + account + ":parameter/x", Var: "X"}},
	} {
		got, err := parseParamFlag(tc.in, 4)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		tc.want.Rank = 4
		if got != tc.want {
			t.Errorf("%q: got %+v, want %+v", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{
		"", "=X", "/app/db=", "/app/db=1X", "/app/db=A-B", "/app/db:", "/app/db:a b", "/app/db:x:y",
		"/app/", "/app db", "arn:aws:ssm:us-east-1:" + account + ":document/x",
		"arn:aws:s3:::bucket/x", "arn:aws:ssm:us-east-1:12345:parameter/x", "arn:aws:ssm::" + account + ":parameter/x",
		"arn:aws:ssm:us-east-1:" + account + ":parameter/", "arn:aws:ssm:us-east-1:" + account + ":parameter/x:",
		"arn:garbage",
	} {
		if p, err := parseParamFlag(bad, 0); err == nil {
			t.Errorf("%q: accepted as %+v", bad, p)
		}
	}
}

func TestParamBatches(t *testing.T) {
	var names []string
	for i := range 25 {
		names = append(names, fmt.Sprintf("/p/%02d", i))
	}
	if got := paramBatches(names); len(got) != 3 || len(got[0]) != 10 || len(got[2]) != 5 {
		t.Errorf("25 names: batches of %v", batchSizes(got))
	}

	// Answers carry no selector, and moto names a secret reference by the
	// secret's bare name: such requests must not share a call.
	clash := []string{"/a", "/a:1", "/a:live", "/b", secretsRefPrefix + "db", "db", "/c"}
	got := paramBatches(clash)
	for _, b := range got {
		keys := map[string]bool{}
		for _, req := range b {
			if keys[matchKey(req)] {
				t.Errorf("batch %q holds two requests answered as %s", b, matchKey(req))
			}
			keys[matchKey(req)] = true
		}
	}
	if len(got) != 3 {
		t.Errorf("clashing names: %d batches (%v), want 3", len(got), got)
	}
}

func batchSizes(b [][]string) []int {
	var out []int
	for _, x := range b {
		out = append(out, len(x))
	}
	return out
}

// putVersions writes values as successive versions of name.
func putVersions(t *testing.T, name, typ string, values ...string) {
	t.Helper()
	for _, v := range values {
		moto.PutParameter(t, name, v, typ)
	}
}

func TestParamSourceLoad(t *testing.T) {
	base := "/" + uniq(t)
	putVersions(t, base+"/plain", "String", "plain-1")
	putVersions(t, base+"/secure", "SecureString", "secure-1")
	putVersions(t, base+"/list", "StringList", "a,b,c")
	putVersions(t, base+"/multi", "String", "multi-1", "multi-2", "multi-3")
	moto.LabelParameter(t, base+"/multi", 2, "live")
	secretName := uniq(t)
	createSecret(t, secretName, "via-reference", nil)

	// A parameter in another Region, named by ARN: only a client for that
	// Region finds it (moto keeps Regions apart as AWS does).
	euName := base + "/eu"
	eu := ssm.NewFromConfig(direct(), func(o *ssm.Options) { o.Region = "eu-west-1" })
	if _, err := eu.PutParameter(t.Context(), &ssm.PutParameterInput{
		Name: aws.String(euName), Value: aws.String("from-eu"), Type: ssmtypes.ParameterTypeString,
	}); err != nil {
		t.Fatal(err)
	}
	arn := func(region, name string) string {
		return "arn:aws:ssm:" + region + ":" + account + ":parameter" + name
	}

	var params []Param
	for i, flag := range []string{
		base + "/plain",
		base + "/secure",
		base + "/list",
		base + "/multi",
		base + "/multi:1=MULTI_V1",
		base + "/multi:live=MULTI_LIVE",
		arn(motoserver.Region, base+"/plain") + "=PLAIN_BY_ARN",
		arn(motoserver.Region, base+"/multi") + ":1=MULTI_ARN_V1",
		arn(motoserver.Region, base+"/multi") + ":live=MULTI_ARN_LIVE",
		arn("eu-west-1", euName),
		secretsRefPrefix + secretName + "=FROM_SECRET",
	} {
		p, err := parseParamFlag(flag, i)
		if err != nil {
			t.Fatal(err)
		}
		params = append(params, p)
	}
	src := &paramSource{Params: params, Clients: clientsFor(direct())}
	layer, err := src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantVars(t, layer, map[string]string{
		"PLAIN":          "plain-1",
		"SECURE":         "secure-1",
		"LIST":           "a,b,c",
		"MULTI":          "multi-3",
		"MULTI_V1":       "multi-1",
		"MULTI_LIVE":     "multi-2",
		"PLAIN_BY_ARN":   "plain-1",
		"MULTI_ARN_V1":   "multi-1",
		"MULTI_ARN_LIVE": "multi-2",
		"EU":             "from-eu",
		"FROM_SECRET":    "via-reference",
	})
	for _, v := range layer.Vars {
		if v.Rank != slices.IndexFunc(params, func(p Param) bool { return p.Var == v.Name }) {
			t.Errorf("%s has rank %d, not its flag's", v.Name, v.Rank)
		}
	}
	// A version is the number and when it was written (identity).
	if got := layer.Versions[base+"/multi"]; !strings.HasPrefix(got, "3@") {
		t.Errorf("version of %s/multi = %q, want 3@DATE", base, got)
	}
	if got := layer.Versions[base+"/multi:live"]; !strings.HasPrefix(got, "2@") {
		t.Errorf("version of %s/multi:live = %q, want 2@DATE", base, got)
	}
}

func TestParamSourceBatchesCalls(t *testing.T) {
	base := "/" + uniq(t)
	const n = 23
	var params []Param
	for i := range n {
		name := fmt.Sprintf("%s/p%02d", base, i)
		moto.PutParameter(t, name, "v", "SecureString")
		params = append(params, Param{Name: name, Var: fmt.Sprintf("P%02d", i), Rank: i})
	}
	proxy, cfg := proxied(t)
	src := &paramSource{Params: params, Clients: clientsFor(cfg)}
	if _, err := src.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	c := proxy.Counts()
	if want := (n + 9) / 10; c.ByOp["ssm:GetParameters"] != want || c.Total != want {
		t.Errorf("load of %d parameters: %v, want %d GetParameters calls and nothing else", n, c.ByOp, want)
	}
	if c.Decrypting != c.Total {
		t.Errorf("load: %d of %d calls decrypting, want all", c.Decrypting, c.Total)
	}
}

func TestParamSourceVersions(t *testing.T) {
	base := "/" + uniq(t)
	putVersions(t, base+"/latest", "SecureString", "l-1")
	putVersions(t, base+"/labelled", "String", "a-1", "a-2")
	moto.LabelParameter(t, base+"/labelled", 1, "live")
	putVersions(t, base+"/pinned", "String", "p-1", "p-2")
	arnLatest := "arn:aws:ssm:" + motoserver.Region + ":" + account + ":parameter" + base + "/latest"

	proxy, cfg := proxied(t)
	params := []Param{
		{Name: base + "/latest", Var: "LATEST", Rank: 0},
		{Name: base + "/labelled", Selector: "live", Var: "LABELLED", Rank: 1},
		{Name: base + "/pinned", Selector: "1", Var: "PINNED", Rank: 2},
		{Name: arnLatest, Var: "LATEST_ARN", Rank: 3},
	}
	src := &paramSource{Params: params, Clients: clientsFor(cfg)}
	layer, err := src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantVars(t, layer, map[string]string{"LATEST": "l-1", "LABELLED": "a-1", "PINNED": "p-1", "LATEST_ARN": "l-1"})

	poll := func(what string, want bool) {
		t.Helper()
		proxy.ResetCounts()
		got, err := moved(t, src, layer, false)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got != want {
			t.Fatalf("%s: Changed = %v, want %v", what, got, want)
		}
		c := proxy.Counts()
		if c.Decrypting != 0 {
			t.Errorf("%s: %d decrypting calls; a poll must not decrypt", what, c.Decrypting)
		}
		// One GetParameters for the names (the pinned one is left out),
		// one GetParameter for the ARN.
		if c.ByOp["ssm:GetParameters"] != 1 || c.ByOp["ssm:GetParameter"] != 1 || c.Total != 2 {
			t.Errorf("%s: calls %v, want one GetParameters and one GetParameter", what, c.ByOp)
		}
	}
	reload := func() {
		t.Helper()
		if layer, err = src.Load(t.Context()); err != nil {
			t.Fatal(err)
		}
	}

	poll("nothing moved", false)
	poll("nothing moved, again", false)

	putVersions(t, base+"/pinned", "String", "p-3")
	poll("new version of a version-pinned parameter", false)

	putVersions(t, base+"/labelled", "String", "a-3")
	poll("new version beside a label", false)

	moto.LabelParameter(t, base+"/labelled", 3, "live")
	poll("label moved", true)
	reload()
	if got := varsOf(layer)["LABELLED"].Value; got != "a-3" {
		t.Errorf("after the label moved: LABELLED = %q, want a-3", got)
	}
	poll("after the reload", false)

	putVersions(t, base+"/latest", "SecureString", "l-2")
	poll("new version", true)
	reload()
	wantVars(t, layer, map[string]string{"LATEST": "l-2", "LABELLED": "a-3", "PINNED": "p-1", "LATEST_ARN": "l-2"})
	poll("after the second reload", false)

	// A named parameter is never dropped: deleted, it fails the poll and
	// the child keeps its value.
	moto.DeleteParameter(t, base+"/labelled")
	if _, err := src.Versions(t.Context(), layer, false); err == nil || !strings.Contains(err.Error(), base+"/labelled:live: not found") {
		t.Errorf("deleted: Versions error %v, want one naming the parameter", err)
	}
}

func TestParamSourcePinnedOnlyCostsNothing(t *testing.T) {
	base := "/" + uniq(t)
	putVersions(t, base+"/p", "String", "1", "2")
	proxy, cfg := proxied(t)
	src := &paramSource{Params: []Param{{Name: base + "/p", Selector: "1", Var: "P"}}, Clients: clientsFor(cfg)}
	layer, err := src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	proxy.ResetCounts()
	if changed, err := moved(t, src, layer, true); err != nil || changed {
		t.Fatalf("Changed = %v, %v", changed, err)
	}
	if c := proxy.Counts(); c.Total != 0 {
		t.Errorf("a poll of a version-pinned parameter made calls: %v", c.ByOp)
	}
}

func TestParamSourceMissing(t *testing.T) {
	base := "/" + uniq(t)
	putVersions(t, base+"/there", "String", "there-value")
	arnMissing := "arn:aws:ssm:" + motoserver.Region + ":" + account + ":parameter" + base + "/gone-by-arn"
	for _, tc := range []struct {
		name  string
		param Param
		want  string
	}{
		{"name", Param{Name: base + "/gone", Var: "GONE"}, "parameter " + base + "/gone: not found"},
		{"label", Param{Name: base + "/there", Selector: "nolabel", Var: "X"}, "parameter " + base + "/there:nolabel: not found"},
		{"version", Param{Name: base + "/there", Selector: "9", Var: "X"}, "parameter " + base + "/there:9: not found"},
		{"arn", Param{Name: arnMissing, Var: "X"}, "parameter " + arnMissing + ": not found"},
		{"reference", Param{Name: base + "/gone", Var: "DB_PASSWORD", Ref: true}, "variable DB_PASSWORD (parameter " + base + "/gone): not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &paramSource{
				Params:  []Param{{Name: base + "/there", Var: "THERE"}, tc.param},
				Clients: clientsFor(direct()),
			}
			_, err := loadAll(t.Context(), []Source{src})
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if Transient(err) {
				t.Errorf("a missing parameter is reported as transient: %v", err)
			}
			noValues(t, err, "there-value")
		})
	}
}

func TestParamSourceAccessDenied(t *testing.T) {
	base := "/" + uniq(t)
	putVersions(t, base+"/p", "SecureString", "denied-value")
	arn := "arn:aws:ssm:" + motoserver.Region + ":" + account + ":parameter" + base + "/p"
	for _, tc := range []struct {
		name   string
		param  Param
		rule   faultproxy.Rule
		action string
	}{
		{"GetParameters", Param{Name: base + "/p", Var: "P"}, faultproxy.Rule{Op: "ssm:GetParameters", Fault: faultproxy.AccessDenied}, "ssm:GetParameters"},
		{"GetParameter", Param{Name: arn, Var: "P"}, faultproxy.Rule{Op: "ssm:GetParameter", Fault: faultproxy.AccessDenied}, "ssm:GetParameter"},
		{"KMS", Param{Name: base + "/p", Var: "P"}, faultproxy.Rule{Op: "ssm:GetParameters", Fault: faultproxy.KMSAccessDenied}, "kms:Decrypt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy, cfg := proxied(t)
			proxy.Inject(tc.rule)
			src := &paramSource{Params: []Param{tc.param}, Clients: clientsFor(cfg)}
			_, err := src.Load(t.Context())
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), "allow "+tc.action) {
				t.Errorf("error %q does not name %s", err, tc.action)
			}
			if Transient(err) {
				t.Errorf("access denied reported as transient")
			}
			noValues(t, err, "denied-value")
		})
	}
}

// An answer that leaves a named parameter out is an incomplete answer, to
// retry, not a parameter that is missing: neither at start-up, where a
// missing one ends paramexec, nor in a poll.
func TestParamSourceIncompleteAnswer(t *testing.T) {
	base := "/" + uniq(t)
	putVersions(t, base+"/a", "String", "a-1")
	putVersions(t, base+"/b", "SecureString", "b-1")
	arn := "arn:aws:ssm:" + motoserver.Region + ":" + account + ":parameter" + base + "/a"
	proxy, cfg := proxied(t)
	src := &paramSource{Params: []Param{{Name: base + "/a", Var: "A"}, {Name: base + "/b", Var: "B"}, {Name: arn, Var: "A_ARN"}}, Clients: clientsFor(cfg)}
	for _, tc := range []struct {
		name string
		rule faultproxy.Rule
		poll bool
	}{
		{"GetParameters at start-up", faultproxy.Rule{Op: "ssm:GetParameters", Fault: faultproxy.OmitParameter, Names: []string{base + "/b"}}, false},
		{"GetParameter at start-up", faultproxy.Rule{Op: "ssm:GetParameter", Fault: faultproxy.OmitParameter}, false},
		{"GetParameters in a poll", faultproxy.Rule{Op: "ssm:GetParameters", Fault: faultproxy.OmitParameter, Names: []string{base + "/b"}, WithDecryption: aws.Bool(false)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			layer, err := src.Load(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			tc.rule.Times = 1
			proxy.Inject(tc.rule)
			if tc.poll {
				_, err = src.Versions(t.Context(), layer, false)
			} else {
				_, err = src.Load(t.Context())
			}
			if err == nil || strings.Contains(err.Error(), "not found") || !Transient(err) {
				t.Errorf("error %v, want a transient one that does not say not found", err)
			} else {
				noValues(t, err, "a-1", "b-1")
			}
			if now, err := src.Versions(t.Context(), layer, false); err != nil || !maps.Equal(now, layer.Versions) {
				t.Errorf("the poll after: %v, %v; want the versions unchanged", now, err)
			}
		})
	}
}

// TestRecreatedParameterIsAChange: a parameter deleted and put again starts
// again at version 1 (what Terraform does when a parameter's type changes),
// so a version number is no identity; the poll must still see the new
// value, for --param and for --path with and without discovery.
func TestRecreatedParameterIsAChange(t *testing.T) {
	base := "/" + uniq(t)
	moto.PutParameter(t, base+"/named", "named-0", "SecureString")
	moto.PutParameter(t, base+"/path/listed", "listed-0", "SecureString")
	clients := clientsFor(direct())
	named := &paramSource{Clients: clients, Params: []Param{{Name: base + "/named", Var: "NAMED"}}}
	path, err := newPathSource(base+"/path", clients.SSM(clients.Region), 1)
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		src      Source
		name, v  string
		discover bool
	}{
		{named, base + "/named", "NAMED", false},
		{path, base + "/path/listed", "LISTED", false},
		{path, base + "/path/listed", "LISTED", true},
	} {
		layer, err := tc.src.Load(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		value := fmt.Sprintf("recreated-%d", i)
		moto.DeleteParameter(t, tc.name)
		moto.PutParameter(t, tc.name, value, "SecureString")
		now, err := tc.src.Versions(t.Context(), layer, tc.discover)
		if err != nil {
			t.Fatalf("%s recreated (discover %v): %v", tc.name, tc.discover, err)
		}
		if maps.Equal(now, layer.Versions) {
			t.Fatalf("%s recreated (discover %v): no change seen (versions %v)", tc.name, tc.discover, now)
		}
		next, err := tc.src.Refresh(t.Context(), layer, now)
		if err != nil {
			t.Fatal(err)
		}
		wantVars(t, next, map[string]string{tc.v: value})
		if again, err := tc.src.Versions(t.Context(), next, tc.discover); err != nil || !maps.Equal(again, next.Versions) {
			t.Errorf("%s: the poll after the refresh: %v, %v; want no change from %v", tc.name, again, err, next.Versions)
		}
	}
}

// TestParamSourceRefreshReadsOnlyWhatMoved: a change of one --param reads
// that one again. A version-pinned parameter and a Secrets Manager
// reference are read once, at start, as the README says: a pinned
// version deleted since, or a referenced secret given a new value, changes
// nothing, and fails no poll.
func TestParamSourceRefreshReadsOnlyWhatMoved(t *testing.T) {
	base := "/" + uniq(t)
	putVersions(t, base+"/moving", "SecureString", "moving-1")
	putVersions(t, base+"/pinned", "SecureString", "pinned-1", "pinned-2")
	secret := uniq(t)
	moto.CreateSecret(t, secret, "ref-1")
	src := &paramSource{Clients: clientsFor(direct()), Params: []Param{
		{Name: base + "/moving", Var: "MOVING"},
		{Name: base + "/pinned", Selector: "1", Var: "PINNED"},
		{Name: secretsRefPrefix + secret, Var: "REF"},
	}}
	layer, err := src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantVars(t, layer, map[string]string{"MOVING": "moving-1", "PINNED": "pinned-1", "REF": "ref-1"})

	moto.DeleteParameter(t, base+"/pinned")
	moto.PutSecretValue(t, secret, "ref-2")
	putVersions(t, base+"/moving", "SecureString", "moving-2")
	now, err := src.Versions(t.Context(), layer, false)
	if err != nil {
		t.Fatalf("poll: %v", err)
	}
	next, err := src.Refresh(t.Context(), layer, now)
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	wantVars(t, next, map[string]string{"MOVING": "moving-2", "PINNED": "pinned-1", "REF": "ref-1"})
	if !maps.Equal(next.Versions, now) {
		t.Errorf("refreshed versions %v, want those the poll saw %v", next.Versions, now)
	}
}

// TestParamSourceReferenceARNIsReadOnce: the ARN form of a
// /aws/reference/secretsmanager/ name is a reference too, never polled.
func TestParamSourceReferenceARNIsReadOnce(t *testing.T) {
	ref := "arn:aws:ssm:us-east-1:123456789012:parameter" + secretsRefPrefix + "db"
	src := &paramSource{Params: []Param{{Name: ref, Var: "DB"}, {Name: "/app/x", Var: "X"}}}
	if got := src.requests(true); !slices.Equal(got, []string{"/app/x"}) {
		t.Errorf("polled requests %v, want only /app/x", got)
	}
}
