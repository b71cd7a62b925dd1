package main

import (
	"debug/elf"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	osexec "os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/motoserver"
	"github.com/paramexec/paramexec/internal/testenv"
)

// The numeric user of Dockerfile.example: no /etc/passwd names it.
const scratchUID, scratchGID = 65532, 65532

// TestScratchContainer runs the static binary as the barest runtime could
// run the entrypoint of a scratch image: PID 1 of a new PID namespace, in a
// mount namespace of its own, chrooted into a read-only root that holds only
// paramexec, a CA bundle, a static test child and an .env file (no /tmp, no
// /etc/passwd, no shell), as a numeric non-root uid without capabilities,
// with no /proc, no /dev and an empty environment (no PATH, no HOME). AWS is
// moto on the host's loopback behind a TLS proxy whose CA exists only in the
// image's bundle. One parameter change gives one restart with the new value;
// SIGTERM from outside to the namespace's PID 1 ends it with the child's
// exit code.
//
// e2e/container runs the release image in runc, as Docker, containerd and
// ECS do, for everything a real runtime shows. This test stays for what runc
// cannot: runc refuses a container without /proc ("open /proc/self/fd: no
// such file or directory"), so only a hand-made container proves that
// paramexec needs neither /proc nor /dev nor any variable of its own.
func TestScratchContainer(t *testing.T) {
	parallelE2E(t)
	if os.Geteuid() != 0 {
		testenv.SkipOrFailOnCI(t, "the scratch container test needs root for namespaces, mounts and chroot (euid %d)", os.Geteuid())
	}
	testScratchContainer(t, buildScratchImage(t))
}

// scratchImage is what the tests build once: the programs, and the CA that
// the TLS endpoint's certificate is signed with.
type scratchImage struct {
	paramexec, testchild, runner string // host paths of static binaries
	bundle                       []byte // the host's CA bundle plus the test CA
	endpoint                     string // https://127.0.0.1:PORT, a TLS proxy to moto
}

func buildScratchImage(t *testing.T) scratchImage {
	dir := t.TempDir()
	img := scratchImage{
		paramexec: filepath.Join(dir, "paramexec"),
		testchild: filepath.Join(dir, "testchild"),
		runner:    filepath.Join(dir, "container"),
	}
	for _, b := range [][]string{
		// Dockerfile.example's own build command: the binary a scratch
		// image ships, not the -race one the other tests run.
		{"build", "-trimpath", "-tags", "nethttpomithttp2", "-ldflags=-s -w", "-o", img.paramexec, "."},
		{"build", "-o", img.testchild, "./internal/testchild"},
		{"build", "-o", img.runner, "./internal/container"},
	} {
		cmd := osexec.Command("go", b...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(b, " "), err, out)
		}
	}
	for _, bin := range []string{img.paramexec, img.testchild} {
		if interp := elfInterpreter(t, bin); interp != "" {
			t.Fatalf("%s is not static: it asks for %s", filepath.Base(bin), interp)
		}
	}

	target, err := url.Parse(moto.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewUnstartedServer(&httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(target) },
		// paramexec cancels its poll when it stops: not worth a line.
		ErrorLog: log.New(io.Discard, "", 0),
	})
	proxy.StartTLS()
	t.Cleanup(proxy.Close)
	img.endpoint = proxy.URL

	// The image's bundle: the distribution's, as Dockerfile.example copies
	// it, plus the proxy's self-signed certificate, which nothing else
	// trusts.
	host, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		testenv.SkipOrFailOnCI(t, "no CA bundle to copy into the image: %v", err)
	}
	img.bundle = append(host, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: proxy.Certificate().Raw})...)
	return img
}

// elfInterpreter returns the dynamic loader a binary asks for, "" if static.
func elfInterpreter(t *testing.T, path string) string {
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			p.ReadAt(b, 0)
			return strings.TrimRight(string(b), "\x00")
		}
	}
	return ""
}

// makeRoot lays out the image's root and returns it: the files, and empty
// directories as mount points, since nothing can be created in it later.
func makeRoot(t *testing.T, img scratchImage, envFile string) string {
	root := t.TempDir()
	for _, d := range []string{"etc/ssl/certs", "config", "out"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{"paramexec", mustRead(t, img.paramexec), 0o755},
		{"testchild", mustRead(t, img.testchild), 0o755},
		{"etc/ssl/certs/ca-certificates.crt", img.bundle, 0o644},
		{"config/app.env", []byte(envFile), 0o600},
	} {
		if err := os.WriteFile(filepath.Join(root, f.path), f.data, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	// The .env file may hold secrets: the app's user alone reads it.
	if err := os.Chown(filepath.Join(root, "config/app.env"), scratchUID, scratchGID); err != nil {
		t.Fatal(err)
	}
	// t.TempDir is 0700; an image's root is world-searchable.
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}

	// What the test relies on, checked rather than assumed.
	var files []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			files = append(files, rel)
		}
		return nil
	})
	want := []string{"config/app.env", "etc/ssl/certs/ca-certificates.crt", "paramexec", "testchild"}
	if !slices.Equal(files, want) {
		t.Fatalf("the root holds %q, want exactly %q", files, want)
	}
	return root
}

