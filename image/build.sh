#!/usr/bin/env bash
# image/build.sh — build the flashable camcast SD-card image for the Raspberry Pi 3 and 4
# (arm64), from Debian 12 "bookworm" packages only, without loop mounts.
#
#   sudo image/build.sh [--deb FILE] [--out DIR] [--version V] [--fresh] [--no-xz]
#   sudo image/build.sh --base-only      build (or find) the cached base root file system, print its path
#
#   --deb FILE     camcast's arm64 Debian package, with the static aarch64 camcast [default:
#                  ${CARGO_TARGET_DIR:-target}/debian/camcast_<version>-1_arm64.deb, made with
#                  `cargo deb --target aarch64-unknown-linux-gnu` when missing]
#   --out DIR      output directory [default: image/out]
#   --version V    version in the file name [default: Cargo.toml's]
#   --fresh        rebuild the base root file system even if a cached one matches
#   --no-xz        leave the raw .img only (no .img.xz); for quick local iterations
#
# Output: DIR/camcast-<version>-rpi-arm64.img.xz and .img.xz.sha256 (and the raw .img).
#
# How (two stages):
#   1. base root file system (cached): mmdebstrap builds bookworm arm64 (qemu-user through
#      binfmt_misc runs the maintainer scripts) with systemd, raspi-firmware, linux-image-arm64,
#      openssh-server, avahi-daemon, wpasupplicant + Wi-Fi firmware and little else, plus
#      image/rootfs/ (network, first-boot setup, initramfs module list). It is
#      kept as a tar in $CAMCAST_IMAGE_CACHE (default /var/tmp/camcast-image), keyed by a hash
#      of everything that goes into it, for 7 days. Downloaded .debs are kept there as well.
#   2. the image: camcast's Debian package, installed with dpkg in the root file system (its
#      postinst creates the user and enables the service, as on Raspberry Pi OS), then
#      a FAT32 boot partition (mkfs.vfat + mcopy: what raspi-firmware put in /boot/firmware:
#      start4.elf, fixup4.dat, bootcode.bin, bcm27xx/bcm2711 dtbs, vmlinuz, initrd.img,
#      config.txt, cmdline.txt; plus first-boot examples) and an ext4 root partition
#      (mkfs.ext4 -d), put together behind an MBR made by sfdisk, compressed with xz.
#
# Needs root (mmdebstrap's root mode, file ownership in the image). Host packages:
# mmdebstrap qemu-user-static arch-test dosfstools mtools fdisk e2fsprogs xz-utils.
set -euo pipefail
umask 022

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

# Bump when the base root file system's recipe changes in a way the hash below cannot see.
RECIPE=1
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
SECURITY=http://deb.debian.org/debian-security
# Everything beyond the "apt" variant (Essential: yes packages + apt). Each is needed:
PACKAGES=(
  systemd systemd-sysv udev dbus        # init, device manager, avahi's bus
  systemd-resolved systemd-timesyncd    # DNS for apt, clock (the Pi has no RTC)
  raspi-firmware linux-image-arm64      # boot firmware + dtbs, Debian's arm64 kernel
  initramfs-tools zstd                  # the kernel's initramfs (zstd-compressed)
  openssh-server                        # install.sh updates, admin
  avahi-daemon                          # mDNS: <hostname>.local (camcast advertises _camcast._tcp itself)
  wpasupplicant firmware-brcm80211 wireless-regdb  # the Pi's on-board Wi-Fi
  dosfstools e2fsprogs fdisk            # fsck of both partitions, first-boot growing
  iproute2 kmod nano                    # ip, modprobe, an editor
)
# No manuals, translations or docs (copyright files stay): about 40 MB less. Kept in the
# image (/etc/dpkg/dpkg.cfg.d/99mmdebstrap), so later apt installs stay small too.
DPKG_OPTS=(
  'path-exclude=/usr/share/man/*'
  'path-exclude=/usr/share/info/*'
  'path-exclude=/usr/share/locale/*'
  'path-include=/usr/share/locale/locale.alias'
  'path-exclude=/usr/share/doc/*'
  'path-include=/usr/share/doc/*/copyright'
  'path-exclude=/usr/share/lintian/*'
)
BOOT_MIB=256       # FAT32 boot partition (firmware ~20 MB, kernel + initrd ~45 MB each version)
BOOT_START_MIB=4   # first partition starts at 4 MiB (erase-block aligned)

