#!/usr/bin/env bash
# Builds haswarm/haswarmd:latest (or $1) from this machine's compiled
# binaries: haswarmd, haswarmctl (the stack's health check) and the shared
# libraries they link, on an otherwise empty root. No registry, no base image.
#
#   helm-like-manifests/build-image.sh [IMAGE] [PROFILE]
#
# PROFILE is a cargo profile folder under target/ (default: debug, what
# `cargo build` and the tests produce; release for `cargo build --release`).
# Run on a manager of the Swarm that will run it (or `docker save` it there).
set -euo pipefail

image=${1:-haswarm/haswarmd:latest}
profile=${2:-debug}
repo=$(cd "$(dirname "$0")/.." && pwd)
bin="$repo/target/$profile"
for b in haswarmd haswarmctl; do
  if [ ! -x "$bin/$b" ]; then
    echo "build-image: $bin/$b is missing: run cargo build${profile:+ (profile $profile)} first" >&2
    exit 1
  fi
done

root=$(mktemp -d /tmp/hsw-haswarmd-root.XXXXXX)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/tmp" "$root/run/haswarm" "$root/var/lib/haswarm" "$root/etc"
chmod 1777 "$root/tmp"
cp "$bin/haswarmd" "$bin/haswarmctl" "$root/usr/local/bin/"
# The dynamic loader and every library the two binaries need, at the same paths.
for lib in $(ldd "$bin/haswarmd" "$bin/haswarmctl" | awk '/=> \// { print $3 } /^\t\// { print $1 }' | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
echo 'root:x:0:0:root:/root:/nonexistent' >"$root/etc/passwd"
echo 'hosts: files dns' >"$root/etc/nsswitch.conf"
tar -C "$root" -c . | docker import \
  -c 'ENV PATH=/usr/local/bin' \
  -c 'CMD ["haswarmd", "--data-dir", "/var/lib/haswarm", "--socket", "/run/haswarm/haswarm.sock"]' \
  -m "haswarmd from target/$profile" - "$image" >/dev/null
echo "build-image: built $image from target/$profile"