func mustRead(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testScratchContainer(t *testing.T, img scratchImage) {
	path := uniquePath(t)
	moto.PutParameter(t, path+"/DB_PASSWORD", val("old"), "SecureString")
	root := makeRoot(t, img, "FROM_FILE="+val("file")+"\n")
	out := t.TempDir()
	if err := os.Chown(out, scratchUID, scratchGID); err != nil {
		t.Fatal(err)
	}
	rec := filepath.Join(out, "records.jsonl")

	args := []string{"-root", root, "-bind", out + ":/out", "-user", strconv.Itoa(scratchUID) + ":" + strconv.Itoa(scratchGID)}
	args = append(args, "--",
		"/paramexec", "--env-file", "/config/app.env", "--path", path, "--interval", "1s", "--grace", "5s",
		"--", "/testchild", "-record", "/out/records.jsonl", "-term-exit", "7")
	c := startContainer(t, img.runner, motoserver.Env(img.endpoint), args)

	first := c.waitStarts(t, rec, 1)[0]
	if first.Env["DB_PASSWORD"] != val("old") || first.Env["FROM_FILE"] != val("file") {
		t.Fatalf("first child: DB_PASSWORD=%q FROM_FILE=%q; stderr:\n%s", first.Env["DB_PASSWORD"], first.Env["FROM_FILE"], c.stderr.String())
	}
	if first.Ppid != 1 {
		t.Errorf("the child's parent is pid %d in the namespace, want paramexec as PID 1", first.Ppid)
	}
	c.checkContainer(t, root)
	childHost := c.hostPidOf(t, first.Pid)
	if st := testenv.ProcStatus(t, childHost); st["Uid"] != uidLine(scratchUID) {
		t.Errorf("the child runs as uid %q, want %d", st["Uid"], scratchUID)
	}

	moto.PutParameter(t, path+"/DB_PASSWORD", val("new"), "SecureString")
	second := c.waitStarts(t, rec, 2)[1]
	if second.Env["DB_PASSWORD"] != val("new") || second.Env["FROM_FILE"] != val("file") || second.Ppid != 1 {
		t.Errorf("new child: DB_PASSWORD=%q FROM_FILE=%q ppid=%d", second.Env["DB_PASSWORD"], second.Env["FROM_FILE"], second.Ppid)
	}
	recs := readRecords(t, rec)
	exitIdx := slices.IndexFunc(recs, func(r record) bool { return r.Event == "exit" && r.Pid == first.Pid })
	startIdx := slices.IndexFunc(recs, func(r record) bool { return r.Event == "start" && r.Pid == second.Pid })
	if exitIdx < 0 || exitIdx > startIdx {
		t.Errorf("the old child did not exit before the new one started: %+v", recs)
	}
	// Three quiet polls at --interval 1s: a restart that a poll in the
	// scratch root got wrong (an unread file, a failed call taken as a
	// change) would show here; the other e2e tests cover longer watches.
	time.Sleep(3 * time.Second)
	if n := len(starts(readRecords(t, rec))); n != 2 {
		t.Errorf("%d child starts after one change, want 2", n)
	}
	secondHost := c.hostPidOf(t, second.Pid)

	// What docker stop does: SIGTERM to the container's PID 1 from outside.
	if err := syscall.Kill(c.pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := c.wait(t); code != 7 {
		t.Errorf("exit %d after SIGTERM, want the child's 7; stderr:\n%s", code, c.stderr.String())
	}
	recs = readRecords(t, rec)
	if !slices.ContainsFunc(recs, func(r record) bool { return r.Pid == second.Pid && r.Signal == "SIGTERM" }) {
		t.Errorf("the child did not get SIGTERM: %+v", recs)
	}
	if err := syscall.Kill(secondHost, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the child (host pid %d) outlived paramexec: kill 0: %v", secondHost, err)
	}
	// /out is the only writable place: paramexec needs none.
	if entries, err := os.ReadDir(out); err != nil || len(entries) != 1 || entries[0].Name() != "records.jsonl" {
		t.Errorf("/out holds %v (%v), want the child's records alone", entries, err)
	}
	for _, line := range strings.Split(c.stderr.String(), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			t.Errorf("paramexec complained in the scratch root: %s", line)
		}
	}
}

// container is the runner started in new namespaces; after its exec, pid
// is paramexec's, as the host sees it.
type container struct {
	pid    int
	stderr *syncBuffer
	done   chan struct{}
	code   int // valid once done is closed; negative: killed by that signal
}

func startContainer(t *testing.T, runner string, env, args []string) *container {
	t.Helper()
	cmd := osexec.Command(runner, args...)
	cmd.Env = env
	c := &container{stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = c.stderr, c.stderr
	cmd.WaitDelay = 5 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS,
		// If the test binary dies, so does the namespace (the runner sets
		// it again after leaving root, which clears it).
		Pdeathsig: syscall.SIGKILL,
	}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig follows the thread that forked: keep it for the
		// container's whole life.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			close(c.done)
			return
		}
		started <- nil
		cmd.Wait()
		c.code = cmd.ProcessState.ExitCode()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			c.code = -int(ws.Signal())
		}
		logScan.add(c.stderr.String())
		close(c.done)
	}()
	if err := <-started; err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) {
			testenv.SkipOrFailOnCI(t, "no PID and mount namespaces here: %v", err)
		}
		t.Fatal(err)
	}
	c.pid = cmd.Process.Pid
	t.Cleanup(func() {
		select {
		case <-c.done:
			return
		default:
		}
		syscall.Kill(c.pid, syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(20 * time.Second):
			syscall.Kill(c.pid, syscall.SIGKILL)
			<-c.done
		}
	})
	return c
}

