package examples_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/testenv"
)

// demoDeadline bounds the whole demo, first build included; it measures
// nothing (the demo takes about half a minute with a warm build cache).
const demoDeadline = 5 * time.Minute

// TestDemo runs the README's first command as a newcomer would, and checks
// that it exits 0 and showed what it promises: a change under load with no
// failed request, a bad value rolled back while the old child served on,
// and, where moto_server is installed, the Parameter Store restart.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo builds and runs the binary for half a minute")
	}
	for _, tool := range []string{"bash", "curl", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.SkipOrFailOnCI(t, "the demo needs %s: %v", tool, err)
		}
	}
	wants := []string{
		"Hello again, after an edit", // the .env restart
		"failed: 0;",                 // the change under load
		"broken: 0",                  // no request reached the bad child
		`msg="rollback finished; the old child kept serving"`, // the rollback
		"so the same process kept serving",
	}
	if _, err := exec.LookPath("moto_server"); err == nil {
		wants = append(wants, "DB_PASSWORD has 16 characters") // the Parameter Store restart
	} else if testenv.OnCI() {
		t.Fatalf("moto_server not installed: the demo's Parameter Store part would not run: %v", err)
	} else {
		t.Log("moto_server not installed: the demo skips its Parameter Store part")
	}

	ctx, cancel := context.WithTimeout(context.Background(), demoDeadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot(t), "examples", "demo.sh"))
	// The demo starts servers and a load loop; on a timeout the whole
	// process group goes, not only bash.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	text := string(out)
	if err != nil {
		t.Fatalf("demo.sh: %v\n%s", err, text)
	}
	for _, want := range wants {
		if !strings.Contains(text, want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, text)
		}
	}
}
