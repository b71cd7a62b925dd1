package container_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestImageIsDockerfileExample holds the image the containers run against
// the final stage of Dockerfile.example: the same files outside /app (the
// application's place, where the test's stands in for busybox), the same
// USER, ENV, ENTRYPOINT and EXPOSE, and an application under /app as CMD.
// It also checks that this image is the release image plus one layer, so
// that what the tests run is what a user pulls.
func TestImageIsDockerfileExample(t *testing.T) {
	final := finalStage(t, filepath.Join(fx.repo, "Dockerfile.example"))

	var want []string
	for _, in := range final {
		if in.cmd == "COPY" {
			f := strings.Fields(in.args)
			dst := strings.TrimPrefix(f[len(f)-1], "/")
			if !strings.HasPrefix(dst, "app/") {
				want = append(want, dst)
			}
		}
	}
	slices.Sort(want)
	var got []string
	var apps int
	for _, f := range fx.files {
		if strings.HasPrefix(f, "app/") {
			apps++
		} else {
			got = append(got, f)
		}
	}
	if !slices.Equal(got, want) || apps == 0 {
		t.Errorf("the image holds %q and %d file(s) under /app; Dockerfile.example's final stage copies %q and an app under /app", got, apps, want)
	}

	cfg := imageConfig(t, appTag)
	for _, in := range final {
		switch in.cmd {
		case "USER":
			if cfg.Config.User != in.args {
				t.Errorf("image user %q, Dockerfile USER %s", cfg.Config.User, in.args)
			}
		case "ENV":
			for _, kv := range strings.Fields(in.args) {
				if !slices.Contains(cfg.Config.Env, kv) {
					t.Errorf("image env %q lacks the Dockerfile's ENV %s", cfg.Config.Env, kv)
				}
			}
		case "ENTRYPOINT":
			var argv []string
			if err := json.Unmarshal([]byte(in.args), &argv); err != nil || !slices.Equal(argv, cfg.Config.Entrypoint) {
				t.Errorf("image entrypoint %q, Dockerfile ENTRYPOINT %s (%v)", cfg.Config.Entrypoint, in.args, err)
			}
		case "EXPOSE":
			if _, ok := cfg.Config.ExposedPorts[in.args+"/tcp"]; !ok {
				t.Errorf("image exposes %v, Dockerfile EXPOSE %s", cfg.Config.ExposedPorts, in.args)
			}
		}
	}
	if len(cfg.Config.Cmd) == 0 || !strings.HasPrefix(cfg.Config.Cmd[0], "/app/") {
		t.Errorf("image CMD %q, want the application under /app", cfg.Config.Cmd)
	}

	release, appImage := manifest(t, releaseTag), manifest(t, appTag)
	digests := func(ds []descriptor) []string {
		var out []string
		for _, d := range ds {
			out = append(out, d.Digest)
		}
		return out
	}
	rl, al := digests(release.Layers), digests(appImage.Layers)
	if len(al) != len(rl)+1 || !slices.Equal(al[:len(rl)], rl) {
		t.Errorf("the app image's layers %v are not the release image's %v plus one", al, rl)
	}
}

type instruction struct{ cmd, args string }

// finalStage returns the instructions after the Dockerfile's last FROM,
// continuation lines joined, comments dropped.
func finalStage(t *testing.T, path string) []instruction {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var all []instruction
	joined := ""
	for _, raw := range strings.Split(string(data), "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if l, ok := strings.CutSuffix(line, `\`); ok {
			joined += l + " "
			continue
		}
		cmd, args, _ := strings.Cut(joined+line, " ")
		all = append(all, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		joined = ""
	}
	last := -1
	for i, in := range all {
		if in.cmd == "FROM" {
			last = i
		}
	}
	if last < 0 {
		t.Fatalf("%s has no FROM", path)
	}
	return all[last+1:]
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Annotations map[string]string `json:"annotations"`
}

type imageManifest struct {
	Config descriptor   `json:"config"`
	Layers []descriptor `json:"layers"`
}

type ociConfig struct {
	Architecture string `json:"architecture"`
	Config       struct {
		User         string
		Env          []string
		Entrypoint   []string
		Cmd          []string
		ExposedPorts map[string]struct{}
	} `json:"config"`
}

func readBlob(t *testing.T, digest string, v any) {
	t.Helper()
	alg, hex, _ := strings.Cut(digest, ":")
	data, err := os.ReadFile(filepath.Join(fx.layout, "blobs", alg, hex))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatal(err)
	}
}

func manifest(t *testing.T, tag string) imageManifest {
	t.Helper()
	var index struct{ Manifests []descriptor }
	data, err := os.ReadFile(filepath.Join(fx.layout, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &index); err != nil {
		t.Fatal(err)
	}
	for _, d := range index.Manifests {
		if d.Annotations["org.opencontainers.image.ref.name"] == tag {
			var m imageManifest
			readBlob(t, d.Digest, &m)
			return m
		}
	}
	t.Fatalf("no %q in %s", tag, fx.layout)
	return imageManifest{}
}

func imageConfig(t *testing.T, tag string) ociConfig {
	t.Helper()
	var cfg ociConfig
	readBlob(t, manifest(t, tag).Config.Digest, &cfg)
	return cfg
}
