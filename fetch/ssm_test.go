package fetch

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/paramexec/paramexec/internal/faultproxy"
)

// refreshOnce polls src as the Watcher does: versions first, and values
// only for what moved.
func refreshOnce(t *testing.T, src *pathSource, last Layer, discover bool) (next Layer, changed bool, err error) {
	now, err := src.Versions(t.Context(), last, discover)
	if err != nil || maps.Equal(now, last.Versions) {
		return last, false, err
	}
	next, err = src.Refresh(t.Context(), last, now)
	return next, err == nil, err
}

// TestPathSourceRefresh follows one path through the changes a poll must
// see, checking after each that Refresh gives what a fresh Load would, and
// that it paid for what moved only: one decrypting call per ten changed
// parameters, none when nothing moved.
func TestPathSourceRefresh(t *testing.T) {
	path := "/" + uniq(t)
	want := make(map[string]string)
	for i := range 25 {
		name := fmt.Sprintf("P%02d", i)
		typ := "String"
		if i%3 == 0 {
			typ = "SecureString"
		}
		moto.PutParameter(t, path+"/"+name, "v1-"+name, typ)
		want[name] = "v1-" + name
	}
	proxy, cfg := proxied(t)
	src, err := newPathSource(path, clientsFor(cfg).SSM(cfg.Region), 4)
	if err != nil {
		t.Fatal(err)
	}
	layer, err := src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantVars(t, layer, want)

	// refresh polls once and checks the layer and the calls it cost.
	refresh := func(what string, discover, wantChanged bool, wantDecrypting int) {
		t.Helper()
		proxy.ResetCounts()
		next, changed, err := refreshOnce(t, src, layer, discover)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		c := proxy.Counts()
		if changed != wantChanged {
			t.Errorf("%s: changed = %v, want %v", what, changed, wantChanged)
		}
		if c.Decrypting != wantDecrypting {
			t.Errorf("%s: %d decrypting calls, want %d: %v", what, c.Decrypting, wantDecrypting, c.ByOp)
		}
		listed := c.ByOp["ssm:GetParametersByPath"]
		if !discover && listed != 0 {
			t.Errorf("%s: %d GetParametersByPath calls in a poll that does not discover", what, listed)
		}
		wantVars(t, next, want)
		for _, v := range next.Vars {
			if v.Rank != 4 || !strings.HasPrefix(v.Origin, path+"/") {
				t.Errorf("%s: %s has rank %d and origin %s", what, v.Name, v.Rank, v.Origin)
			}
		}
		fresh, err := src.Load(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		// Between discoveries an added parameter is not seen yet.
		if !discover {
			maps.DeleteFunc(fresh.Versions, func(name, _ string) bool { _, known := layer.Versions[name]; return !known })
		}
		if !maps.Equal(next.Versions, fresh.Versions) {
			t.Errorf("%s: versions %v, a fresh load has %v", what, next.Versions, fresh.Versions)
		}
		layer = next
	}

	refresh("nothing moved", false, false, 0)
	refresh("nothing moved, discovering", true, false, 0)

	moto.PutParameter(t, path+"/P03", "v2-P03", "SecureString")
	moto.PutParameter(t, path+"/P04", "v2-P04", "String")
	want["P03"], want["P04"] = "v2-P03", "v2-P04"
	refresh("two values moved", false, true, 1)

	moto.DeleteParameter(t, path+"/P05")
	delete(want, "P05")
	refresh("one deleted", false, true, 0)

	moto.PutParameter(t, path+"/new/one", "v1-new", "SecureString")
	refresh("one added, not discovering", false, false, 0)
	want["NEW_ONE"] = "v1-new"
	refresh("one added, discovering", true, true, 1)

	// The same value again is a new version: read, but no variable differs.
	moto.PutParameter(t, path+"/P07", "v1-P07", "String")
	refresh("same value, new version", false, true, 1)

	for i := range 12 {
		name := fmt.Sprintf("P%02d", 10+i)
		moto.PutParameter(t, path+"/"+name, "v3-"+name, "String")
		want[name] = "v3-" + name
	}
	refresh("twelve moved", false, true, 2)

	moto.PutParameter(t, path+"/new.one", "collides", "String")
	proxy.ResetCounts()
	_, _, err = refreshOnce(t, src, layer, true)
	if err == nil || !strings.Contains(err.Error(), path+"/new/one") || !strings.Contains(err.Error(), path+"/new.one") {
		t.Errorf("an added parameter that collides: error %v, want one naming both parameters", err)
	} else {
		noValues(t, err, "collides", "v1-new")
	}
}

// moved asks src for its versions, as a poll does, and reports whether
// any differs from last's.
func moved(t *testing.T, src Source, last Layer, discover bool) (bool, error) {
	t.Helper()
	now, err := src.Versions(t.Context(), last, discover)
	if err != nil {
		return false, err
	}
	return !maps.Equal(now, last.Versions), nil
}

// watchedPath puts n String parameters P00.. under a new path, fifteen by
// default so that a listing takes two pages, and loads it through a proxy.
func watchedPath(t *testing.T, n int) (*faultproxy.Proxy, *pathSource, Layer, map[string]string) {
	t.Helper()
	path := "/" + uniq(t)
	want := make(map[string]string)
	for i := range n {
		name := fmt.Sprintf("P%02d", i)
		moto.PutParameter(t, path+"/"+name, "v1-"+name, "String")
		want[name] = "v1-" + name
	}
	proxy, cfg := proxied(t)
	src, err := newPathSource(path, clientsFor(cfg).SSM(cfg.Region), 0)
	if err != nil {
		t.Fatal(err)
	}
	layer, err := src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantVars(t, layer, want)
	return proxy, src, layer, want
}

// Each answer that leaves a known name out, without the two agreeing looks
// a deletion needs, fails the poll, and the name is still checked after.
func TestPathInconsistentAnswersAreNoEvidence(t *testing.T) {
	proxy, src, layer, _ := watchedPath(t, 15)
	p03 := src.Path + "/P03"
	for _, tc := range []struct {
		name     string
		discover bool
		rule     faultproxy.Rule
	}{
		{"version check leaves a name out", false, faultproxy.Rule{Op: "ssm:GetParameters", Fault: faultproxy.OmitParameter, Names: []string{p03}, WithDecryption: aws.Bool(false)}},
		{"version check reports a name missing, once", false, faultproxy.Rule{Op: "ssm:GetParameters", Fault: faultproxy.ReportMissing, Names: []string{p03}}},
		{"listing page leaves a name out", true, faultproxy.Rule{Op: "ssm:GetParametersByPath", Fault: faultproxy.OmitParameter, Names: []string{p03}}},
		{"listing drops NextToken", true, faultproxy.Rule{Op: "ssm:GetParametersByPath", Fault: faultproxy.DropNextToken}},
		{"empty listing", true, faultproxy.Rule{Op: "ssm:GetParametersByPath", Fault: faultproxy.EmptyListing}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.rule.Times = 1
			proxy.Inject(tc.rule)
			now, err := src.Versions(t.Context(), layer, tc.discover)
			if err == nil {
				t.Fatalf("Versions accepted the answer: %d names of %d", len(now), len(layer.Versions))
			}
			if !Transient(err) {
				t.Errorf("an inconsistent answer is not retried: %v", err)
			}
			noValues(t, err, "v1-P03")
			// The fault is spent: the next poll sees every name, P03 too.
			for _, discover := range []bool{false, true} {
				now, err := src.Versions(t.Context(), layer, discover)
				if err != nil || !maps.Equal(now, layer.Versions) {
					t.Errorf("next poll (discover %v): %d names, %v; want all %d", discover, len(now), err, len(layer.Versions))
				}
			}
		})
	}
}

