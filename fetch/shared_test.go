package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/paramexec/paramexec/internal/faultproxy"
	"github.com/paramexec/paramexec/internal/motoserver"
)

// otherAccount owns the parameters a test shares with the caller, which
// moto serves as motoserver.DefaultAccount.
const otherAccount = "111122223333"

// sharedFixture is a path of otherAccount, shared through the proxy's RAM
// stand-in, and a source for it.
type sharedFixture struct {
	proxy *faultproxy.Proxy
	src   *sharedPathSource
	cfg   aws.Config
	path  string
	want  map[string]string // variable -> value
}

// sharePath puts n advanced parameters P00.. (every third a SecureString)
// under a new path of otherAccount and shares them, with a shared listing
// of five a page. It also puts, under the same path, what must not be
// listed: a standard-tier parameter in the share, an advanced one left out
// of it, and one of the caller's own account.
func sharePath(t *testing.T, n int) *sharedFixture {
	t.Helper()
	path := "/" + uniq(t)
	f := &sharedFixture{path: path, want: map[string]string{}}
	var names []string
	for i := range n {
		name := fmt.Sprintf("%s/P%02d", path, i)
		typ := "String"
		if i%3 == 0 {
			typ = "SecureString"
		}
		moto.PutParameterIn(t, otherAccount, name, "v1-"+name, typ, "Advanced")
		names = append(names, name)
		f.want[fmt.Sprintf("P%02d", i)] = "v1-" + name
	}
	moto.PutParameterIn(t, otherAccount, path+"/standard", "x", "String", "Standard")
	moto.PutParameterIn(t, otherAccount, path+"/unshared", "x", "String", "Advanced")
	moto.PutParameter(t, path+"/mine", "x", "String")
	proxy, cfg := proxied(t)
	proxy.Share(otherAccount, append(names, path+"/standard")...)
	proxy.SetSharePageSize(5)
	src, err := newSharedPathSource(sharedARN(otherAccount, path), 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.bind(clientsFor(cfg)); err != nil {
		t.Fatal(err)
	}
	f.proxy, f.src, f.cfg = proxy, src, cfg
	return f
}

func sharedARN(account, path string) string {
	return "arn:aws:ssm:" + motoserver.Region + ":" + account + ":parameter" + path
}

// pollShared polls as the Watcher does and returns the new layer.
func pollShared(t *testing.T, src Source, last Layer, discover bool) (Layer, bool, error) {
	t.Helper()
	now, err := src.Versions(t.Context(), last, discover)
	if err != nil || maps.Equal(now, last.Versions) {
		return last, false, err
	}
	next, err := src.Refresh(t.Context(), last, now)
	return next, err == nil, err
}

// The shared listing is read to its last page, only what is shared (and
// advanced) becomes a variable, named as a local --path names it, and
// values are read decrypted, ten ARNs a call.
func TestSharedPathLoadsEveryPage(t *testing.T) {
	f := sharePath(t, 12)
	layer, err := f.src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantVars(t, layer, f.want)
	for _, v := range layer.Vars {
		if want := sharedARN(otherAccount, f.path) + "/" + v.Name; v.Origin != want || v.Rank != 3 {
			t.Errorf("%s: origin %s rank %d, want %s rank 3", v.Name, v.Origin, v.Rank, want)
		}
	}
	// 12 shared and advanced, 5 a page: 3 pages; 12 ARNs: 2 reads.
	c := f.proxy.Counts()
	if c.ByOp["ssm:DescribeParameters"] != 3 || c.ByOp["ssm:GetParameters"] != 2 || c.Decrypting != 2 || c.Total != 5 {
		t.Errorf("calls %v (%d decrypting), want 3 DescribeParameters and 2 decrypting GetParameters", c.ByOp, c.Decrypting)
	}
}

// A poll costs ceil(P/10) GetParameters without decryption, and a
// discovery poll ceil(P/page) DescribeParameters and no GetParameters; a
// value changed, or a parameter added, in the other account is read again,
// decrypted, and only it.
func TestSharedPathPollsVersions(t *testing.T) {
	f := sharePath(t, 12)
	layer, err := f.src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, discover, wantChanged bool, wantDescribe, wantGets, wantDecrypting int) {
		t.Helper()
		f.proxy.ResetCounts()
		next, changed, err := pollShared(t, f.src, layer, discover)
		if err != nil || changed != wantChanged {
			t.Fatalf("%s: changed %v, %v; want changed %v", what, changed, err, wantChanged)
		}
		wantVars(t, next, f.want)
		c := f.proxy.Counts()
		if c.ByOp["ssm:DescribeParameters"] != wantDescribe || c.ByOp["ssm:GetParameters"] != wantGets || c.Decrypting != wantDecrypting || c.Total != wantDescribe+wantGets {
			t.Errorf("%s: calls %v (%d decrypting), want %d DescribeParameters, %d GetParameters, %d decrypting",
				what, c.ByOp, c.Decrypting, wantDescribe, wantGets, wantDecrypting)
		}
		layer = next
	}
	check("nothing changed", false, false, 0, 2, 0)
	check("nothing changed, discovering", true, false, 3, 0, 0)

	name := f.path + "/P03"
	moto.PutParameterIn(t, otherAccount, name, "v2-"+name, "SecureString", "Advanced")
	f.want["P03"] = "v2-" + name
	check("P03 changed", false, true, 0, 2+1, 1)

	added := f.path + "/sub/new-one"
	moto.PutParameterIn(t, otherAccount, added, "v1-"+added, "String", "Advanced")
	check("added, not yet shared", true, false, 3, 0, 0)
	f.proxy.Share(otherAccount, added)
	f.want["SUB_NEW_ONE"] = "v1-" + added
	check("added and shared", true, true, 3, 1, 1)
}

