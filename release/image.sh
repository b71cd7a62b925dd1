#!/usr/bin/env bash
# Writes the release image as an OCI image layout, dist/oci, without a
# Docker engine: one image per architecture from build.sh's binaries, and a
# multi-arch image index over them.
#
#   bash release/image.sh [VERSION]
#
# It uses the binaries release/build.sh wrote to dist/, and runs build.sh
# first when they are missing.
#
# The image is Dockerfile.example's final stage without the application:
# /paramexec, a CA bundle at /etc/ssl/certs/ca-certificates.crt (the AWS SDK
# speaks TLS and scratch has none), USER 65532:65532, ENV
# PARAMEXEC_INIT=true and ENTRYPOINT ["/paramexec"]. Use it as a stage to
# COPY --from, or as a base to add an application to.
#
# In the layout, VERSION names the index and VERSION-ARCH each image;
# publish with: skopeo copy --all oci:dist/oci:VERSION docker://ghcr.io/paramexec/paramexec:VERSION
#
# Why umoci: it writes OCI layouts directly, needs no daemon and is packaged
# by Debian and Ubuntu. The layer is a tar made here with fixed owners
# (root), modes and times, so the result does not depend on who runs this.
# DIST, ARCHS and CA_BUNDLE (default: the host's bundle) override the inputs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

version=${1:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
dist=${DIST:-dist}
archs=${ARCHS:-amd64 arm64}
ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
layout="$dist/oci"

for arch in $archs; do
	if [ ! -f "$dist/paramexec-linux-$arch" ]; then
		echo "image.sh: no $dist/paramexec-linux-$arch; running release/build.sh $version" >&2
		DIST=$dist ARCHS=$archs bash release/build.sh "$version"
		break
	fi
done
rm -rf "$layout"
umoci init --layout "$layout"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
refs=()
for arch in $archs; do
	tree="$work/$arch"
	mkdir -p "$tree/etc/ssl/certs"
	install -m 0755 "$dist/paramexec-linux-$arch" "$tree/paramexec"
	install -m 0644 "$ca" "$tree/etc/ssl/certs/ca-certificates.crt"
	tar -C "$tree" --sort=name --owner=0 --group=0 --numeric-owner \
		--mtime="@$epoch" --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
		-cf "$work/$arch.tar" etc paramexec

	ref="$version-$arch"
	umoci new --image "$layout:$ref"
	umoci raw add-layer --image "$layout:$ref" --history.created "$created" \
		--history.created_by "release/image.sh: /paramexec and the CA bundle" "$work/$arch.tar"
	umoci config --image "$layout:$ref" --architecture "$arch" --os linux --created "$created" \
		--config.user 65532:65532 --config.env PARAMEXEC_INIT=true --config.entrypoint /paramexec \
		--history.created "$created" --history.created_by "release/image.sh: config"
	refs+=("$ref")
done
# umoci tags single images; the index that lets a pull pick the
# architecture is written by a small Go program.
go run ./release/ociindex -layout "$layout" -tag "$version" "${refs[@]}"
echo "wrote $layout: $version (${refs[*]})" >&2
