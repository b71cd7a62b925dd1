package container_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/motoserver"
	"github.com/paramexec/paramexec/internal/testenv"
)

// app is the image's CMD with the given testchild flags added.
func app(flags ...string) []string {
	return append([]string{"/paramexec", "/app/testchild", "-record", recordFile}, flags...)
}

func uniquePath(t *testing.T) string {
	return fmt.Sprintf("/container/%s/%d", strings.ReplaceAll(t.Name(), "/", "-"), time.Now().UnixNano())
}

// awsEnv is what a task definition would set, pointed at moto over TLS.
func awsEnv(extra ...string) []string {
	return append(motoserver.Env(fx.endpoint), extra...)
}

// TestRestartOverTLS runs the image as ECS would, watching Parameter Store
// (moto on the host's loopback, through TLS that only the image's CA bundle
// can verify), looks at the running container from the host, changes the
// parameter, and stops the container as docker stop does.
func TestRestartOverTLS(t *testing.T) {
	path := uniquePath(t)
	moto.PutParameter(t, path+"/DB_PASSWORD", "old-password", "SecureString")
	c := runContainer(t, app("-term-exit", "7"),
		awsEnv("PARAMEXEC_PATH="+path, "PARAMEXEC_INTERVAL=1s", "PARAMEXEC_GRACE=5s"))

	first := c.waitStarts(t, 1)[0]
	if first.Env["DB_PASSWORD"] != "old-password" || first.Ppid != 1 {
		t.Fatalf("first application: DB_PASSWORD=%q ppid %d, want old-password and paramexec as PID 1", first.Env["DB_PASSWORD"], first.Ppid)
	}
	checkLockedDown(t, c)

	moto.PutParameter(t, path+"/DB_PASSWORD", "new-password", "SecureString")
	second := c.waitStarts(t, 2)[1]
	if second.Env["DB_PASSWORD"] != "new-password" || second.Ppid != 1 {
		t.Errorf("after the change: DB_PASSWORD=%q ppid %d, want new-password under PID 1", second.Env["DB_PASSWORD"], second.Ppid)
	}
	recs := c.records(t)
	exited := slices.IndexFunc(recs, func(r recordT) bool { return r.Event == "exit" && r.Pid == first.Pid })
	started := slices.IndexFunc(recs, func(r recordT) bool { return r.Event == "start" && r.Pid == second.Pid })
	if exited < 0 || exited > started {
		t.Errorf("the old application did not exit before the new one started: %+v", recs)
	}

	if code, killed := c.dockerStop(t, 10*time.Second); code != 7 || killed {
		t.Errorf("docker stop: runc reports %d (SIGKILL needed: %v), want the application's 7 after SIGTERM; output:\n%s", code, killed, c.logs.String())
	}
	for _, line := range strings.Split(c.logs.String(), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			t.Errorf("paramexec complained in the container: %s", line)
		}
	}
}

// checkLockedDown looks at the running container from the host: it is the
// scratch image Dockerfile.example describes, so that a pass says
// something about such images.
func checkLockedDown(t *testing.T, c *container) {
	t.Helper()
	pid1 := c.initPid(t)
	st := testenv.ProcStatus(t, pid1)
	if ns := strings.Fields(st["NSpid"]); len(ns) != 2 || ns[1] != "1" {
		t.Errorf("paramexec's NSpid is %q: not PID 1 of a PID namespace of its own", st["NSpid"])
	}
	uid := strconv.Itoa(imageUID)
	for _, pid := range c.pids(t) {
		st := testenv.ProcStatus(t, pid)
		if st["Uid"] != strings.Repeat(uid+"\t", 3)+uid || st["CapEff"] != "0000000000000000" {
			t.Errorf("pid %d (%s) runs as Uid %q with capabilities %s, want %s and none", pid, st["Name"], st["Uid"], st["CapEff"], uid)
		}
	}
	mounts := map[string]string{} // mount point, as the container sees it -> options
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid1), "mountinfo"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 5 {
			mounts[f[4]] = f[5]
		}
	}
	if !slices.Contains(strings.Split(mounts["/"], ","), "ro") {
		t.Errorf("the root is mounted %q, want read-only", mounts["/"])
	}
	if _, ok := mounts["/tmp"]; ok {
		t.Error("the container has a /tmp mount")
	}
	for _, p := range []string{"tmp", "etc/passwd", "bin/sh", "bin"} {
		if _, err := os.Lstat(filepath.Join(fx.rootfs, p)); !os.IsNotExist(err) {
			t.Errorf("the image has /%s (%v)", p, err)
		}
	}
	// docker exec sh: what an operator would try, refused for want of one.
	out, err := exec.Command("runc", "exec", c.id, "/bin/sh", "-c", "true").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no such file") {
		t.Errorf("runc exec /bin/sh: %v, %s; want no such file", err, out)
	}
}
