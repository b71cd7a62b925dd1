package exec

import (
	"runtime"
	"syscall"
)

// forker forks every child of one Run from one OS thread that lives as long
// as the Run. The children ask for SIGKILL when their parent dies
// (PR_SET_PDEATHSIG), so that a supervisor killed outright (the OOM killer)
// does not leave them running unsupervised; but Linux sends that signal
// when the *thread* that forked exits, not the process. The Go runtime
// ends a thread only when a goroutine locked to it exits, which an
// unlocked ForkExec could run on: so the forks happen on a thread of our
// own, locked for good and released only when Run is over and no child is
// left for its exit to kill.
type forker struct {
	reqs chan forkReq
	done chan struct{}
}

type forkReq struct {
	path string
	argv []string
	attr *syscall.ProcAttr
	res  chan<- forkRes
}

type forkRes struct {
	pid int
	err error
}

func startForker() *forker {
	f := &forker{reqs: make(chan forkReq), done: make(chan struct{})}
	go f.loop()
	return f
}

func (f *forker) loop() {
	defer close(f.done)
	// Never unlocked: when loop returns, the runtime ends the thread.
	runtime.LockOSThread()
	for req := range f.reqs {
		pid, err := syscall.ForkExec(req.path, req.argv, req.attr)
		req.res <- forkRes{pid, err}
	}
}

// forkExec is syscall.ForkExec on the forker's thread.
func (f *forker) forkExec(path string, argv []string, attr *syscall.ProcAttr) (int, error) {
	res := make(chan forkRes, 1)
	f.reqs <- forkReq{path, argv, attr, res}
	r := <-res
	return r.pid, r.err
}

// close ends the thread; any child it forked that still runs gets SIGKILL.
func (f *forker) close() {
	close(f.reqs)
	<-f.done
}
