// Command sbom writes an SPDX 2.3 JSON document of the Go modules built into
// release binaries, read from their embedded build information.
//
// Usage: go run ./release/sbom -version V -created RFC3339 BINARY... >sbom.spdx.json
//
// Each binary is a package the document describes, with its SHA-256; each
// module it was built from (the Go standard library included, as the Go
// toolchain's version) is a package the binary CONTAINS, with its version
// and a purl, which is what vulnerability scanners match on. The module
// list is `go version -m BINARY`'s, read with debug/buildinfo.
package main

import (
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "sbom:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sbom", flag.ContinueOnError)
	version := fs.String("version", "", "the release `VERSION` (required)")
	created := fs.String("created", "", "the document's creation time, `RFC3339` (default now)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version == "" || fs.NArg() == 0 {
		return errors.New("usage: sbom -version V [-created T] BINARY [BINARY ...]")
	}
	when := time.Now().UTC()
	if *created != "" {
		t, err := time.Parse(time.RFC3339, *created)
		if err != nil {
			return fmt.Errorf("-created: %w", err)
		}
		when = t.UTC()
	}
	doc := newDocument(*version, when)
	for _, bin := range fs.Args() {
		if err := doc.addBinary(bin); err != nil {
			return err
		}
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

// document is the subset of SPDX 2.3 this tool writes.
type document struct {
	SPDXVersion       string         `json:"spdxVersion"`
	DataLicense       string         `json:"dataLicense"`
	SPDXID            string         `json:"SPDXID"`
	Name              string         `json:"name"`
	DocumentNamespace string         `json:"documentNamespace"`
	CreationInfo      creationInfo   `json:"creationInfo"`
	Packages          []pkg          `json:"packages"`
	Relationships     []relationship `json:"relationships"`

	version string
	ids     map[string]string // module path@version -> SPDXID, so binaries share them
}

type creationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

type pkg struct {
	Name             string        `json:"name"`
	SPDXID           string        `json:"SPDXID"`
	VersionInfo      string        `json:"versionInfo"`
	DownloadLocation string        `json:"downloadLocation"`
	FilesAnalyzed    bool          `json:"filesAnalyzed"`
	LicenseConcluded string        `json:"licenseConcluded"`
	LicenseDeclared  string        `json:"licenseDeclared"`
	CopyrightText    string        `json:"copyrightText"`
	PrimaryPurpose   string        `json:"primaryPackagePurpose,omitempty"`
	Checksums        []checksum    `json:"checksums,omitempty"`
	ExternalRefs     []externalRef `json:"externalRefs,omitempty"`
}

type checksum struct {
	Algorithm string `json:"algorithm"`
	Value     string `json:"checksumValue"`
}

type externalRef struct {
	Category string `json:"referenceCategory"`
	Type     string `json:"referenceType"`
	Locator  string `json:"referenceLocator"`
}

type relationship struct {
	Element string `json:"spdxElementId"`
	Type    string `json:"relationshipType"`
	Related string `json:"relatedSpdxElement"`
}

func newDocument(version string, created time.Time) *document {
	return &document{
		SPDXVersion: "SPDX-2.3",
		DataLicense: "CC0-1.0",
		SPDXID:      "SPDXRef-DOCUMENT",
		Name:        "paramexec-" + version,
		// Unique per release and build, as SPDX asks; nothing resolves it.
		DocumentNamespace: fmt.Sprintf("https://github.com/paramexec/paramexec/releases/%s/sbom-%d", version, created.Unix()),
		CreationInfo: creationInfo{
			Created:  created.Format(time.RFC3339),
			Creators: []string{"Organization: paramexec", "Tool: paramexec-release-sbom"},
		},
		version: version,
		ids:     map[string]string{},
	}
}

// addBinary adds bin as an application package and the modules it holds.
func (d *document) addBinary(bin string) error {
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		return fmt.Errorf("%s: read build info: %w", bin, err)
	}
	sum, err := fileSHA256(bin)
	if err != nil {
		return err
	}
	name := filepath.Base(bin)
	id := "SPDXRef-File-" + spdxSafe(name)
	var arch string
	for _, s := range info.Settings {
		if s.Key == "GOARCH" {
			arch = s.Value
		}
	}
	d.Packages = append(d.Packages, pkg{
		Name: name, SPDXID: id, VersionInfo: d.version,
		DownloadLocation: "https://github.com/paramexec/paramexec/releases/download/" + d.version + "/" + name,
		LicenseConcluded: "NOASSERTION", LicenseDeclared: "NOASSERTION", CopyrightText: "NOASSERTION",
		PrimaryPurpose: "APPLICATION",
		Checksums:      []checksum{{"SHA256", sum}},
		ExternalRefs:   []externalRef{purl(info.Main.Path, d.version, "?os=linux&arch="+arch)},
	})
	d.Relationships = append(d.Relationships, relationship{"SPDXRef-DOCUMENT", "DESCRIBES", id})
	d.contains(id, "stdlib", strings.TrimPrefix(info.GoVersion, "go"))
	for _, m := range info.Deps {
		if m.Replace != nil {
			m = m.Replace
		}
		d.contains(id, m.Path, m.Version)
	}
	return nil
}

// contains records that the binary package id holds module path@version,
// adding the module's package the first time any binary names it.
//
// The module carries no checksum: go.sum's h1: hash is of a file tree,
// which no SPDX checksum algorithm describes.
func (d *document) contains(id, path, version string) {
	key := path + "@" + version
	mid, ok := d.ids[key]
	if !ok {
		mid = fmt.Sprintf("SPDXRef-Package-go-module-%d-%s", len(d.ids), spdxSafe(path))
		d.ids[key] = mid
		p := pkg{
			Name: path, SPDXID: mid, VersionInfo: version,
			DownloadLocation: "NOASSERTION",
			LicenseConcluded: "NOASSERTION", LicenseDeclared: "NOASSERTION", CopyrightText: "NOASSERTION",
			PrimaryPurpose: "LIBRARY",
			ExternalRefs:   []externalRef{purl(path, version, "")},
		}
		if path != "stdlib" {
			p.DownloadLocation = "https://proxy.golang.org/" + path + "/@v/" + version + ".zip"
		}
		d.Packages = append(d.Packages, p)
	}
	d.Relationships = append(d.Relationships, relationship{id, "CONTAINS", mid})
}

func purl(path, version, qualifiers string) externalRef {
	loc := "pkg:golang/" + path
	if version != "" {
		loc += "@" + version
	}
	return externalRef{"PACKAGE-MANAGER", "purl", loc + qualifiers}
}

// spdxSafe maps s onto the characters an SPDXID may hold: letters, digits, "." and "-".
func spdxSafe(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-':
			return r
		}
		return '-'
	}, s)
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("checksum: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("checksum %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
