// Package container_test runs the release image in a real OCI runtime, runc,
// as Docker, containerd and ECS run it, from an image built with umoci.
package container_test

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/paramexec/paramexec/internal/motoserver"
	"github.com/paramexec/paramexec/internal/testenv"
)

// The image's numeric user, Dockerfile.example's USER.
const imageUID = 65532

// The tags in the OCI layout: the release image and the application image
// built on it.
const (
	releaseTag = "e2e-amd64"
	appTag     = "app"
)

var (
	moto *motoserver.Server
	fx   fixture
)

// fixture is what TestMain builds once for every test.
type fixture struct {
	repo     string
	layout   string   // the OCI image layout
	rootfs   string   // the application image unpacked: every container's root
	config   []byte   // the runtime config umoci generated from the image
	files    []string // the image's regular files, as unpacked, relative to /
	endpoint string   // https://127.0.0.1:PORT, TLS in front of moto
}

// TestMain builds what a release builds (release/build.sh and
// release/image.sh, amd64 only), adds a static test application the way
// Dockerfile.example's final stage adds its application, unpacks the result
// with umoci into one read-only root shared by every container, and starts
// moto behind a TLS terminator on the host's loopback. The tests run
// containers with `runc run` and stop them as `docker stop` does. They need
// root, runc and umoci; with CI=true their absence fails the run instead of
// skipping it.
func TestMain(m *testing.M) { os.Exit(mainCode(m)) }

func mainCode(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		fmt.Println("SKIP: -short: the container tests build a release image")
		return 0
	}
	if why := missing(); why != "" {
		if testenv.OnCI() {
			fmt.Fprintf(os.Stderr, "FAIL: CI=true but %s: the container tests must run on CI\n", why)
			return 1
		}
		fmt.Println("SKIP:", why)
		return 0
	}
	dir, err := os.MkdirTemp("", "paramexec-container-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	tlsFront, err := fx.build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: build the image:", err)
		return 1
	}
	defer tlsFront.Close()
	return motoserver.Main(m, &moto)
}

// missing says what this machine lacks to run containers, "" if nothing.
func missing() string {
	if os.Geteuid() != 0 {
		return fmt.Sprintf("runc needs root (euid %d)", os.Geteuid())
	}
	for _, tool := range []string{"runc", "umoci"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is not installed (apt-get install runc umoci; .ci/run does)"
		}
	}
	return ""
}

func (f *fixture) build(dir string) (*httptest.Server, error) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		return nil, err
	}
	f.repo, f.layout = repo, filepath.Join(dir, "oci")
	env := []string{"DIST=" + dir, "ARCHS=amd64"}
	steps := [][]string{
		{"bash", "release/build.sh", "e2e"},
		{"bash", "release/image.sh", "e2e"},
	}
	for _, s := range steps {
		if err := runIn(repo, env, s...); err != nil {
			return nil, err
		}
	}
	if err := f.addApp(dir); err != nil {
		return nil, err
	}
	bundle := filepath.Join(dir, "bundle")
	if err := runIn(repo, nil, "umoci", "unpack", "--image", f.layout+":"+appTag, bundle); err != nil {
		return nil, err
	}
	f.rootfs = filepath.Join(bundle, "rootfs")
	if f.config, err = os.ReadFile(filepath.Join(bundle, "config.json")); err != nil {
		return nil, err
	}
	if f.files, err = regularFiles(f.rootfs); err != nil {
		return nil, err
	}
	return f.startTLS(dir)
}

// addApp does what Dockerfile.example's final stage does after the
// paramexec stage's files: COPY an application under /app, EXPOSE and CMD.
// The application is testchild, static as scratch requires, in place of
// the example's busybox, so that the tests can read what it saw.
func (f *fixture) addApp(dir string) error {
	app := filepath.Join(dir, "app-layer")
	if err := os.MkdirAll(filepath.Join(app, "app"), 0o755); err != nil {
		return err
	}
	if err := runIn(f.repo, []string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-o", filepath.Join(app, "app", "testchild"), "./internal/testchild"); err != nil {
		return err
	}
	tar := filepath.Join(dir, "app.tar")
	image := f.layout + ":" + releaseTag
	for _, s := range [][]string{
		{"tar", "-C", app, "--owner=0", "--group=0", "--numeric-owner", "-cf", tar, "app"},
		{"umoci", "raw", "add-layer", "--image", image, "--tag", appTag, tar},
		{"umoci", "config", "--image", f.layout + ":" + appTag, "--config.exposedports", "8080/tcp",
			"--config.cmd", "/app/testchild", "--config.cmd", "-record", "--config.cmd", "/out/records.jsonl"},
	} {
		if err := runIn(f.repo, nil, s...); err != nil {
			return err
		}
	}
	return nil
}

// startTLS puts a TLS terminator in front of moto, with a certificate from a
// CA made here, and makes that CA the whole of the image's CA bundle.
//
// Replacing the bundle's content rather than building an image with it is
// equivalent for what is tested: the file is data at the path the image
// ships it (/etc/ssl/certs/ca-certificates.crt, the first place Go's
// crypto/x509 looks on Linux, with SSL_CERT_FILE unset), and the image has
// no other trust store. A fetch that succeeds proves paramexec verified the
// endpoint against that file and nothing else, as the real bundle's public
// CAs verify AWS's certificates; the host's own store does not know this CA.
func (f *fixture) startTLS(dir string) (*httptest.Server, error) {
	ca, err := newTestCA()
	if err != nil {
		return nil, err
	}
	bundle := filepath.Join(f.rootfs, "etc/ssl/certs/ca-certificates.crt")
	if err := os.WriteFile(bundle, ca.pem, 0o644); err != nil {
		return nil, err
	}
	srv := httptest.NewUnstartedServer(&httputil.ReverseProxy{
		// moto starts after this (motoserver.Main), before any request.
		Rewrite: func(r *httputil.ProxyRequest) {
			target, _ := url.Parse(moto.URL)
			r.SetURL(target)
		},
		// A container stopped mid-poll cancels its request: not worth a line.
		ErrorLog: log.New(io.Discard, "", 0),
	})
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.leaf}}
	srv.StartTLS()
	f.endpoint = srv.URL
	return srv, nil
}

func runIn(dir string, env []string, argv ...string) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, out)
	}
	return nil
}

// regularFiles lists the files under root, sorted, relative to it.
func regularFiles(root string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		files = append(files, rel)
		return nil
	})
	slices.Sort(files)
	return files, err
}