// A decrypted read must return every name it asked for; one it leaves out
// fails the read, which a retry with the same versions completes, and one
// gone since the check fails it with errStale, so that the next poll checks
// again and the deletion, confirmed, takes effect.
func TestPathRefreshReadsWhatItAskedFor(t *testing.T) {
	proxy, src, layer, want := watchedPath(t, 15)
	moto.PutParameter(t, src.Path+"/P03", "v2-P03", "String")
	now, err := src.Versions(t.Context(), layer, false)
	if err != nil {
		t.Fatal(err)
	}
	proxy.Inject(faultproxy.Rule{Op: "ssm:GetParameters", Fault: faultproxy.OmitParameter, Names: []string{src.Path + "/P03"}, WithDecryption: aws.Bool(true), Times: 1})
	if next, err := src.Refresh(t.Context(), layer, now); err == nil || errors.Is(err, errStale) || !Transient(err) {
		t.Fatalf("a read that left out P03: %d variables, error %v; want a transient error", len(next.Vars), err)
	}
	next, err := src.Refresh(t.Context(), layer, now)
	if err != nil {
		t.Fatal(err)
	}
	want["P03"] = "v2-P03"
	wantVars(t, next, want)
	layer = next

	moto.PutParameter(t, src.Path+"/P04", "v2-P04", "String")
	if now, err = src.Versions(t.Context(), layer, false); err != nil {
		t.Fatal(err)
	}
	moto.DeleteParameter(t, src.Path+"/P04")
	if _, err := src.Refresh(t.Context(), layer, now); !errors.Is(err, errStale) {
		t.Fatalf("a read of a parameter deleted since the check: %v, want errStale", err)
	}
	next, changed, err := refreshOnce(t, src, layer, false)
	if err != nil || !changed {
		t.Fatalf("the poll after: changed %v, %v", changed, err)
	}
	delete(want, "P04")
	wantVars(t, next, want)
}

