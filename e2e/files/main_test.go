package files

import (
	"os"
	"testing"

	"github.com/paramexec/paramexec/internal/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }
