package exec

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A proc names one process across pid reuse: its pid and its start time in
// clock ticks since boot, as /proc/PID/stat gives them.
type proc struct {
	pid   int
	start uint64
}

// procStat reads a process's parent, start time and whether it is a zombie.
func procStat(pid int) (ppid int, start uint64, zombie, ok bool) {
	ppid, _, start, zombie, ok = procStatGroup(pid)
	return ppid, start, zombie, ok
}

// procStatGroup is procStat with the process group.
func procStatGroup(pid int) (ppid, pgid int, start uint64, zombie, ok bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, 0, false, false
	}
	// pid (comm) state ppid pgrp ... starttime is field 22; comm may hold
	// spaces and parentheses, so count from the last ')'.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 {
		return 0, 0, 0, false, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgid, err2 := strconv.Atoi(f[2])
	start, err3 := strconv.ParseUint(f[19], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, 0, false, false
	}
	return ppid, pgid, start, f[0] == "Z", true
}

// stopped reports whether pid is stopped by a signal (state T).
func stopped(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] == "T"
}

// alive reports whether p still runs: same start time, not a zombie.
func (p proc) alive() bool {
	_, start, zombie, ok := procStat(p.pid)
	return ok && start == p.start && !zombie
}

// signal sends sig to p if it is still the process it was.
func (p proc) signal(sig syscall.Signal) {
	if p.pid > 1 && p.alive() {
		syscall.Kill(p.pid, sig)
	}
}

// descendants lists the live descendants of the roots, the roots excluded,
// from one scan of /proc. Zombies are passed through (their children were
// already given to a reaper) but not listed.
func descendants(roots ...int) []proc {
	return descendantsOutside(0, roots...)
}

// descendantsOutside is descendants without the members of process group
// pgid (0: none), which were sent SIGKILL as a group already.
func descendantsOutside(pgid int, roots ...int) []proc {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	type info struct {
		start uint64
		skip  bool
	}
	children := make(map[int][]int)
	infos := make(map[int]info)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, group, start, zombie, ok := procStatGroup(pid)
		if !ok {
			continue
		}
		children[ppid] = append(children[ppid], pid)
		infos[pid] = info{start, zombie || (pgid > 0 && group == pgid)}
	}
	var out []proc
	seen := make(map[int]bool)
	queue := append([]int(nil), roots...)
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range children[pid] {
			if seen[c] {
				continue
			}
			seen[c] = true
			queue = append(queue, c)
			if in := infos[c]; !in.skip {
				out = append(out, proc{c, in.start})
			}
		}
	}
	return out
}

// A generation's leftovers: what a child left behind outside its process
// group (setsid daemons, double-forked helpers), found among this process's
// descendants once the child has exited. They got the stop signal and are
// SIGKILLed at deadline.
type leftovers struct {
	procs    []proc
	deadline time.Time
}

// pids lists the pids for the log.
func (l leftovers) pids() []int {
	out := make([]int, len(l.procs))
	for i, p := range l.procs {
		out[i] = p.pid
	}
	return out
}

// prune drops what has exited and reports whether anything is left.
func (l *leftovers) prune(w world) bool {
	live := l.procs[:0]
	for _, p := range l.procs {
		if w.alive(p) {
			live = append(live, p)
		}
	}
	l.procs = live
	return len(live) > 0
}

// kill SIGKILLs what is left and anything it started since it was found.
func (l leftovers) kill(w world) { w.killProcs(l.procs) }

// killProcs SIGKILLs procs that still run and anything they started.
func killProcs(procs []proc) {
	var roots []int
	for _, p := range procs {
		if p.alive() {
			roots = append(roots, p.pid)
		}
	}
	later := descendants(roots...)
	for _, p := range procs {
		p.signal(syscall.SIGKILL)
	}
	for _, p := range later {
		p.signal(syscall.SIGKILL)
	}
}
