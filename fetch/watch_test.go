package fetch

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/faultproxy"
)

// TestPollNeverHandsOnASupersededSecret: a poll that fails on one source
// keeps nothing it read of the others unchecked. The secret moved (v2)
// during a poll that failed on the path; before the next poll its
// AWSCURRENT moved on again (v3), v2 still there as AWSPREVIOUS. The next
// poll must hand on v3, never v2.
func TestPollNeverHandsOnASupersededSecret(t *testing.T) {
	u := uniq(t)
	moto.PutParameter(t, "/"+u+"/p", "p-1", "String")
	createSecret(t, u+"/s", "s-1", nil)
	proxy, cfg := proxied(t)
	clients := clientsFor(cfg)
	path, err := newPathSource("/"+u, clients.SSM(clients.Region), 0)
	if err != nil {
		t.Fatal(err)
	}
	sources := []Source{path, &secretSource{Secrets: []Secret{{ID: u + "/s", Prefix: "S", Rank: 1}}, Clients: clients}}
	layers, err := loadAll(t.Context(), sources)
	if err != nil {
		t.Fatal(err)
	}
	p := newPoller(sources, layers, slog.New(slog.DiscardHandler))
	all := allIndexes(len(sources))

	moto.PutSecretValue(t, u+"/s", "s-2")
	remove := proxy.Inject(faultproxy.Rule{Op: "ssm:GetParameters", Fault: faultproxy.Throttle})
	if err := p.poll(t.Context(), all, false); err == nil {
		t.Fatal("the poll with the path throttled succeeded")
	}
	remove()
	moto.PutSecretValue(t, u+"/s", "s-3")
	if err := p.poll(t.Context(), all, false); err != nil {
		t.Fatal(err)
	}
	_, vars := Merge(nil, p.layers, false)
	if got := varValues(vars); got != "P=p-1 S=s-3" {
		t.Errorf("after the poll: %s, want P=p-1 S=s-3 (s-2 was superseded before it)", got)
	}
}

func varValues(vars []Var) string {
	var parts []string
	for _, v := range vars {
		parts = append(parts, v.Name+"="+v.Value)
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// flaky is a source whose version check fails while fail is set.
type flaky struct {
	mu   sync.Mutex
	fail bool
}

func (f *flaky) String() string { return "flaky" }

func (f *flaky) Load(context.Context) (Layer, error) {
	return Layer{Vars: []Var{{Name: "F", Value: "f"}}, Versions: map[string]string{"f": "1"}}, nil
}

func (f *flaky) Versions(_ context.Context, last Layer, _ bool) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return nil, inconsistentf("flaky answer")
	}
	return last.Versions, nil
}

func (f *flaky) Refresh(_ context.Context, last Layer, _ map[string]string) (Layer, error) {
	return last, nil
}

// TestFilePollsKeepTheirOwnBackoff: a poll that an --env-file save
// triggers touches the file alone, so it neither ends the backoff of a
// failing AWS source ("poll recovered") nor, failing itself, pushes that
// source's next poll back.
func TestFilePollsKeepTheirOwnBackoff(t *testing.T) {
	file := filepath.Join(t.TempDir(), "app.env")
	mustWrite(t, file, "A=1\n")
	aws := &flaky{fail: true}
	env := &EnvFileSource{Path: file}
	sources := []Source{env, aws}
	layers, err := loadAll(t.Context(), sources)
	if err != nil {
		t.Fatal(err)
	}
	var log lockedBuffer
	clk := newFakeClock()
	w := &Watcher{Sources: sources, Interval: time.Minute, Log: slog.New(slog.NewTextHandler(&log, nil)), clock: clk}
	var updates []Update
	r := w.newRun(layers, w.Log, func(_ context.Context, u Update) { updates = append(updates, u) })
	events := make(chan []string, 1)
	r.fileEvents = events

	for range 2 { // two timed polls, both failing on the AWS source
		clk.fire(t, r.timer)
		if err := r.step(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	due := clk.deadline(r.timer)
	mustWrite(t, file, "A=2\n")
	events <- []string{file}
	if err := r.step(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte("not a dotenv line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	events <- []string{file}
	if err := r.step(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(updates) != 1 || !slices.Equal(updates[0].Changed, []string{"A"}) {
		t.Errorf("updates %v, want the one save of A", updates)
	}
	if got := clk.deadline(r.timer); !got.Equal(due) {
		t.Errorf("the timed poll moved from %s to %s after polls of the file alone", due.Format(time.TimeOnly), got.Format(time.TimeOnly))
	}
	if strings.Contains(log.String(), "poll recovered") {
		t.Errorf("a poll of the file alone ended the AWS source's backoff:\n%s", log.String())
	}
	if n := r.polls.failures[1]; n != 2 {
		t.Errorf("the AWS source's failures = %d after two failed polls, want 2", n)
	}
	aws.mu.Lock()
	aws.fail = false
	aws.mu.Unlock()
	mustWrite(t, file, "A=2\n")
	clk.fire(t, r.timer)
	if err := r.step(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "poll recovered") || r.polls.failures[1] != 0 {
		t.Errorf("the AWS source read again: failures %d, want 0 and 'poll recovered' in the log:\n%s", r.polls.failures[1], log.String())
	}
}