// waitStarts waits for n child starts, failing at once with paramexec's
// output if the container ends first.
func (c *container) waitStarts(t *testing.T, rec string, n int) []record {
	t.Helper()
	var s []record
	waitFor(t, strconv.Itoa(n)+" child start(s)", func() bool {
		select {
		case <-c.done:
			t.Fatalf("the container exited (%d) before %d child start(s); output:\n%s", c.code, n, c.stderr.String())
		default:
		}
		s = starts(readRecords(t, rec))
		return len(s) >= n
	})
	return s
}

func (c *container) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-c.done:
		return c.code
	case <-time.After(60 * time.Second):
		t.Fatalf("paramexec did not exit; output:\n%s", c.stderr.String())
		return 0
	}
}

// checkContainer looks at paramexec from the host: the container is what
// the test claims it is, so a pass says something about scratch images.
func (c *container) checkContainer(t *testing.T, root string) {
	t.Helper()
	st := testenv.ProcStatus(t, c.pid)
	if got, want := st["NSpid"], strconv.Itoa(c.pid)+"\t1"; got != want {
		t.Errorf("NSpid %q, want %q: paramexec is not PID 1 of its own namespace", got, want)
	}
	if st["Uid"] != uidLine(scratchUID) || st["Gid"] != uidLine(scratchGID) || st["Groups"] != "" {
		t.Errorf("paramexec runs as Uid %q Gid %q Groups %q, want %d:%d and no groups", st["Uid"], st["Gid"], st["Groups"], scratchUID, scratchGID)
	}
	if st["CapEff"] != "0000000000000000" {
		t.Errorf("paramexec keeps capabilities %s", st["CapEff"])
	}
	if got, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(c.pid), "root")); err != nil || got != root {
		t.Errorf("paramexec's root is %q (%v), want the image %s", got, err, root)
	}
	// mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ..., with mount
	// points as the process sees them.
	mounts := map[string]string{}
	data := mustRead(t, filepath.Join("/proc", strconv.Itoa(c.pid), "mountinfo"))
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 5 {
			mounts[f[4]] = f[5]
		}
	}
	if opts := mounts["/"]; !slices.Contains(strings.Split(opts, ","), "ro") {
		t.Errorf("the root is mounted %q, want read-only", opts)
	}
	if opts := mounts["/out"]; !slices.Contains(strings.Split(opts, ","), "rw") {
		t.Errorf("/out is mounted %q, want writable", opts)
	}
	for _, m := range []string{"/proc", "/dev", "/tmp"} {
		if _, ok := mounts[m]; ok {
			t.Errorf("the container has %s mounted", m)
		}
	}
}

// hostPidOf finds the host pid of paramexec's child whose pid in the
// namespace is nsPid.
func (c *container) hostPidOf(t *testing.T, nsPid int) int {
	t.Helper()
	// Each thread lists the children it forked; Go forks from any thread.
	tasks, err := filepath.Glob(filepath.Join("/proc", strconv.Itoa(c.pid), "task", "*", "children"))
	if err != nil {
		t.Fatal(err)
	}
	var data []byte
	for _, task := range tasks {
		b, _ := os.ReadFile(task) // a thread may have exited since
		data = append(append(data, b...), ' ')
	}
	for _, f := range strings.Fields(string(data)) {
		pid, _ := strconv.Atoi(f)
		ns := strings.Fields(testenv.ProcStatus(t, pid)["NSpid"])
		if len(ns) == 2 && ns[1] == strconv.Itoa(nsPid) {
			return pid
		}
	}
	t.Fatalf("no child of paramexec (host pid %d) is pid %d in its namespace: children %q", c.pid, nsPid, data)
	return 0
}

// uidLine is the Uid (or Gid) line of a process whose real, effective,
// saved and file-system ids are all id.
func uidLine(id int) string {
	s := strconv.Itoa(id)
	return s + "\t" + s + "\t" + s + "\t" + s
}
