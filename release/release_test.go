// Package release_test runs release/build.sh as a release would and checks
// what it writes: static binaries for both architectures, sums, SBOM, stamp.
package release_test

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/motoserver"
	"github.com/paramexec/paramexec/internal/testchild/childrec"
	"github.com/paramexec/paramexec/internal/testenv"
)

var moto *motoserver.Server

func TestMain(m *testing.M) { os.Exit(motoserver.Main(m, &moto)) }

// The stamp the test asks for; the date is SOURCE_DATE_EPOCH=1000000000.
const (
	stampVersion = "v9.8.7-test"
	stampDate    = "2001-09-09T01:46:40Z"
)

// dist is the output of one run of build.sh, shared by the tests here.
type dist struct{ dir, repo string }

func buildRelease(t *testing.T) dist {
	t.Helper()
	if testing.Short() {
		t.Skip("builds two release binaries")
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	d := dist{dir: t.TempDir(), repo: repo}
	cmd := exec.Command("bash", "release/build.sh", stampVersion)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "DIST="+d.dir, "SOURCE_DATE_EPOCH=1000000000")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release/build.sh: %v\n%s", err, out)
	}
	return d
}

func (d dist) path(name string) string { return filepath.Join(d.dir, name) }

// TestRelease builds once (two cross-compiles are the slow part) and checks
// every artifact, then runs the arm64 binary.
func TestRelease(t *testing.T) {
	d := buildRelease(t)
	t.Run("static", func(t *testing.T) {
		for arch, machine := range map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64} {
			checkStatic(t, d.path("paramexec-linux-"+arch), machine)
		}
	})
	t.Run("sums", func(t *testing.T) {
		sums, err := os.ReadFile(d.path("SHA256SUMS"))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"paramexec-linux-amd64", "paramexec-linux-arm64"} {
			if !bytes.Contains(sums, []byte("  "+name+"\n")) {
				t.Errorf("SHA256SUMS does not list %s:\n%s", name, sums)
			}
		}
		cmd := exec.Command("sha256sum", "-c", "SHA256SUMS")
		cmd.Dir = d.dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("sha256sum -c: %v\n%s", err, out)
		}
	})
	t.Run("sbom", func(t *testing.T) { checkSBOM(t, d) })
	t.Run("reproducible", func(t *testing.T) { testReproducible(t, d) })
	t.Run("image", func(t *testing.T) { testImage(t, d) })
	t.Run("arm64", func(t *testing.T) { testARM64(t, d) })
	t.Run("version", func(t *testing.T) {
		commit := strings.TrimSpace(run(t, d.repo, "git", "rev-parse", "HEAD"))
		prefix := "paramexec " + stampVersion + " (commit " + commit
		for _, argv := range [][]string{
			{d.path("paramexec-linux-amd64"), "--version"},
			{qemu(t), d.path("paramexec-linux-arm64"), "--version"},
		} {
			got := strings.TrimSpace(run(t, d.repo, argv[0], argv[1:]...))
			// +dirty when the tree has uncommitted changes, as a
			// developer's may; a CI checkout is clean.
			if !strings.HasPrefix(got, prefix) || !strings.HasSuffix(got, ", built "+stampDate+")") {
				t.Errorf("%s --version = %q, want %q[+dirty], built %s)", filepath.Base(argv[len(argv)-2]), got, prefix, stampDate)
			}
		}
	})
}

// testReproducible builds the amd64 binary again elsewhere with the same
// version and SOURCE_DATE_EPOCH: docs/release.md promises the same bytes,
// which is what lets anyone check a release's SHA256SUMS by a rebuild.
func testReproducible(t *testing.T, d dist) {
	again := t.TempDir()
	cmd := exec.Command("bash", "release/build.sh", stampVersion)
	cmd.Dir = d.repo
	cmd.Env = append(os.Environ(), "DIST="+again, "ARCHS=amd64", "SOURCE_DATE_EPOCH=1000000000")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release/build.sh: %v\n%s", err, out)
	}
	a, err := os.ReadFile(d.path("paramexec-linux-amd64"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(again, "paramexec-linux-amd64"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("two builds of one commit with one SOURCE_DATE_EPOCH differ (%d and %d bytes)", len(a), len(b))
	}
}

// checkStatic fails unless bin is an ELF for machine with no dynamic loader.
func checkStatic(t *testing.T, bin string, machine elf.Machine) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != machine || f.Class != elf.ELFCLASS64 {
		t.Errorf("%s: %v %v, want %v ELFCLASS64", filepath.Base(bin), f.Machine, f.Class, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s: %v program header: not static", filepath.Base(bin), p.Type)
		}
	}
}

type spdxDoc struct {
	SPDXVersion string `json:"spdxVersion"`
	Packages    []struct {
		Name         string `json:"name"`
		SPDXID       string `json:"SPDXID"`
		VersionInfo  string `json:"versionInfo"`
		ExternalRefs []struct {
			Type    string `json:"referenceType"`
			Locator string `json:"referenceLocator"`
		} `json:"externalRefs"`
	} `json:"packages"`
	Relationships []struct {
		Element string `json:"spdxElementId"`
		Type    string `json:"relationshipType"`
		Related string `json:"relatedSpdxElement"`
	} `json:"relationships"`
}