// A parameter deleted or unshared in the other account is dropped only
// when a second GetParameters agrees with the first look.
func TestSharedPathDeletionTakesTwoLooks(t *testing.T) {
	f := sharePath(t, 12)
	layer, err := f.src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	moto.DeleteParameterIn(t, otherAccount, f.path+"/P05")
	f.proxy.ResetCounts()
	next, changed, err := pollShared(t, f.src, layer, false)
	if err != nil || !changed {
		t.Fatalf("P05 deleted: changed %v, %v", changed, err)
	}
	delete(f.want, "P05")
	wantVars(t, next, f.want)
	if c := f.proxy.Counts(); c.ByOp["ssm:GetParameters"] != 2+1 || c.Decrypting != 0 {
		t.Errorf("P05 deleted: calls %v, want 2 GetParameters and the confirmation, nothing decrypted", c.ByOp)
	}

	f.proxy.Unshare(otherAccount, f.path+"/P06")
	next, changed, err = pollShared(t, f.src, next, true)
	if err != nil || !changed {
		t.Fatalf("P06 unshared (discover): changed %v, %v", changed, err)
	}
	delete(f.want, "P06")
	wantVars(t, next, f.want)

	// A listing that leaves out P07 while GetParameters still finds it is
	// no evidence: the poll fails and the variable stays.
	f.src.Client = &omitListed{sharedClient: f.src.Client, omit: f.src.arnOf(f.path + "/P07")}
	_, _, err = pollShared(t, f.src, next, true)
	var inc *inconsistentError
	if !errors.As(err, &inc) || !strings.Contains(err.Error(), "P07") {
		t.Fatalf("listing without P07, still readable: %v, want an inconsistentError naming it", err)
	}
}

// omitListed leaves one ARN out of every shared listing.
type omitListed struct {
	sharedClient
	omit string
}

func (c *omitListed) DescribeParameters(ctx context.Context, in *ssm.DescribeParametersInput, opts ...func(*ssm.Options)) (*ssm.DescribeParametersOutput, error) {
	out, err := c.sharedClient.DescribeParameters(ctx, in, opts...)
	if err != nil {
		return nil, err
	}
	var kept []ssmtypes.ParameterMetadata
	for _, p := range out.Parameters {
		if aws.ToString(p.ARN) != c.omit {
			kept = append(kept, p)
		}
	}
	out.Parameters = kept
	return out, nil
}