OUT=$here/out
DEB=
BASE_ONLY=0
VERSION=
FRESH=0
XZ=1
CACHE=${CAMCAST_IMAGE_CACHE:-/var/tmp/camcast-image}

log() { printf '[image %4ss] %s\n' "$SECONDS" "$*"; }
die() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case $1 in
    --deb) DEB=${2:?}; shift ;;
    --base-only) BASE_ONLY=1 ;;
    --out) OUT=${2:?}; shift ;;
    --version) VERSION=${2:?}; shift ;;
    --fresh) FRESH=1 ;;
    --no-xz) XZ=0 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap root mode, file ownership)"
for tool in mmdebstrap mkfs.ext4 mkfs.vfat mcopy sfdisk xz dpkg-deb arch-test; do
  command -v "$tool" >/dev/null || die "$tool missing (apt-get install mmdebstrap qemu-user-static arch-test dosfstools mtools fdisk e2fsprogs xz-utils)"
done
[ -n "$VERSION" ] || VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | sed -n 1p)
[ -n "$VERSION" ] || die "cannot read the version from Cargo.toml (use --version)"
NAME=camcast-$VERSION-rpi-arm64

# ---- camcast's package ---------------------------------------------------------------------------
check_deb() {
  if [ -z "$DEB" ]; then
    DEB=${CARGO_TARGET_DIR:-$repo/target}/debian/camcast_$VERSION-1_arm64.deb
    if [ ! -f "$DEB" ]; then
      log "making $DEB (cargo deb: the cargo route's aarch64 build)"
      (cd "$repo" && cargo deb --target aarch64-unknown-linux-gnu --output "$DEB")
    fi
  fi
  [ -f "$DEB" ] || die "no package at $DEB"
  [ "$(dpkg-deb -f "$DEB" Package)/$(dpkg-deb -f "$DEB" Architecture)" = camcast/arm64 ] || die "$DEB is not camcast for arm64"
  local bin
  bin=$(mktemp)
  dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./usr/bin/camcast >"$bin"
  file -b "$bin" | grep -q 'ARM aarch64' || die "$DEB: usr/bin/camcast is not an aarch64 executable: $(file -b "$bin")"
  if readelf -lW "$bin" | grep INTERP >/dev/null; then die "$DEB: usr/bin/camcast is dynamically linked; the image wants the static build"; fi
  # camcast.service is Type=notify: a camcast that never sends READY=1 is killed after
  # TimeoutStartSec and restarted, over and over. (Link-time optimisation drops src/systemd.rs
  # from the binary unless main.rs calls it, so its messages show whether it is wired in.)
  grep -q 'WATCHDOG=1' "$bin" || die "$DEB: camcast has no sd_notify support (src/systemd.rs not called from main.rs); camcast.service (Type=notify) would never start"
  rm -f "$bin"
  log "package $DEB: camcast $(dpkg-deb -f "$DEB" Version) arm64"
}
[ "$BASE_ONLY" = 1 ] || check_deb

# ---- foreign-architecture execution (binfmt_misc + qemu-user) ---------------------------------
if ! arch-test arm64 >/dev/null 2>&1; then
  log "registering qemu-aarch64 with binfmt_misc"
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  conf=/usr/lib/binfmt.d/qemu-aarch64.conf
  [ -f "$conf" ] || die "$conf missing (apt-get install qemu-user-static)"
  grep -v '^#' "$conf" >/proc/sys/fs/binfmt_misc/register
  arch-test arm64 >/dev/null || die "arm64 binaries still do not run (binfmt_misc)"
fi

