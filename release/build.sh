#!/usr/bin/env bash
# Builds the release artifacts: static linux/amd64 and linux/arm64 binaries,
# SHA256SUMS over them, and an SPDX 2.3 SBOM of the Go modules they contain.
#
#   bash release/build.sh [VERSION]
#
# VERSION defaults to `git describe --tags --always --dirty`. The output goes
# to dist/ (DIST=DIR to change it); ARCHS="amd64" builds a subset (the tests
# use it). The build date is now, or SOURCE_DATE_EPOCH when set: with it and
# -trimpath, two builds of one commit give identical bytes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

version=${1:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	commit="$commit+dirty"
fi
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
	built=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
else
	built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
fi
dist=${DIST:-dist}
mkdir -p "$dist"
dist=$(cd "$dist" && pwd)
archs=${ARCHS:-amd64 arm64}

# The same flags as Dockerfile.example's build line, plus the stamp:
# CGO_ENABLED=0 for a static binary with no dynamic loader (scratch images,
# any libc), -trimpath for no build paths, -s -w for no symbols or DWARF,
# nethttpomithttp2 because AWS's endpoints answer over HTTP/1.1.
ldflags="-s -w -X main.version=$version -X main.commit=$commit -X main.buildDate=$built"
bins=()
for arch in $archs; do
	out="paramexec-linux-$arch"
	echo "build $dist/$out ($version)" >&2
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch \
		go build -trimpath -tags nethttpomithttp2 -ldflags "$ldflags" -o "$dist/$out" .
	bins+=("$out")
done

(cd "$dist" && sha256sum "${bins[@]}" >SHA256SUMS)
go run ./release/sbom -version "$version" -created "$built" "${bins[@]/#/$dist/}" >"$dist/sbom.spdx.json"
echo "wrote ${bins[*]} SHA256SUMS sbom.spdx.json to $dist" >&2
