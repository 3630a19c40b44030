#!/bin/sh
# Builds the mcpwatch container image from local files only:
#   packaging/image/build.sh BINARY TAG
# BINARY is a built `mcpwatch` (`cargo xtask image` passes the release build).
# The image is FROM scratch: the binary, the dynamic loader and the libraries
# `ldd` says it links (the glibc build is used as it is rather than a second,
# musl, toolchain), /bin/sh, the shipped manifests and packaging/config.toml.
set -eu
bin=$1
tag=$2
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
ctx=$(mktemp -d "${TMPDIR:-/tmp}/mcpwatch-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
rootfs=$ctx/rootfs
mkdir -p "$rootfs/usr/bin" "$rootfs/etc/mcpwatch/manifests" "$rootfs/var/lib/mcpwatch" \
    "$rootfs/var/log/mcpwatch" "$rootfs/run/mcpwatch" "$rootfs/tmp" "$rootfs/sys" "$rootfs/proc"
cp "$bin" "$rootfs/usr/bin/mcpwatch"
chmod 0755 "$rootfs/usr/bin/mcpwatch"
# Without debug information (a debug build is ten times the size); the symbols
# stay, for readable panics. Skipped where binutils is not installed.
if command -v strip >/dev/null; then
    strip --strip-debug "$rootfs/usr/bin/mcpwatch"
fi
# /bin/sh: the kill layer's start-up self-test (kernel/kill.rs) signals a
# `/bin/sh -c 'read a; read b'` child; without it the layer reports itself not
# enforced. dash, the smallest shell, linking nothing but libc.
mkdir -p "$rootfs/bin"
cp -L /bin/dash "$rootfs/bin/sh"
# Every absolute path ldd prints for either (libraries and the loader), copied
# to the same path. A static binary prints none and needs none.
libs=$( (ldd "$bin"; ldd /bin/dash) 2>/dev/null | grep -o '/[^ ]*' | sort -u || true)
for lib in $libs; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
done
cp "$repo"/manifests/*.json "$rootfs/etc/mcpwatch/manifests/"
cp "$repo/packaging/config.toml" "$rootfs/etc/mcpwatch/config.toml"
# uid 0's name, for the few libc calls that look it up.
printf 'root:x:0:0:root:/:/usr/bin/mcpwatch\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"
version=$("$bin" --version | cut -d' ' -f2)
podman build --quiet --format oci --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.title=mcpwatch" -f "$here/Containerfile" -t "$tag" "$ctx"
