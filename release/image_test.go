package release_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paramexec/paramexec/internal/testenv"
)

type ociDescriptor struct {
	MediaType   string `json:"mediaType"`
	Digest      string `json:"digest"`
	Platform    *struct{ Architecture, OS string }
	Annotations map[string]string `json:"annotations"`
}

// testImage runs release/image.sh over build.sh's output and checks the
// layout: the version tag is an index of one linux image per architecture,
// each holding that architecture's release binary, byte for byte.
func testImage(t *testing.T, d dist) {
	if _, err := exec.LookPath("umoci"); err != nil {
		testenv.SkipOrFailOnCI(t, "umoci not installed (apt-get install umoci): %v", err)
	}
	cmd := exec.Command("bash", "release/image.sh", stampVersion)
	cmd.Dir = d.repo
	cmd.Env = append(os.Environ(), "DIST="+d.dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release/image.sh: %v\n%s", err, out)
	}
	layout := d.path("oci")
	var top struct{ Manifests []ociDescriptor }
	readJSON(t, filepath.Join(layout, "index.json"), &top)
	var index *ociDescriptor
	for i, m := range top.Manifests {
		if m.Annotations["org.opencontainers.image.ref.name"] == stampVersion {
			index = &top.Manifests[i]
		}
	}
	if index == nil || index.MediaType != "application/vnd.oci.image.index.v1+json" {
		t.Fatalf("no image index tagged %s in %+v", stampVersion, top.Manifests)
	}
	var multi struct{ Manifests []ociDescriptor }
	readJSON(t, blob(layout, index.Digest), &multi)
	seen := map[string]bool{}
	for _, m := range multi.Manifests {
		if m.Platform == nil || m.Platform.OS != "linux" {
			t.Fatalf("index entry without a linux platform: %+v", m)
		}
		arch := m.Platform.Architecture
		seen[arch] = true
		var manifest struct {
			Config ociDescriptor
			Layers []ociDescriptor
		}
		readJSON(t, blob(layout, m.Digest), &manifest)
		var config struct {
			Architecture string
			Config       struct {
				User       string
				Entrypoint []string
			}
		}
		readJSON(t, blob(layout, manifest.Config.Digest), &config)
		if config.Architecture != arch || config.Config.User != "65532:65532" || strings.Join(config.Config.Entrypoint, " ") != "/paramexec" {
			t.Errorf("%s image config: %+v", arch, config)
		}
		if len(manifest.Layers) != 1 {
			t.Fatalf("%s image has %d layers, want 1", arch, len(manifest.Layers))
		}
		want, err := os.ReadFile(d.path("paramexec-linux-" + arch))
		if err != nil {
			t.Fatal(err)
		}
		if got := layerFile(t, blob(layout, manifest.Layers[0].Digest), "paramexec"); !bytes.Equal(got, want) {
			t.Errorf("%s image: /paramexec (%d bytes) is not paramexec-linux-%s (%d bytes)", arch, len(got), arch, len(want))
		}
	}
	if len(seen) != 2 || !seen["amd64"] || !seen["arm64"] {
		t.Errorf("index platforms %v, want amd64 and arm64", seen)
	}
}

func blob(layout, digest string) string {
	alg, hex, _ := strings.Cut(digest, ":")
	return filepath.Join(layout, "blobs", alg, hex)
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// layerFile returns the content of name in a gzip-compressed layer tar.
func layerFile(t *testing.T, path, name string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			t.Fatalf("%s: no %s in the layer", path, name)
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimPrefix(h.Name, "./") == name {
			if h.Uid != 0 || h.Gid != 0 || h.Mode&0o777 != 0o755 {
				t.Errorf("%s in the layer: uid %d gid %d mode %o, want root's and 0755", name, h.Uid, h.Gid, h.Mode)
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return data
		}
	}
}