// A real deletion is seen by either kind of poll, confirmed by one more
// GetParameters of the names that went, and drops their variables.
func TestPathDeletionTakesTwoLooks(t *testing.T) {
	proxy, src, layer, want := watchedPath(t, 15)
	for _, tc := range []struct {
		name     string
		discover bool
		wantGets int // version check batches plus the confirmation
	}{{"P05", false, 2 + 1}, {"P06", true, 0 + 1}} {
		moto.DeleteParameter(t, src.Path+"/"+tc.name)
		proxy.ResetCounts()
		next, changed, err := refreshOnce(t, src, layer, tc.discover)
		if err != nil || !changed {
			t.Fatalf("%s deleted (discover %v): changed %v, %v", tc.name, tc.discover, changed, err)
		}
		delete(want, tc.name)
		wantVars(t, next, want)
		if c := proxy.Counts(); c.ByOp["ssm:GetParameters"] != tc.wantGets || c.Decrypting != 0 {
			t.Errorf("%s deleted (discover %v): calls %v, want %d GetParameters and nothing decrypted", tc.name, tc.discover, c.ByOp, tc.wantGets)
		}
		layer = next
	}
}

// A listing whose NextToken repeats, or keeps coming, ends in an error
// after a bounded number of pages, at start-up and in a discovery poll.
func TestPathListingIsBounded(t *testing.T) {
	proxy, src, layer, _ := watchedPath(t, 3)
	for _, tc := range []struct {
		fault     faultproxy.Fault
		wantPages int
		want      string
	}{
		{faultproxy.RepeatNextToken, 2, "repeated a NextToken"},
		{faultproxy.EndlessNextToken, 25, "after 25 pages"},
	} {
		src.maxPages = 25
		remove := proxy.Inject(faultproxy.Rule{Op: "ssm:GetParametersByPath", Fault: tc.fault})
		for _, what := range []string{"load", "discovery"} {
			proxy.ResetCounts()
			var err error
			if what == "load" {
				_, err = src.Load(t.Context())
			} else {
				_, err = src.Versions(t.Context(), layer, true)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !Transient(err) {
				t.Errorf("%v, %s: %v, want a transient error saying %q", tc.fault, what, err, tc.want)
			}
			if n := proxy.Counts().ByOp["ssm:GetParametersByPath"]; n != tc.wantPages {
				t.Errorf("%v, %s: %d pages asked for, want %d", tc.fault, what, n, tc.wantPages)
			}
		}
		remove()
	}
	if maxListPages != 100_000/10+1 {
		t.Errorf("maxListPages = %d, want a full advanced-tier account's pages plus one", maxListPages)
	}
}

// rootRegion is a Region no other test writes to, so that the whole of its
// Parameter Store is this test's: --path / lists every parameter.
const rootRegion = "eu-west-3"

// TestPathRootListsRootLevelNames: GetParametersByPath with Path "/"
// returns root-level names such as db_password as well as the hierarchy
// (AWS and moto alike); they are under "/", and each is named by its
// whole name, a hierarchical one as VarName names it relative to "/".
func TestPathRootListsRootLevelNames(t *testing.T) {
	cfg := direct()
	client := clientsFor(cfg).SSM(rootRegion)
	put := ssm.NewFromConfig(cfg, func(o *ssm.Options) { o.Region = rootRegion })
	params := map[string]string{"db_password": "root-level", "/app/db/host": "nested"}
	for name, value := range params {
		if _, err := put.PutParameter(t.Context(), &ssm.PutParameterInput{
			Name: aws.String(name), Value: aws.String(value), Type: ssmtypes.ParameterTypeSecureString, Overwrite: aws.Bool(true),
		}); err != nil {
			t.Fatalf("put %s: %v", name, err)
		}
		t.Cleanup(func() {
			put.DeleteParameter(context.Background(), &ssm.DeleteParameterInput{Name: aws.String(name)})
		})
	}
	src, err := newPathSource("/", client, 0)
	if err != nil {
		t.Fatal(err)
	}
	layer, err := src.Load(t.Context())
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	want := map[string]string{"DB_PASSWORD": "root-level", "APP_DB_HOST": "nested"}
	wantVars(t, layer, want)
	for _, discover := range []bool{false, true} {
		now, err := src.Versions(t.Context(), layer, discover)
		if err != nil || !maps.Equal(now, layer.Versions) {
			t.Errorf("poll (discover %v): %v, %v; want the versions of the load %v", discover, now, err, layer.Versions)
		}
	}
}
