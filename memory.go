package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// limitMemory sets a soft memory limit for the long-running supervisor, so
// that the garbage each poll leaves (the SDK allocates per call) is
// collected and returned to the system rather than left to grow the heap to
// twice its live size between collections. The limit is what the runtime
// needs besides the heap, plus the live heap after start-up, plus as much
// room again (at least 4 MiB), so that a large configuration does not make
// the collector run back to back. Measured at 1000 parameters it comes to
// 13.1 MiB, above the 8-9 MiB the runtime then holds: a backstop, with
// GOGC pacing the collector, since a binding 9 MiB limit cost 2.4 times the
// CPU for 1 MiB (README, Steady memory). A GOMEMLIMIT set by the user wins.
// It returns the limit set, or -1.
func limitMemory() int64 {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set {
		return -1
	}
	runtime.GC()
	s := []metrics.Sample{
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
	}
	metrics.Read(s)
	v := make([]uint64, len(s))
	for i, m := range s {
		if m.Value.Kind() != metrics.KindUint64 {
			return -1 // a runtime without these metrics: keep its defaults
		}
		v[i] = m.Value.Uint64()
	}
	live := v[1] // just after a collection, the objects are the live ones
	notHeap := v[0] - v[1] - v[2] - v[3] - v[4]
	limit := int64(notHeap + live + max(live, 4<<20))
	debug.SetMemoryLimit(limit)
	return limit
}

// releaseStartupPages tells the kernel that this process no longer needs
// the pages of its own executable that start-up touched. Initialising the
// AWS SDK's packages reads most of the binary once; those clean, read-only
// pages would otherwise stay mapped, and counted in the supervisor's RSS,
// for as long as it runs. The pages it still uses fault back in from the
// page cache at the cost of a minor fault each, and the ones it never uses
// again become the first the kernel can reclaim under memory pressure.
//
// Only read-only mappings of the executable are released: for a private
// read-only file mapping MADV_DONTNEED drops nothing but the page table
// entries. Writable mappings (data, bss) would lose their contents.
func releaseStartupPages() (released uint64, err error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// start-end perms offset dev inode path
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[5] != exe || len(f[1]) < 4 || f[1][1] != '-' || f[1][3] != 'p' {
			continue
		}
		start, end, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		lo, err1 := strconv.ParseUint(start, 16, 64)
		hi, err2 := strconv.ParseUint(end, 16, 64)
		if err1 != nil || err2 != nil || hi <= lo {
			continue
		}
		// The raw call takes the range as numbers: the mapping is ours and
		// stays mapped, only its page table entries go.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(lo), uintptr(hi-lo), unix.MADV_DONTNEED); errno != 0 {
			return released, fmt.Errorf("madvise %s: %w", f[0], errno)
		}
		released += hi - lo
	}
	return released, sc.Err()
}
