package exec

import (
	"io"
	"os"
	"sync"
	"time"
)

// drainLimit bounds how long Run waits, after the last child is gone, for
// output still in the pipes feeding a non-file Stdout or Stderr. Something
// outside the child's process group (a daemon that called setsid) can hold a
// pipe open forever.
const drainLimit = 2 * time.Second

// stdio holds the three descriptors every child inherits. Files are passed
// as they are; any other Reader or Writer is fed through a pipe by a copying
// goroutine that lives as long as Run, so all children share it.
type stdio struct {
	files     [3]*os.File
	childEnds []*os.File     // our copies of the pipe ends the children get
	readEnds  []*os.File     // the ends output copiers read from
	stdinW    *os.File       // the end the stdin copier writes to
	copiers   sync.WaitGroup // output copiers
}

func openStdio(stdin io.Reader, stdout, stderr io.Writer) (*stdio, error) {
	s := new(stdio)
	if stdin == nil {
		stdin = os.Stdin
	}
	if stdout == nil {
		stdout = os.Stdout
	}
	if stderr == nil {
		stderr = os.Stderr
	}
	if f, ok := stdin.(*os.File); ok {
		s.files[0] = f
	} else {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		s.files[0], s.stdinW = r, w
		s.childEnds = append(s.childEnds, r)
		// Ends on the Reader's EOF or error, or when close shuts the pipe;
		// as with os/exec, a Reader that blocks forever keeps it alive.
		go func() {
			io.Copy(w, stdin)
			w.Close()
		}()
	}
	var err error
	if s.files[1], err = s.writer(stdout); err != nil {
		s.close()
		return nil, err
	}
	if sameWriter(stdout, stderr) {
		s.files[2] = s.files[1]
	} else if s.files[2], err = s.writer(stderr); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *stdio) writer(w io.Writer) (*os.File, error) {
	if f, ok := w.(*os.File); ok {
		return f, nil
	}
	r, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	s.childEnds = append(s.childEnds, pw)
	s.readEnds = append(s.readEnds, r)
	s.copiers.Add(1)
	go func() {
		defer s.copiers.Done()
		io.Copy(w, r)
	}()
	return pw, nil
}

// close lets the copiers finish what the children wrote, within drainLimit.
func (s *stdio) close() {
	for _, f := range s.childEnds {
		f.Close()
	}
	if s.stdinW != nil {
		s.stdinW.Close()
	}
	done := make(chan struct{})
	go func() {
		s.copiers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(drainLimit):
	}
	for _, f := range s.readEnds {
		f.Close() // unblocks a copier still reading
	}
	<-done
}

// sameWriter reports whether a and b are the same writer, so that one pipe
// and one copier serve both and writes to it never race. Like os/exec, it
// treats uncomparable writers as different.
func sameWriter(a, b io.Writer) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
}
