package values

import (
	"strings"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/harness"
)

// TestSharedPathNotSharedExitsTwo: a --path by ARN of another account under
// which nothing is shared with the caller is a mistake in the
// configuration or the share, refused at once with exit 2 and a message
// that says what to do; it is not retried for --startup-timeout as a read
// that might mend. moto, without the project's RAM stand-in, shares
// nothing, which is this case exactly.
func TestSharedPathNotSharedExitsTwo(t *testing.T) {
	harness.ParallelE2E(t)
	start := time.Now()
	r := harness.RunBinary(t, harness.BaseEnv(harness.Moto.URL),
		"--path", "arn:aws:ssm:us-east-1:444455556666:parameter/nobody/shares/this", "--startup-timeout", "60s", "--print")
	if r.Code != harness.ExitUsage {
		t.Fatalf("exit %d, want %d; stderr:\n%s", r.Code, harness.ExitUsage, r.Stderr)
	}
	for _, want := range []string{"444455556666", "AWS RAM", "advanced-tier"} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("the error does not say %q:\n%s", want, r.Stderr)
		}
	}
	// Not retried: well inside the 60 s start-up budget it was given.
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("took %s: the refusal was retried as a transient read", took)
	}
}