// A path of another account with nothing shared fails with an error that
// says what to do; a path of the caller's own account by ARN is a plain
// --path.
func TestSharedPathNotSharedOrOwn(t *testing.T) {
	f := sharePath(t, 2)
	other, err := newSharedPathSource(sharedARN("444455556666", f.path), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.bind(clientsFor(f.cfg)); err != nil {
		t.Fatal(err)
	}
	_, err = other.Load(t.Context())
	var ns *notSharedError
	if !errors.As(err, &ns) || !errors.Is(err, ErrNotShared) {
		t.Fatalf("not shared: %v, want a notSharedError that is ErrNotShared", err)
	}
	if Transient(err) {
		t.Errorf("not shared reported as transient: start-up would retry it until --startup-timeout")
	}
	for _, want := range []string{"444455556666", "AWS RAM", "promote", "advanced-tier"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("not shared: %q does not mention %s", err, want)
		}
	}

	own, err := newSharedPathSource(sharedARN(motoserver.DefaultAccount, f.path), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := own.bind(clientsFor(f.cfg)); err != nil {
		t.Fatal(err)
	}
	layer, err := own.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantVars(t, layer, map[string]string{"MINE": "x"})
	moto.PutParameter(t, f.path+"/mine", "y", "String")
	next, changed, err := pollShared(t, own, layer, false)
	if err != nil || !changed {
		t.Fatalf("own account, changed: %v, %v", changed, err)
	}
	wantVars(t, next, map[string]string{"MINE": "y"})
}

// Denials name what is missing: ssm:DescribeParameters, the KMS key of the
// other account, or the share and ssm:GetParameters. No value is in them.
func TestSharedPathErrorsNameWhatIsMissing(t *testing.T) {
	f := sharePath(t, 3)
	for _, tc := range []struct {
		name string
		rule faultproxy.Rule
		want []string
	}{
		{"DescribeParameters", faultproxy.Rule{Op: "ssm:DescribeParameters", Fault: faultproxy.AccessDenied}, []string{"ssm:DescribeParameters", "shared with this caller"}},
		{"KMS", faultproxy.Rule{Op: "ssm:GetParameters", Fault: faultproxy.KMSAccessDenied}, []string{"kms:Decrypt", "customer managed", otherAccount}},
		{"GetParameters", faultproxy.Rule{Op: "ssm:GetParameters", Fault: faultproxy.AccessDenied}, []string{"ssm:GetParameters", "AWS RAM"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			remove := f.proxy.Inject(tc.rule)
			defer remove()
			_, err := f.src.Load(t.Context())
			if err == nil {
				t.Fatal("loaded despite the denial")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not mention %s", err, w)
				}
			}
			noValues(t, err, slicesOf(f.want)...)
		})
	}
}

