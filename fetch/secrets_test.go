package fetch

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/paramexec/paramexec/internal/faultproxy"
)

func TestParseSecretFlag(t *testing.T) {
	arn := "arn:aws:secretsmanager:eu-west-1:" + account + ":secret:prod/db-AbCdEf"
	for _, tc := range []struct {
		in   string
		want Secret
	}{
		{"prod/db", Secret{ID: "prod/db"}},
		{"prod/db=DB_", Secret{ID: "prod/db", Prefix: "DB_"}},
		{"prod/db=", Secret{ID: "prod/db"}},
		{"a=b=", Secret{ID: "a=b"}},
		{"a=b=X", Secret{ID: "a=b", Prefix: "X"}},
		{"odd+.@_-name", Secret{ID: "odd+.@_-name"}},
		{arn, Secret{ID: arn}},
		{arn + "=DB_", Secret{ID: arn, Prefix: "DB_"}},
	} {
		got, err := ParseSecretFlag(tc.in, 2)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		tc.want.Rank = 2
		if got != tc.want {
			t.Errorf("%q: got %+v, want %+v", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{
		"", "=X", "prod/db=1X", "prod/db=A-", "has space", "has:colon",
		arn + ":password::", // JSON keys and versions are for references
		"arn:aws:ssm:eu-west-1:" + account + ":parameter/x",
		"arn:aws:secretsmanager:eu-west-1:" + account + ":secret:",
	} {
		if s, err := ParseSecretFlag(bad, 0); err == nil {
			t.Errorf("%q: accepted as %+v", bad, s)
		}
	}
}

func TestJSONObject(t *testing.T) {
	got, ok := jsonObject(` {"s": "text", "n": 5432, "f": 1.5e3, "t": true, "z": null, "o": {"a": [1, 2]}, "a": [ "x" ], "e": "", "u": "\u00e9\n"} `)
	if !ok {
		t.Fatal("not an object")
	}
	want := map[string]string{"s": "text", "n": "5432", "f": "1.5e3", "t": "true", "z": "", "o": `{"a":[1,2]}`, "a": `["x"]`, "e": "", "u": "é\n"}
	if len(got) != len(want) {
		t.Errorf("got %d keys, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("key %s = %q, want %q", k, got[k], v)
		}
	}
	for _, notObject := range []string{"", "plain", "{not json", "[1,2]", `"quoted"`, "42", "null", `{"a":1} trailing`} {
		if _, ok := jsonObject(notObject); ok {
			t.Errorf("%q taken for a JSON object", notObject)
		}
	}
}

func TestSecretSourceLoad(t *testing.T) {
	u := uniq(t)
	jsonName := u + "/db"
	_, jsonVersion := createSecret(t, jsonName,
		`{"username":"admin","password":"pw-1","port":5432,"ssl":true,"opts":{"a": [1, 2]},"none":null,"db-host":"h"}`, nil)
	createSecret(t, u+"/api-key", "key-value", nil)
	createSecret(t, u+"/stripe", "stripe-value", nil)
	createSecret(t, u+"/cert", "", []byte("binary\x01\x02"))
	createSecret(t, u+"/list", "[1, 2]", nil)
	byARN, _ := createSecret(t, u+"/by-arn", "arn-value", nil)
	partial, _ := createSecret(t, u+"/by-partial-arn", "partial-value", nil)
	partial = partial[:len(partial)-7] // without "-" and the six random characters

	var secrets []Secret
	for i, flag := range []string{jsonName + "=DB_", u + "/api-key", u + "/stripe=STRIPE_KEY", u + "/cert", u + "/list", byARN, partial} {
		s, err := ParseSecretFlag(flag, i+10)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, s)
	}
	proxy, cfg := proxied(t)
	src := &secretSource{Secrets: secrets, Clients: clientsFor(cfg)}
	layer, err := src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantVars(t, layer, map[string]string{
		"DB_USERNAME":    "admin",
		"DB_PASSWORD":    "pw-1",
		"DB_PORT":        "5432",
		"DB_SSL":         "true",
		"DB_OPTS":        `{"a":[1,2]}`,
		"DB_NONE":        "",
		"DB_DB_HOST":     "h",
		"API_KEY":        "key-value",
		"STRIPE_KEY":     "stripe-value",
		"CERT":           "binary\x01\x02",
		"LIST":           "[1, 2]",
		"BY_ARN":         "arn-value", // named from the secret's name, not the ARN's suffix
		"BY_PARTIAL_ARN": "partial-value",
	})
	vars := varsOf(layer)
	if v := vars["DB_PASSWORD"]; v.Rank != 10 || v.Origin != jsonName+"#password" {
		t.Errorf("DB_PASSWORD: rank %d origin %q", v.Rank, v.Origin)
	}
	if v := vars["BY_PARTIAL_ARN"]; v.Rank != 16 {
		t.Errorf("BY_PARTIAL_ARN: rank %d, want 16", v.Rank)
	}
	if got := layer.Versions[jsonName]; got != jsonVersion {
		t.Errorf("version of %s = %q, want %q", jsonName, got, jsonVersion)
	}
	// Seven secrets following AWSCURRENT in one Region: one batch call.
	c := proxy.Counts()
	if c.ByOp["secretsmanager:BatchGetSecretValue"] != 1 || c.Total != 1 {
		t.Errorf("calls %v, want a single BatchGetSecretValue", c.ByOp)
	}
}

func TestSecretSourceBatching(t *testing.T) {
	u := uniq(t)
	var many []Secret
	for i := range 25 {
		name := fmt.Sprintf("%s/s%02d", u, i)
		createSecret(t, name, "v", nil)
		many = append(many, Secret{ID: name, Prefix: fmt.Sprintf("S%02d", i), Rank: i})
	}
	_, v1 := createSecret(t, u+"/pinned", "p1", nil)
	moto.PutSecretValue(t, u+"/pinned", "p2")

	for _, tc := range []struct {
		name           string
		secrets        []Secret
		batches, gets  int
		wantVarsLoaded int
	}{
		{"one secret", many[:1], 0, 1, 1},
		{"two secrets", many[:2], 1, 0, 2},
		{"25 secrets", many, 2, 0, 25},
		{"the same secret twice", []Secret{many[0], {ID: many[0].ID, Prefix: "AGAIN", Rank: 99}}, 0, 1, 2},
		{"pinned ones alone", append(many[:2:2],
			Secret{ID: u + "/pinned", VersionID: v1, Var: "P1", Rank: 50},
			Secret{ID: u + "/pinned", VersionStage: "AWSPREVIOUS", Var: "P_PREV", Rank: 51}), 1, 2, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy, cfg := proxied(t)
			layer, err := (&secretSource{Secrets: tc.secrets, Clients: clientsFor(cfg)}).Load(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if len(layer.Vars) != tc.wantVarsLoaded {
				t.Errorf("%d variables, want %d", len(layer.Vars), tc.wantVarsLoaded)
			}
			c := proxy.Counts()
			if c.ByOp["secretsmanager:BatchGetSecretValue"] != tc.batches || c.ByOp["secretsmanager:GetSecretValue"] != tc.gets || c.Total != tc.batches+tc.gets {
				t.Errorf("calls %v, want %d BatchGetSecretValue and %d GetSecretValue", c.ByOp, tc.batches, tc.gets)
			}
			for _, v := range layer.Vars {
				switch v.Name {
				case "P1":
					if v.Value != "p1" {
						t.Errorf("version-id pin: P1 = %q", v.Value)
					}
				case "P_PREV":
					if v.Value != "p1" {
						t.Errorf("AWSPREVIOUS pin: P_PREV = %q", v.Value)
					}
				}
			}
		})
	}
}

// The batch only saves calls: when it is throttled (its quota is a
// hundredth of GetSecretValue's) or fails otherwise, each secret is read
// alone, at once, without the SDK's retries of the batch.
func TestSecretSourceBatchFallback(t *testing.T) {
	u := uniq(t)
	createSecret(t, u+"/a", "a-value", nil)
	createSecret(t, u+"/b", "b-value", nil)
	secrets := []Secret{{ID: u + "/a", Rank: 0}, {ID: u + "/b", Rank: 1}}
	for _, fault := range []faultproxy.Rule{
		{Op: "secretsmanager:BatchGetSecretValue", Fault: faultproxy.Throttle},
		{Op: "secretsmanager:BatchGetSecretValue", Fault: faultproxy.CustomError, Status: 501, Code: "NotImplemented"},
	} {
		t.Run(fault.Fault.String(), func(t *testing.T) {
			proxy, cfg := proxied(t)
			proxy.Inject(fault)
			layer, err := (&secretSource{Secrets: secrets, Clients: clientsFor(cfg)}).Load(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			wantVars(t, layer, map[string]string{"A": "a-value", "B": "b-value"})
			c := proxy.Counts()
			if c.ByOp["secretsmanager:BatchGetSecretValue"] != 1 || c.ByOp["secretsmanager:GetSecretValue"] != 2 {
				t.Errorf("calls %v, want one batch, not retried, then two GetSecretValue", c.ByOp)
			}
		})
	}
}

func TestSecretSourceErrors(t *testing.T) {
	u := uniq(t)
	createSecret(t, u+"/ok", `{"user":"ok-value"}`, nil)
	createSecret(t, u+"/plain", "plain-value", nil)
	createSecret(t, u+"/clash", `{"a-b":"clash-1","a_b":"clash-2"}`, nil)
	createSecret(t, u+"/nul", "nul-left\x00nul-right", nil)
	createSecret(t, u+"/bin", "", []byte("bin-value"))
	big := strings.Repeat("x", maxValueSize+1)
	createSecret(t, u+"/big", big, nil)
	values := []string{"ok-value", "plain-value", "clash-1", "clash-2", "nul-left", "nul-right", "bin-value", big[:100]}

	for _, tc := range []struct {
		name    string
		secrets []Secret
		want    []string
	}{
		{"not found alone", []Secret{{ID: u + "/nope"}},
			[]string{"secret " + u + "/nope: not found"}},
		{"not found in a batch", []Secret{{ID: u + "/ok"}, {ID: u + "/nope"}},
			[]string{"secret " + u + "/nope: not found"}},
		{"version not found", []Secret{{ID: u + "/ok", VersionStage: "NOSUCHSTAGE", Var: "X"}},
			[]string{"variable X (secret " + u + "/ok): not found"}},
		{"JSON key missing", []Secret{{ID: u + "/ok", JSONKey: "password", Var: "DB_PASSWORD"}},
			[]string{"variable DB_PASSWORD (secret " + u + "/ok)", `no JSON key "password"`}},
		{"JSON key of a plain secret", []Secret{{ID: u + "/plain", JSONKey: "password", Var: "DB_PASSWORD"}},
			[]string{"variable DB_PASSWORD", "not a JSON object", `"password"`}},
		{"JSON key of a binary secret", []Secret{{ID: u + "/bin", JSONKey: "k", Var: "K"}},
			[]string{"variable K", "binary"}},
		{"two keys one name", []Secret{{ID: u + "/clash"}},
			[]string{u + "/clash#a-b", u + "/clash#a_b", "A_B"}},
		{"NUL byte", []Secret{{ID: u + "/nul"}},
			[]string{"NUL (from " + u + "/nul)", "NUL byte"}},
		{"too large", []Secret{{ID: u + "/big"}},
			[]string{"BIG (from " + u + "/big)", fmt.Sprint(maxValueSize + 1), "limit"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &secretSource{Secrets: tc.secrets, Clients: clientsFor(direct())}
			_, err := loadAll(t.Context(), []Source{src})
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if Transient(err) {
				t.Errorf("reported as transient: %v", err)
			}
			noValues(t, err, values...)
		})
	}
}

func TestSecretSourceAccessDenied(t *testing.T) {
	u := uniq(t)
	createSecret(t, u+"/a", "denied-a", nil)
	createSecret(t, u+"/b", "denied-b", nil)
	one := []Secret{{ID: u + "/a"}}
	two := []Secret{{ID: u + "/a"}, {ID: u + "/b", Rank: 1}}
	for _, tc := range []struct {
		name    string
		secrets []Secret
		rule    faultproxy.Rule
		want    []string
	}{
		{"GetSecretValue", one, faultproxy.Rule{Op: "secretsmanager:GetSecretValue", Fault: faultproxy.AccessDenied},
			[]string{"allow secretsmanager:GetSecretValue", "secret " + u + "/a"}},
		{"KMS", one, faultproxy.Rule{Op: "secretsmanager:GetSecretValue", Fault: faultproxy.KMSAccessDenied},
			[]string{"allow kms:Decrypt"}},
		{"DecryptionFailure", one, faultproxy.Rule{Op: "secretsmanager:GetSecretValue", Fault: faultproxy.CustomError, Code: "DecryptionFailure",
			Message: "Secrets Manager can't decrypt the protected secret text using the provided KMS key."},
			[]string{"allow kms:Decrypt"}},
		{"BatchGetSecretValue", two, faultproxy.Rule{Op: "secretsmanager:BatchGetSecretValue", Fault: faultproxy.AccessDenied},
			[]string{"allow secretsmanager:BatchGetSecretValue", "secretsmanager:GetSecretValue on each secret", u + "/a", u + "/b"}},
		{"GetSecretValue behind a batch", two, faultproxy.Rule{Op: "secretsmanager:GetSecretValue", Fault: faultproxy.AccessDenied},
			nil}, // the batch succeeds here; moto has no IAM to deny single secrets inside it
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy, cfg := proxied(t)
			proxy.Inject(tc.rule)
			_, err := (&secretSource{Secrets: tc.secrets, Clients: clientsFor(cfg)}).Load(t.Context())
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if Transient(err) {
				t.Errorf("access denied reported as transient")
			}
			noValues(t, err, "denied-a", "denied-b")
		})
	}

	t.Run("DescribeSecret", func(t *testing.T) {
		proxy, cfg := proxied(t)
		src := &secretSource{Secrets: one, Clients: clientsFor(cfg)}
		layer, err := src.Load(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		proxy.Inject(faultproxy.Rule{Op: "secretsmanager:DescribeSecret", Fault: faultproxy.AccessDenied})
		_, err = moved(t, src, layer, false)
		if err == nil || !strings.Contains(err.Error(), "allow secretsmanager:DescribeSecret") {
			t.Errorf("Changed: %v, want the DescribeSecret action named", err)
		}
	})
}

// pollSecrets runs Changed and checks that it made only DescribeSecret
// calls: no value read, nothing decrypted.
func pollSecrets(t *testing.T, proxy *faultproxy.Proxy, src Source, layer Layer, what string, want bool) {
	t.Helper()
	proxy.ResetCounts()
	got, err := moved(t, src, layer, true)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if got != want {
		t.Fatalf("%s: Changed = %v, want %v", what, got, want)
	}
	c := proxy.Counts()
	if c.SecretValues != 0 || c.Decrypting != 0 || c.Total != c.ByOp["secretsmanager:DescribeSecret"] {
		t.Errorf("%s: calls %v; a poll may only describe secrets", what, c.ByOp)
	}
}

func TestSecretSourceRotation(t *testing.T) {
	u := uniq(t)
	createSecret(t, u+"/db", `{"password":"pw-1"}`, nil)
	createSecret(t, u+"/other", "other-1", nil)
	proxy, cfg := proxied(t)
	src := &secretSource{Secrets: []Secret{{ID: u + "/db", Prefix: "DB_"}, {ID: u + "/other", Rank: 1}}, Clients: clientsFor(cfg)}
	layer, err := src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pollSecrets(t, proxy, src, layer, "nothing moved", false)
	pollSecrets(t, proxy, src, layer, "nothing moved, again", false)
	if n := proxy.Counts().ByOp["secretsmanager:DescribeSecret"]; n != 2 {
		t.Errorf("a poll of two secrets made %d DescribeSecret calls, want 2", n)
	}

	// A new version with only a custom stage is not a rotation.
	if _, err := moto.SecretsManager().PutSecretValue(t.Context(), &secretsmanager.PutSecretValueInput{
		SecretId: aws.String(u + "/db"), SecretString: aws.String(`{"password":"staged"}`), VersionStages: []string{"STAGED"},
	}); err != nil {
		t.Fatal(err)
	}
	pollSecrets(t, proxy, src, layer, "new version under another stage", false)

	moto.PutSecretValue(t, u+"/db", `{"password":"pw-2"}`)
	pollSecrets(t, proxy, src, layer, "rotated", true)
	now, err := src.Versions(t.Context(), layer, false)
	if err != nil {
		t.Fatal(err)
	}
	if layer, err = src.Refresh(t.Context(), layer, now); err != nil {
		t.Fatal(err)
	}
	wantVars(t, layer, map[string]string{"DB_PASSWORD": "pw-2", "OTHER": "other-1"})
	pollSecrets(t, proxy, src, layer, "after the reload", false)
	pollSecrets(t, proxy, src, layer, "after the reload, again", false)
}

func TestSecretSourcePins(t *testing.T) {
	u := uniq(t)
	name := u + "/db"
	_, v1 := createSecret(t, name, "one", nil)
	moto.PutSecretValue(t, name, "two")
	// PINNED stays on version one through later rotations.
	if _, err := moto.SecretsManager().UpdateSecretVersionStage(t.Context(), &secretsmanager.UpdateSecretVersionStageInput{
		SecretId: aws.String(name), VersionStage: aws.String("PINNED"), MoveToVersionId: aws.String(v1),
	}); err != nil {
		t.Fatal(err)
	}
	proxy, cfg := proxied(t)
	byStage := &secretSource{Secrets: []Secret{{ID: name, VersionStage: "PINNED", Var: "BY_STAGE"}}, Clients: clientsFor(cfg)}
	byVersion := &secretSource{Secrets: []Secret{{ID: name, VersionID: v1, Var: "BY_VERSION"}}, Clients: clientsFor(cfg)}
	previous := &secretSource{Secrets: []Secret{{ID: name, VersionStage: "AWSPREVIOUS", Var: "PREVIOUS"}}, Clients: clientsFor(cfg)}
	load := func(s *secretSource) Layer {
		t.Helper()
		l, err := s.Load(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	stageLayer, versionLayer, prevLayer := load(byStage), load(byVersion), load(previous)
	wantVars(t, stageLayer, map[string]string{"BY_STAGE": "one"})
	wantVars(t, versionLayer, map[string]string{"BY_VERSION": "one"})
	wantVars(t, prevLayer, map[string]string{"PREVIOUS": "one"})

	moto.PutSecretValue(t, name, "three")

	pollSecrets(t, proxy, byStage, stageLayer, "stage pin after a rotation", false)
	pollSecrets(t, proxy, previous, prevLayer, "AWSPREVIOUS after a rotation (it moves with it)", true)
	proxy.ResetCounts()
	if changed, err := moved(t, byVersion, versionLayer, true); err != nil || changed {
		t.Errorf("version pin after a rotation: Changed = %v, %v", changed, err)
	}
	if c := proxy.Counts(); c.Total != 0 {
		t.Errorf("a version-pinned secret cost calls on a poll: %v", c.ByOp)
	}

	v3 := currentVersion(t, name)
	if _, err := moto.SecretsManager().UpdateSecretVersionStage(t.Context(), &secretsmanager.UpdateSecretVersionStageInput{
		SecretId: aws.String(name), VersionStage: aws.String("PINNED"), MoveToVersionId: aws.String(v3), RemoveFromVersionId: aws.String(v1),
	}); err != nil {
		t.Fatal(err)
	}
	pollSecrets(t, proxy, byStage, stageLayer, "pinned stage moved", true)
	wantVars(t, load(byStage), map[string]string{"BY_STAGE": "three"})
}

func currentVersion(t *testing.T, id string) string {
	t.Helper()
	out, err := moto.SecretsManager().DescribeSecret(t.Context(), &secretsmanager.DescribeSecretInput{SecretId: aws.String(id)})
	if err != nil {
		t.Fatal(err)
	}
	for v, stages := range out.VersionIdsToStages {
		for _, s := range stages {
			if s == currentStage {
				return v
			}
		}
	}
	t.Fatalf("%s has no %s version", id, currentStage)
	return ""
}

// watchForOneUpdate runs a Watcher over sources, makes change once polls
// are under way, and checks that exactly one update follows: it waits for
// the update, then for several more polls (seen at the proxy as calls of
// pollOp) that must bring none.
func watchForOneUpdate(t *testing.T, proxy *faultproxy.Proxy, sources []Source, pollOp string, change func(), wantChanged []string) {
	t.Helper()
	layers, err := loadAll(t.Context(), sources)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	updates := make(chan Update, 10)
	done := make(chan error, 1)
	w := &Watcher{Sources: sources, Interval: 100 * time.Millisecond, DiscoverEvery: 3}
	go func() {
		done <- w.Run(ctx, layers, func(_ context.Context, u Update) { updates <- u })
	}()
	defer func() {
		cancel()
		<-done
	}()
	waitPolls := func(n int) {
		t.Helper()
		start := proxy.Counts().ByOp[pollOp]
		deadline := time.Now().Add(30 * time.Second)
		for proxy.Counts().ByOp[pollOp] < start+n {
			if time.Now().After(deadline) {
				t.Fatalf("fewer than %d polls in 30s", n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitPolls(2)
	select {
	case u := <-updates:
		t.Fatalf("update %v before any change", u.Changed)
	default:
	}
	change()
	select {
	case u := <-updates:
		if strings.Join(u.Changed, ",") != strings.Join(wantChanged, ",") {
			t.Errorf("update names %v, want %v", u.Changed, wantChanged)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no update within 30s of the change")
	}
	waitPolls(4)
	select {
	case u := <-updates:
		t.Fatalf("a second update %v for one change", u.Changed)
	default:
	}
}

func TestWatcherRestartsOnceOnRotation(t *testing.T) {
	u := uniq(t)
	createSecret(t, u+"/db", `{"password":"pw-1","user":"app"}`, nil)
	proxy, cfg := proxied(t)
	src := &secretSource{Secrets: []Secret{{ID: u + "/db", Prefix: "DB_"}}, Clients: clientsFor(cfg)}
	before := 0
	watchForOneUpdate(t, proxy, []Source{src}, "secretsmanager:DescribeSecret", func() {
		before = proxy.Counts().SecretValues
		moto.PutSecretValue(t, u+"/db", `{"password":"pw-2","user":"app"}`)
	}, []string{"DB_PASSWORD"})
	if n := proxy.Counts().SecretValues - before; n != 1 {
		t.Errorf("%d value reads for one rotation, want 1", n)
	}
}

// moveCurrent finishes a rotation as a Lambda rotation function does: a
// new version staged AWSPENDING, then AWSCURRENT moved onto it with
// UpdateSecretVersionStage. It returns the old and the new version ids.
func moveCurrent(t *testing.T, id, value string) (from, to string) {
	t.Helper()
	from = currentVersion(t, id)
	out, err := moto.SecretsManager().PutSecretValue(t.Context(), &secretsmanager.PutSecretValueInput{
		SecretId: aws.String(id), SecretString: aws.String(value), VersionStages: []string{"AWSPENDING"},
	})
	if err != nil {
		t.Fatal(redacted(err, value))
	}
	to = aws.ToString(out.VersionId)
	if _, err := moto.SecretsManager().UpdateSecretVersionStage(t.Context(), &secretsmanager.UpdateSecretVersionStageInput{
		SecretId: aws.String(id), VersionStage: aws.String(currentStage), MoveToVersionId: aws.String(to), RemoveFromVersionId: aws.String(from),
	}); err != nil {
		t.Fatal(err)
	}
	return from, to
}

// After UpdateSecretVersionStage moves AWSCURRENT, the poll reads exactly
// the version DescribeSecret reported, refuses an answer for another one
// (moto's answer to a read without a version), and polls after the change
// read no value again. A fresh load reads the new version too, the batch's
// answer for the old one notwithstanding.
func TestSecretSourceStageMove(t *testing.T) {
	u := uniq(t)
	createSecret(t, u+"/db", `{"password":"pw-1"}`, nil)
	createSecret(t, u+"/other", "other-1", nil)
	proxy, cfg := proxied(t)
	src := &secretSource{Secrets: []Secret{{ID: u + "/db", Prefix: "DB_"}, {ID: u + "/other", Rank: 1}}, Clients: clientsFor(cfg)}
	layer, err := src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_, v2 := moveCurrent(t, u+"/db", `{"password":"pw-2"}`)
	pollSecrets(t, proxy, src, layer, "AWSCURRENT moved", true)
	now, err := src.Versions(t.Context(), layer, false)
	if err != nil {
		t.Fatal(err)
	}
	if now[u+"/db"] != v2 {
		t.Fatalf("versions %v, want %s on the new version %s", now, u+"/db", v2)
	}

	proxy.Inject(faultproxy.Rule{Op: "secretsmanager:GetSecretValue", Fault: faultproxy.IgnoreVersion, Names: []string{u + "/db"}, Times: 1})
	if bad, err := src.Refresh(t.Context(), layer, now); err == nil || !Transient(err) || !strings.Contains(err.Error(), v2) {
		t.Fatalf("an answer for another version: %v (variables %v), want a transient error naming %s", err, varsOf(bad), v2)
	} else {
		noValues(t, err, "pw-1", "pw-2")
	}
	next, err := src.Refresh(t.Context(), layer, now)
	if err != nil {
		t.Fatal(err)
	}
	wantVars(t, next, map[string]string{"DB_PASSWORD": "pw-2", "OTHER": "other-1"})
	if !maps.Equal(next.Versions, now) {
		t.Errorf("refreshed versions %v, want those the poll saw %v", next.Versions, now)
	}
	pollSecrets(t, proxy, src, next, "after the refresh", false)
	pollSecrets(t, proxy, src, next, "after the refresh, again", false)

	proxy.ResetCounts()
	fresh, err := src.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantVars(t, fresh, map[string]string{"DB_PASSWORD": "pw-2", "OTHER": "other-1"})
	if c := proxy.Counts(); c.ByOp["secretsmanager:BatchGetSecretValue"] != 1 || c.ByOp["secretsmanager:GetSecretValue"] != 1 {
		t.Errorf("a load after the stage move: calls %v, want the batch and one single read by stage", c.ByOp)
	}

	// A read by stage answered with a version off the stage is refused.
	proxy.Inject(faultproxy.Rule{Op: "secretsmanager:GetSecretValue", Fault: faultproxy.IgnoreVersion, Times: 1})
	lone := &secretSource{Secrets: []Secret{{ID: u + "/db", Prefix: "DB_"}}, Clients: clientsFor(cfg)}
	if _, err := lone.Load(t.Context()); err == nil || !Transient(err) || !strings.Contains(err.Error(), "stage AWSCURRENT") {
		t.Errorf("a read by stage answered with the old version: %v, want a transient error", err)
	}
}

// TestSecretJSONKeyNames: a prefix makes a name valid by itself, so a key
// that maps to nothing is no error with one, and the "_" a bare name gets
// before a leading digit is not added after a prefix.
func TestSecretJSONKeyNames(t *testing.T) {
	names := func(prefix, value string) (map[string]string, error) {
		vars, err := Secret{ID: "s", Prefix: prefix}.vars(secretValue{name: "s", value: value})
		out := make(map[string]string)
		for _, v := range vars {
			out[v.Name] = v.Value
		}
		return out, err
	}
	got, err := names("APP_", `{"1pw":"v1","":"v2","db-host":"v3"}`)
	if err != nil {
		t.Fatalf("with a prefix: %v", err)
	}
	if want := map[string]string{"APP_1PW": "v1", "APP_": "v2", "APP_DB_HOST": "v3"}; !maps.Equal(got, want) {
		t.Errorf("with prefix APP_: %v, want %v", got, want)
	}
	got, err = names("", `{"1pw":"v1","db-host":"v3"}`)
	if err != nil {
		t.Fatalf("without a prefix: %v", err)
	}
	if want := map[string]string{"_1PW": "v1", "DB_HOST": "v3"}; !maps.Equal(got, want) {
		t.Errorf("without a prefix: %v, want %v", got, want)
	}
	// Without a prefix an empty key has no name: the error names the key.
	if _, err := names("", `{"":"v2","ok":"v1"}`); err == nil || !strings.Contains(err.Error(), `JSON key ""`) {
		t.Errorf("empty key without a prefix: %v, want an error naming it", err)
	}
	// Two keys on one name are still refused with a prefix.
	if _, err := names("APP_", `{"":"v2","/":"v3"}`); err == nil || strings.Contains(err.Error(), "v2") {
		t.Errorf("two keys mapping to APP_: %v, want an error without values", err)
	}
}
