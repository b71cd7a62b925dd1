package main

import (
	"net"
	"path/filepath"
	"testing"

	"github.com/paramexec/paramexec/internal/sdnotify"
)

// While a write is under way, what comes meanwhile folds into one pending
// message: the newest state, a STATUS= alone keeping the state pending
// before it, and the newest status.
func TestNotifierKeepsTheNewestState(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	rcv, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	sd, err := sdnotify.New(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer sd.Close()
	// No writer runs: every post stays pending.
	n := &notifier{sd: sd, wake: make(chan struct{}, 1)}
	for _, tc := range []struct {
		posts []note
		want  note
	}{
		{[]note{reloadingNote("r"), status("s")}, note{state: reloadingState, status: "s"}},
		{[]note{readyNote("a"), status("exited"), status("draining")}, note{state: readyState, status: "draining"}},
		{[]note{readyNote("a"), reloadingNote("b")}, note{state: reloadingState, status: "b"}},
		{[]note{reloadingNote("b"), readyNote("c"), stoppingNote("d"), status("e")}, note{state: stoppingState, status: "e"}},
		{[]note{status("x")}, note{status: "x"}},
	} {
		n.has = false
		for _, m := range tc.posts {
			n.post(m)
		}
		if !n.has || n.pending != tc.want {
			t.Errorf("posts %+v: pending %+v, want %+v", tc.posts, n.pending, tc.want)
		}
	}
}