func slicesOf(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// An ARN --path must name a parameter path of Parameter Store.
func TestSharedPathFlagParsing(t *testing.T) {
	for _, bad := range []string{
		"arn:aws:ssm:us-east-1:111122223333:parameter/",
		"arn:aws:ssm:us-east-1:111122223333:parameter",
		"arn:aws:secretsmanager:us-east-1:111122223333:secret:x",
		"arn:aws:ssm:us-east-1:1111:parameter/app",
		"arn:aws:ssm:us-east-1:111122223333:document/app",
		"arn:aws:ssm:us-east-1:111122223333:parameter/a//b",
	} {
		if err := CheckSpecs([]Spec{{Kind: "path", Value: bad}}); err == nil {
			t.Errorf("--path %s accepted", bad)
		}
	}
	src, err := newPathFlag("arn:aws:ssm:eu-west-1:111122223333:parameter/org/prd/", 0)
	s, ok := src.(*sharedPathSource)
	if err != nil || !ok || s.Path != "/org/prd" || s.ARN.Region != "eu-west-1" || s.String() != "--path arn:aws:ssm:eu-west-1:111122223333:parameter/org/prd" {
		t.Errorf("ARN path parsed as %#v, %v", src, err)
	}
}

// Through Build, as the binary makes it: the ARN path gets the real
// client, and credentials that name their account (AWS_ACCOUNT_ID) decide
// "own account" without a GetParametersByPath probe.
func TestSharedPathThroughBuild(t *testing.T) {
	f := sharePath(t, 3)
	for _, kv := range motoserver.Env(f.proxy.URL()) {
		name, value, _ := strings.Cut(kv, "=")
		t.Setenv(name, value)
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_ACCOUNT_ID", motoserver.DefaultAccount)
	load := func(arn string) (Layer, error) {
		t.Helper()
		sources, err := Build(t.Context(), []Spec{{Kind: "path", Value: arn}}, nil, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		f.proxy.ResetCounts()
		return sources[0].Load(t.Context())
	}
	layer, err := load(sharedARN(otherAccount, f.path))
	if err != nil {
		t.Fatal(err)
	}
	wantVars(t, layer, f.want)

	layer, err = load(sharedARN(motoserver.DefaultAccount, f.path))
	if err != nil {
		t.Fatal(err)
	}
	wantVars(t, layer, map[string]string{"MINE": "x"})

	_, err = load(sharedARN("444455556666", f.path))
	if !strings.Contains(err.Error(), "the credentials are of account "+motoserver.DefaultAccount) {
		t.Errorf("not shared, credentials of another account: %v", err)
	}
	if c := f.proxy.Counts(); c.ByOp["ssm:GetParametersByPath"] != 0 || c.ByOp["ssm:DescribeParameters"] != 1 {
		t.Errorf("not shared, credentials of another account: calls %v, want one DescribeParameters and no probe", c.ByOp)
	}
}

// A throttled probe of the own account is worth retrying, unlike "not
// shared": start-up tries again instead of giving up.
func TestSharedPathProbeThrottledIsTransient(t *testing.T) {
	f := sharePath(t, 1)
	own, err := newSharedPathSource(sharedARN(motoserver.DefaultAccount, f.path), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := own.bind(clientsFor(f.cfg)); err != nil {
		t.Fatal(err)
	}
	f.proxy.Inject(faultproxy.Rule{Op: "ssm:GetParametersByPath", Fault: faultproxy.Throttle, Times: 1})
	_, err = own.Load(t.Context())
	var ns *notSharedError
	if err == nil || errors.As(err, &ns) || !Transient(err) {
		t.Fatalf("throttled probe: %v, want a transient error", err)
	}
	layer, err := own.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantVars(t, layer, map[string]string{"MINE": "x"})
}

// Under a Watcher (DiscoverEvery 3), a change in the other account makes
// exactly one update, and the share is listed only on discovery polls:
// one poll in three calls DescribeParameters, the others GetParameters.
func TestSharedPathUnderWatcher(t *testing.T) {
	f := sharePath(t, 3)
	f.proxy.ResetCounts()
	watchForOneUpdate(t, f.proxy, []Source{f.src}, "ssm:GetParameters", func() {
		name := f.path + "/P01"
		moto.PutParameterIn(t, otherAccount, name, "v2", "String", "Advanced")
	}, []string{"P01"})
	c := f.proxy.Counts()
	// loadAll: 1 listing and 1 decrypting read; the change: 1 decrypting read.
	describes := c.ByOp["ssm:DescribeParameters"] - 1
	checks := c.ByOp["ssm:GetParameters"] - c.Decrypting
	if c.Decrypting != 2 || describes < 1 || describes > (describes+checks)/3+1 {
		t.Errorf("calls %v, %d decrypting: want 2 decrypting reads, and a listing on about one poll in three (%d of %d)",
			c.ByOp, c.Decrypting, describes, describes+checks)
	}
}
