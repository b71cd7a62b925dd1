package fetch

import (
	"fmt"
	"maps"
	"strings"
	"testing"
)

// refreshOnce polls src as the Watcher does: versions first, and values
// only for what moved.
func refreshOnce(t *testing.T, src *PathSource, last Layer, discover bool) (next Layer, changed bool, err error) {
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
	src, err := NewPathSource(path, clientsFor(cfg).SSM(cfg.Region).(SSMClient), 4)
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
