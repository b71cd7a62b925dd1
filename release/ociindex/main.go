// Command ociindex adds a multi-platform image index to an OCI image layout,
// over images already tagged in it, so that one tag serves every architecture.
//
// Usage: go run ./release/ociindex -layout DIR -tag TAG REF...
//
// Each REF names an image in DIR's index.json (its
// org.opencontainers.image.ref.name); its platform is read from the image's
// config. The new index is written as a blob and tagged TAG in index.json,
// replacing an earlier TAG. umoci, which builds the images, has no command
// for this.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

const (
	refAnnotation = "org.opencontainers.image.ref.name"
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType,omitempty"`
	Manifests     []descriptor `json:"manifests"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "ociindex:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("ociindex", flag.ContinueOnError)
	layout := fs.String("layout", "", "the OCI image layout `DIR`")
	tag := fs.String("tag", "", "the `TAG` for the new index")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *layout == "" || *tag == "" || fs.NArg() == 0 {
		return errors.New("usage: ociindex -layout DIR -tag TAG REF [REF ...]")
	}
	var top index
	if err := readJSON(filepath.Join(*layout, "index.json"), &top); err != nil {
		return err
	}
	multi := index{SchemaVersion: 2, MediaType: mediaIndex}
	for _, ref := range fs.Args() {
		d, err := imageFor(*layout, top, ref)
		if err != nil {
			return err
		}
		multi.Manifests = append(multi.Manifests, d)
	}
	d, err := writeBlob(*layout, multi)
	if err != nil {
		return err
	}
	d.MediaType = mediaIndex
	d.Annotations = map[string]string{refAnnotation: *tag}
	kept := top.Manifests[:0]
	for _, m := range top.Manifests {
		if m.Annotations[refAnnotation] != *tag {
			kept = append(kept, m)
		}
	}
	top.Manifests = append(kept, d)
	return writeFile(filepath.Join(*layout, "index.json"), top)
}

// imageFor finds ref in the layout's index and returns its descriptor with
// the platform its config declares.
func imageFor(layout string, top index, ref string) (descriptor, error) {
	for _, m := range top.Manifests {
		if m.Annotations[refAnnotation] != ref {
			continue
		}
		if m.MediaType != mediaManifest {
			return descriptor{}, fmt.Errorf("%s is a %s, want an image manifest", ref, m.MediaType)
		}
		var manifest struct{ Config descriptor }
		if err := readJSON(blobPath(layout, m.Digest), &manifest); err != nil {
			return descriptor{}, err
		}
		var p platform
		if err := readJSON(blobPath(layout, manifest.Config.Digest), &p); err != nil {
			return descriptor{}, err
		}
		if p.Architecture == "" || p.OS == "" {
			return descriptor{}, fmt.Errorf("%s: the config names no architecture or OS", ref)
		}
		return descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: m.Size, Platform: &p}, nil
	}
	return descriptor{}, fmt.Errorf("no image tagged %q in %s", ref, layout)
}

func blobPath(layout, digest string) string {
	alg, hex, _ := strings.Cut(digest, ":")
	return filepath.Join(layout, "blobs", alg, hex)
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// writeBlob stores v as a content-addressed blob and returns its descriptor.
func writeBlob(layout string, v any) (descriptor, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return descriptor{}, err
	}
	sum := sha256.Sum256(data)
	d := descriptor{Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(data))}
	return d, os.WriteFile(blobPath(layout, d.Digest), data, 0o644)
}

// writeFile replaces path atomically: a reader never sees half an index.
func writeFile(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