mkdir -p "$CACHE/debs" "$OUT"
work=$(mktemp -d "$CACHE/work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# ---- stage 1: the base root file system (cached) ----------------------------------------------
key=$( {
  echo "recipe=$RECIPE suite=$SUITE mirror=$MIRROR ${PACKAGES[*]} ${DPKG_OPTS[*]}"
  sed -n '/^# ---- stage 1/,/^# ---- stage 2/p' "$0"
  (cd "$here/rootfs" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  (cd "$here/rootfs" && find . -printf '%m %p\n' | LC_ALL=C sort)
} | sha256sum | cut -c1-16)
base=$CACHE/base-$key.tar
if [ "$FRESH" = 1 ] || [ ! -f "$base" ] || [ -n "$(find "$base" -mtime +7)" ]; then
  t0=$SECONDS
  log "stage 1: building the base root file system (cache key $key)"
  # Debian's packages with their own dependencies, no Recommends (mmdebstrap's default).
  # The overlay goes in before the kernel so its initramfs settings apply to the first build.
  # update-initramfs is diverted to a no-op meanwhile: installing the kernel and then the
  # packages that trigger it would build the initramfs twice under emulation (minutes each);
  # customize-base.sh restores it and builds it once.
  include=$(printf '%s,' "${PACKAGES[@]}")
  dpkgopts=()
  for o in "${DPKG_OPTS[@]}"; do dpkgopts+=(--dpkgopt="$o"); done
  overlay=$here/rootfs
  export CAMCAST_OVERLAY=$overlay
  case $CACHE in *[[:space:]]*) die "the cache path must not contain spaces: $CACHE" ;; esac
  # Hooks are run by mmdebstrap with the root directory as $1: single quotes on purpose.
  # shellcheck disable=SC2016
  mmdebstrap --mode=root --variant=apt --architectures=arm64 \
    --components=main,non-free-firmware \
    --include="${include%,}" \
    "${dpkgopts[@]}" \
    --skip=essential/unlink \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="sync-in $CACHE/debs /var/cache/apt/archives/" \
    --essential-hook='tar -C "$CAMCAST_OVERLAY" --owner=0 --group=0 -cf - . | tar -C "$1" -xpf -' \
    --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs' \
    --essential-hook='printf "#!/bin/sh\necho \"update-initramfs: deferred to image/customize-base.sh\"\n" >"$1/usr/sbin/update-initramfs"; chmod 755 "$1/usr/sbin/update-initramfs"' \
    --customize-hook="sync-out /var/cache/apt/archives $CACHE/debs" \
    --customize-hook="\"$here/customize-base.sh\" \"\$1\"" \
    "$SUITE" "$work/base.tar" \
    "deb $MIRROR $SUITE main non-free-firmware" \
    "deb $MIRROR $SUITE-updates main non-free-firmware" \
    "deb $SECURITY $SUITE-security main non-free-firmware"
  rm -f "$CACHE"/base-*.tar
  mv "$work/base.tar" "$base"
  log "stage 1 done in $((SECONDS - t0)) s: $(du -h "$base" | cut -f1) base tar"
else
  log "stage 1: cached base root file system $base (delete it or pass --fresh to rebuild)"
fi

# ---- stage 2: camcast, partitions, image -------------------------------------------------------
if [ "$BASE_ONLY" = 1 ]; then
  echo "$base"
  exit 0
fi
t2=$SECONDS
root=$work/root
mkdir "$root"
tar -C "$root" --numeric-owner -xpf "$base"
log "stage 2: camcast's package into the root file system (dpkg under qemu-user)"
cp "$DEB" "$root/tmp/camcast.deb"
chroot "$root" dpkg -i /tmp/camcast.deb
rm -f "$root/tmp/camcast.deb"
grep -q '^camcast:' "$root/etc/passwd" || die "the package's postinst created no camcast user"
[ -L "$root/etc/systemd/system/multi-user.target.wants/camcast.service" ] || die "the package did not enable camcast.service"
cat >"$root/etc/camcast-image" <<EOF
camcast $VERSION SD image for Raspberry Pi 3/4 (arm64), Debian $SUITE
built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(cd "$repo" && git describe --always --dirty 2>/dev/null || echo unknown)
EOF

# The boot partition's content is what raspi-firmware put into /boot/firmware; in the image
# that directory is the FAT partition's mount point, empty on the root file system.
fw=$work/firmware
mv "$root/boot/firmware" "$fw"
mkdir -m 0755 "$root/boot/firmware"
for f in start4.elf fixup4.dat bootcode.bin start.elf fixup.dat config.txt cmdline.txt; do
  [ -f "$fw/$f" ] || die "raspi-firmware left no $f in /boot/firmware"
done
grep -q '^arm_64bit=1' "$fw/config.txt" || die "config.txt lacks arm_64bit=1"
kernel=$(sed -n 's/^kernel=//p' "$fw/config.txt")
initrd=$(sed -n 's/^initramfs \([^ ]*\).*/\1/p' "$fw/config.txt")
if [ ! -f "$fw/$kernel" ] || [ ! -f "$fw/$initrd" ]; then die "config.txt names $kernel / $initrd, not on the boot partition"; fi
ls "$fw"/bcm2711-rpi-4-b.dtb "$fw"/bcm2837-rpi-3-b.dtb >/dev/null || die "Pi 3/4 device trees missing"
cp "$here/boot/README-camcast.txt" "$here/boot/wpa_supplicant.conf.example" "$fw/"
cp "$repo/deploy/camcast.toml" "$fw/camcast.toml.example"
cp "$root/etc/camcast-image" "$fw/camcast-image.txt"
log "boot partition: $(du -sh "$fw" | cut -f1) ($(find "$fw" -type f | wc -l) files); cmdline.txt: $(cat "$fw/cmdline.txt")"

# FAT32 boot partition, filled with mtools (no mount).
boot_img=$work/boot.vfat
mkfs.vfat -F 32 -n RASPIFIRM -C "$boot_img" $((BOOT_MIB * 1024)) >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -s -p -m -i "$boot_img" "$fw"/* ::/

# ext4 root partition, filled by mkfs.ext4 -d (no mount). Room to spare: 25 % + 128 MiB; the
# first boot grows it to the whole card anyway.
used_mib=$(du -s --block-size=1M "$root" | cut -f1)
root_mib=$((used_mib + used_mib / 4 + 128))
root_img=$work/root.ext4
truncate -s "${root_mib}M" "$root_img"
mkfs.ext4 -q -L RASPIROOT -d "$root" -E root_owner=0:0 "$root_img"
e2fsck -fn "$root_img" >"$work/e2fsck.log" 2>&1 || { cat "$work/e2fsck.log"; die "the new root file system does not check clean"; }

# MBR: 1 = FAT32 LBA (type c, bootable), 2 = Linux. The Pi's boot ROM reads the first FAT
# partition of an MBR disk.
img=$OUT/$NAME.img
rm -f "$img" "$img.xz" "$img.xz.sha256"
total_mib=$((BOOT_START_MIB + BOOT_MIB + root_mib))
truncate -s "${total_mib}M" "$img"
sfdisk -q "$img" <<EOF
label: dos
unit: sectors

start=$((BOOT_START_MIB * 2048)), size=$((BOOT_MIB * 2048)), type=c, bootable
start=$(((BOOT_START_MIB + BOOT_MIB) * 2048)), size=$((root_mib * 2048)), type=83
EOF
dd if="$boot_img" of="$img" bs=1M seek="$BOOT_START_MIB" conv=notrunc,sparse status=none
dd if="$root_img" of="$img" bs=1M seek=$((BOOT_START_MIB + BOOT_MIB)) conv=notrunc,sparse status=none
log "raw image $img: ${total_mib} MiB (root ${root_mib} MiB, ${used_mib} MiB used)"

if [ "$XZ" = 1 ]; then
  tx=$SECONDS
  xz -T2 -3 -f -k "$img"
  (cd "$OUT" && sha256sum "$NAME.img.xz" >"$NAME.img.xz.sha256")
  log "compressed in $((SECONDS - tx)) s: $img.xz $(du -h "$img.xz" | cut -f1) ($(stat -c %s "$img.xz") bytes)"
fi
log "stage 2 done in $((SECONDS - t2)) s; total $SECONDS s"
echo "image: $img${XZ:+$([ "$XZ" = 1 ] && echo ".xz")}"