// checkSBOM parses the SBOM and holds its aws-sdk-go-v2 modules against
// the versions the amd64 binary itself records (go version -m).
func checkSBOM(t *testing.T, d dist) {
	data, err := os.ReadFile(d.path("sbom.spdx.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc spdxDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("sbom.spdx.json is not JSON: %v", err)
	}
	if doc.SPDXVersion != "SPDX-2.3" {
		t.Errorf("spdxVersion %q, want SPDX-2.3", doc.SPDXVersion)
	}
	listed := map[string]string{}
	for _, p := range doc.Packages {
		listed[p.Name] = p.VersionInfo
		if len(p.ExternalRefs) == 0 || !strings.HasPrefix(p.ExternalRefs[0].Locator, "pkg:golang/") {
			t.Errorf("package %s has no golang purl: %+v", p.Name, p.ExternalRefs)
		}
	}
	want := map[string]string{}
	for _, line := range strings.Split(run(t, d.repo, "go", "version", "-m", d.path("paramexec-linux-amd64")), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "dep" && strings.HasPrefix(f[1], "github.com/aws/aws-sdk-go-v2") {
			want[f[1]] = f[2]
		}
	}
	if len(want) < 3 {
		t.Fatalf("go version -m lists %d aws-sdk-go-v2 modules; the test expects the SDK, ssm and secretsmanager at least", len(want))
	}
	for mod, v := range want {
		if listed[mod] != v {
			t.Errorf("SBOM lists %s at %q, the binary was built with %s", mod, listed[mod], v)
		}
	}
	described := 0
	for _, r := range doc.Relationships {
		if r.Element == "SPDXRef-DOCUMENT" && r.Type == "DESCRIBES" {
			described++
		}
	}
	if described != 2 {
		t.Errorf("the SBOM describes %d packages, want the two binaries", described)
	}
}

// qemu returns qemu-user's aarch64 emulator. No binfmt_misc handler is
// registered here (that is kernel-wide state), so arm64 programs, the
// child included, are started through it explicitly.
func qemu(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("qemu-aarch64-static")
	if err != nil {
		testenv.SkipOrFailOnCI(t, "qemu-aarch64-static not installed (apt-get install qemu-user-static): %v", err)
	}
	return p
}

func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// testARM64 runs the arm64 release binary under qemu-user against moto:
// --print, then a supervised arm64 child restarted on a change.
func testARM64(t *testing.T, d dist) {
	emu := qemu(t)
	child := filepath.Join(t.TempDir(), "testchild-arm64")
	cmd := exec.Command("go", "build", "-o", child, "./internal/testchild")
	cmd.Dir = d.repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build arm64 testchild: %v\n%s", err, out)
	}
	checkStatic(t, child, elf.EM_AARCH64)

	prefix := fmt.Sprintf("/release-arm64/%d", time.Now().UnixNano())
	moto.PutParameter(t, prefix+"/GREETING", "hello-old", "String")
	bin := d.path("paramexec-linux-arm64")
	env := append(os.Environ(), moto.Env()...)

	printCmd := exec.Command(emu, bin, "--path", prefix, "--print", "--reveal", "--format", "dotenv")
	printCmd.Env = env
	out, err := printCmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), `GREETING="hello-old"`) {
		t.Fatalf("arm64 --print: %v\n%s", err, out)
	}

	rec := filepath.Join(t.TempDir(), "records.jsonl")
	sup := exec.Command(emu, bin, "--path", prefix, "--interval", "1s", "--grace", "10s",
		"--", emu, child, "-record", rec, "-term-exit", "3")
	sup.Env = env
	var logs testenv.Buffer
	sup.Stdout, sup.Stderr = &logs, &logs
	// Its own process group, so that a failed test kills the child too;
	// WaitDelay so that a child holding the output pipe cannot hang Wait.
	sup.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	sup.WaitDelay = 5 * time.Second
	if err := sup.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { sup.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-sup.Process.Pid, syscall.SIGKILL)
		<-done
	})
	first := waitStarts(t, rec, 1, &logs)[0]
	if first.Env["GREETING"] != "hello-old" {
		t.Fatalf("first arm64 child has GREETING=%q", first.Env["GREETING"])
	}
	moto.PutParameter(t, prefix+"/GREETING", "hello-new", "String")
	second := waitStarts(t, rec, 2, &logs)[1]
	if second.Env["GREETING"] != "hello-new" || second.Pid == first.Pid {
		t.Errorf("after the change: child %d with GREETING=%q, want a new child with hello-new", second.Pid, second.Env["GREETING"])
	}
	sup.Process.Signal(os.Interrupt)
	select {
	case <-done:
		if code := sup.ProcessState.ExitCode(); code != 3 {
			t.Errorf("arm64 paramexec exited %d, want the child's 3; output:\n%s", code, logs.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("arm64 paramexec did not exit on SIGINT; output:\n%s", logs.String())
	}
}

// waitStarts waits (emulation is slow: up to two minutes) for n child starts.
func waitStarts(t *testing.T, rec string, n int, logs *testenv.Buffer) []childrec.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		data, _ := os.ReadFile(rec)
		recs, err := childrec.Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		var starts []childrec.Record
		for _, r := range recs {
			if r.Event == "start" {
				starts = append(starts, r)
			}
		}
		if len(starts) >= n {
			return starts
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d child start(s) after 2m, want %d; paramexec said:\n%s", len(starts), n, logs.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
