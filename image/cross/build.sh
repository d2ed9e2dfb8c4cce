#!/usr/bin/env bash
# image/cross/build.sh — a local container image for `cross build --target
# aarch64-unknown-linux-gnu`, equivalent to cross's own aarch64 image, made from Debian 12
# "bookworm" packages with no container registry at all: mmdebstrap builds the root file
# system, `podman import` turns it into an image.
#
#   sudo image/cross/build.sh [--fresh] [--engine podman]
#
# Prints the image's name on its last line, e.g. localhost/camcast-cross-aarch64:bookworm-1a2b3c4d5e6f;
# point cross at it with
#   CROSS_CONTAINER_ENGINE=podman CROSS_TARGET_AARCH64_UNKNOWN_LINUX_GNU_IMAGE=<that name> \
#     cross build --release --target aarch64-unknown-linux-gnu
#
# The image is kept in the engine's image store, tagged with a hash of this recipe: a second
# run finds it and only prints its name (--fresh rebuilds it). Older tags of the same image are
# removed when a new one is made.
#
# What is in it, and why (cross's aarch64 image has the same, on Ubuntu):
#   gcc/g++-aarch64-linux-gnu, libc6-dev-arm64-cross   the cross compilers and the target's glibc
#   gcc, libc6-dev                                     build scripts and proc macros run on the host side
#   cmake, make, nasm                                  libjpeg-turbo, built from source by the turbojpeg crate
#   libclang-dev                                       bindgen, in the v4l crate's build script
#   pkg-config                                         -sys crates probing for libraries
#   qemu-user-static                                   `cross test` / `cross run` for aarch64
#   ca-certificates                                    anything fetching over TLS inside the container
# and cross's environment for the target (linker, CC/CXX, bindgen's sysroot, the qemu runner).
# The Rust toolchain is not in the image: cross mounts the host's (rust-toolchain.toml's).
#
# Needs root (mmdebstrap's root mode) and: mmdebstrap, podman (or docker with --engine docker).
set -euo pipefail
umask 022

SUITE=bookworm
MIRROR=http://deb.debian.org/debian
SECURITY=http://deb.debian.org/debian-security
NAME=localhost/camcast-cross-aarch64
PACKAGES=(
  gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross
  gcc libc6-dev
  cmake make nasm
  libclang-dev
  pkg-config
  qemu-user-static
  ca-certificates
)
# As in cross's Dockerfile.aarch64-unknown-linux-gnu (its runner is qemu-user too). PATH: cross
# appends the mounted toolchain's /rust/bin itself.
ENVIRONMENT=(
  'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  'CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc'
  'CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static'
  'CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc'
  'CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++'
  'AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar'
  'BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu=--sysroot=/usr/aarch64-linux-gnu'
  'QEMU_LD_PREFIX=/usr/aarch64-linux-gnu'
  'PKG_CONFIG_PATH=/usr/lib/aarch64-linux-gnu/pkgconfig/'
)
# No manuals, translations or docs: a few hundred MB less to store and import.
DPKG_OPTS=(
  'path-exclude=/usr/share/man/*'
  'path-exclude=/usr/share/info/*'
  'path-exclude=/usr/share/locale/*'
  'path-exclude=/usr/share/doc/*'
  'path-include=/usr/share/doc/*/copyright'
)

ENGINE=podman
FRESH=0
log() { printf '[cross-image %4ss] %s\n' "$SECONDS" "$*" >&2; }
die() { printf '[cross-image] ERROR: %s\n' "$*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case $1 in
    --fresh) FRESH=1 ;;
    --engine) ENGINE=${2:?}; shift ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap's root mode)"
for tool in mmdebstrap "$ENGINE"; do
  command -v "$tool" >/dev/null || die "$tool missing (apt-get install mmdebstrap podman runc)"
done

# The tag: a hash of everything that goes into the image.
key=$( {
  echo "suite=$SUITE mirror=$MIRROR"
  printf '%s\n' "${PACKAGES[@]}" "${ENVIRONMENT[@]}" "${DPKG_OPTS[@]}"
} | sha256sum | cut -c1-12)
image=$NAME:$SUITE-$key

if [ "$FRESH" = 0 ] && "$ENGINE" image exists "$image" 2>/dev/null; then
  log "cached: $image (built $("$ENGINE" image inspect --format '{{.Created}}' "$image" | cut -d. -f1); --fresh rebuilds it)"
  echo "$image"
  exit 0
fi

log "building $image with mmdebstrap (Debian $SUITE, amd64)"
include=$(printf '%s,' "${PACKAGES[@]}")
dpkgopts=()
for o in "${DPKG_OPTS[@]}"; do dpkgopts+=(--dpkgopt="$o"); done
changes=()
for e in "${ENVIRONMENT[@]}"; do changes+=(--change "ENV $e"); done
changes+=(--change 'CMD ["/bin/bash"]')
# Piped: the root file system never lands on disk as a tar.
# Hooks are run by mmdebstrap with the root directory as $1: single quotes on purpose.
# shellcheck disable=SC2016
mmdebstrap --quiet --mode=root --variant=apt --architectures=amd64 \
  --include="${include%,}" "${dpkgopts[@]}" \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  --format=tar "$SUITE" - \
  "deb $MIRROR $SUITE main" \
  "deb $MIRROR $SUITE-updates main" \
  "deb $SECURITY $SUITE-security main" |
  "$ENGINE" import --quiet "${changes[@]}" --message "camcast cross image, recipe $key" - "$image" >/dev/null
"$ENGINE" image exists "$image" || die "$ENGINE import did not produce $image"
log "imported $image: $("$ENGINE" image inspect --format '{{.Size}}' "$image") bytes"

# Older recipes' images only take space.
for old in $("$ENGINE" images --format '{{.Repository}}:{{.Tag}}' | grep "^$NAME:" || true); do
  [ "$old" = "$image" ] && continue
  log "removing the superseded $old"
  "$ENGINE" rmi "$old" >/dev/null || true
done
echo "$image"
