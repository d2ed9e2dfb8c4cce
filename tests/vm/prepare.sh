#!/usr/bin/env bash
# prepare.sh — fetch and cache everything tests/vm/run-in-vm.sh needs to boot a
# throw-away Debian-kernel VM that has virtual V4L2 cameras (vivid + v4l2loopback).
#
# What it does (each step is skipped when its result is already cached):
#   1. apt-get install the host tools: qemu-system-x86, cpio, kmod, and the
#      linux-headers + v4l2loopback-dkms needed to build v4l2loopback.ko for the
#      guest kernel (the host kernel is irrelevant: it is never touched).
#   2. apt-get download the Debian kernel image package that the
#      linux-image-amd64 metapackage depends on and busybox-static; extract
#      them with dpkg -x (nothing is installed into the host's /boot or
#      /lib/modules by this step).
#   3. Copy vmlinuz, and the wanted modules plus all their dependencies (as
#      resolved by depmod/modprobe --show-depends, not hand-listed) into a
#      trimmed module tree, run depmod on it, and pack it together with busybox
#      into base.cpio (the part of the initramfs that never changes).
#
# Cache layout ($CAMCAST_VM_CACHE, default /var/tmp/camcast-vm):
#   debs/                    downloaded .deb files
#   current                  name of the kernel release in use (e.g. 6.1.0-56-amd64)
#   <kver>/vmlinuz           guest kernel
#   <kver>/root/             trimmed guest root: bin/busybox, lib/modules/<kver>, etc/
#   <kver>/base.cpio         that root packed as newc cpio (uncompressed: TCG is
#                            slow at decompressing, and the archive is small)
#   <kver>/.complete         stamp; its content must equal $STAMP below
#
# Environment:
#   CAMCAST_VM_CACHE   cache directory (default /var/tmp/camcast-vm)
#   CAMCAST_VM_KVER    pin a kernel ABI (e.g. 6.1.0-56-amd64) instead of the one
#                      linux-image-amd64 currently depends on
#   CAMCAST_VM_FORCE=1 rebuild the per-kernel cache even if it looks complete
#
# Needs root (apt-get, dkms). Works on a fresh Debian 12 (bookworm) machine.
set -euo pipefail

CACHE=${CAMCAST_VM_CACHE:-/var/tmp/camcast-vm}
# Bump RECIPE when the content of the cached tree changes meaning, so old caches
# are rebuilt instead of silently reused.
RECIPE=3
# Modules the guest needs. Dependencies are resolved automatically.
#   vivid         virtual camera (+ videodev, videobuf2-*, v4l2-tpg, mc, ...)
#   v4l2loopback  out-of-tree loopback camera, built with dkms for the guest kernel
#   virtio_pci/virtio_net  networking for --hostfwd
#   virtio_rng    fast entropy so getrandom() never stalls under TCG
WANTED_MODULES=(vivid videodev v4l2loopback virtio_pci virtio_net virtio_rng)
STAMP="recipe=$RECIPE modules=${WANTED_MODULES[*]}"

log() { printf '[prepare] %s\n' "$*"; }
die() { printf '[prepare] ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get, dkms)"
[[ -r /etc/debian_version ]] || die "this script expects a Debian 12 host"

export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
apt_update_once() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        apt-get update -qq
        APT_UPDATED=1
    fi
}

# Kernel ABI name, e.g. 6.1.0-56-amd64: what linux-image-amd64 depends on.
resolve_kver() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { sub(/^linux-image-/, "", $2); print $2; exit }'
}

if [[ -n ${CAMCAST_VM_KVER:-} ]]; then
    KVER=$CAMCAST_VM_KVER
else
    KVER=$(resolve_kver || true)
    if [[ -z $KVER ]]; then
        # Fresh machine: package lists not downloaded yet.
        apt_update_once
        KVER=$(resolve_kver || true)
    fi
    [[ -n $KVER ]] || die "cannot find the kernel that linux-image-amd64 depends on"
fi
KDIR=$CACHE/$KVER
log "guest kernel: $KVER   cache: $CACHE"

# Host packages. busybox-static is deliberately NOT installed (it Conflicts with
# the dynamic busybox package some hosts have); its binary is taken from the
# .deb instead. gcc + libc6-dev are only for building tests/vm/selftest.c.
# qemu-utils: the machine image ships a backported qemu-utils (qemu-img 10.x)
# that Breaks bookworm's qemu-system-common 7.2, so apt removes it when
# installing qemu-system-x86; asking for bookworm's qemu-utils keeps qemu-img.
HOST_PKGS=(qemu-system-x86 qemu-utils cpio kmod dkms "linux-headers-$KVER" v4l2loopback-dkms gcc libc6-dev)

missing_pkgs() {
    local p st
    for p in "${HOST_PKGS[@]}"; do
        st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [[ $st == installed ]] || printf '%s\n' "$p"
    done
}

tree_complete() {
    [[ ${CAMCAST_VM_FORCE:-0} != 1 && -f $KDIR/.complete && $(cat "$KDIR/.complete") == "$STAMP" ]]
}

# ---- fast path: everything already there --------------------------------
if tree_complete && [[ -z $(missing_pkgs) ]]; then
    printf '%s\n' "$KVER" >"$CACHE/current"
    log "cache hit: $KDIR is complete, host packages present — nothing to do"
    exit 0
fi

# ---- 1. host packages ----------------------------------------------------
mapfile -t MISSING < <(missing_pkgs)
if [[ ${#MISSING[@]} -eq 0 ]]; then
    log "host packages already installed"
fi
# Two passes: installing qemu-system-x86 can remove the preinstalled backported
# qemu-utils (see above); the second pass then installs bookworm's qemu-utils.
for _ in 1 2; do
    [[ ${#MISSING[@]} -gt 0 ]] || break
    apt_update_once
    log "apt-get install ${MISSING[*]}"
    # --no-install-recommends keeps qemu from pulling GUI/audio stacks.
    apt-get install -y -q --no-install-recommends "${MISSING[@]}"
    mapfile -t MISSING < <(missing_pkgs)
done
[[ ${#MISSING[@]} -eq 0 ]] || die "still not installed: ${MISSING[*]}"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing after install"
if tree_complete; then
    printf '%s\n' "$KVER" >"$CACHE/current"
    log "cache hit: $KDIR is complete"
    exit 0
fi

# ---- 2. download and extract the kernel image and busybox ----------------
mkdir -p "$CACHE/debs"
download() { # download <package> <glob-for-the-.deb-in-debs/>
    local pkg=$1 glob=$2 f
    f=$(compgen -G "$CACHE/debs/$glob" | head -n1 || true)
    if [[ -z $f ]]; then
        log "apt-get download $pkg" >&2
        # APT::Sandbox::User=root: _apt cannot write into a root-owned cache dir.
        if ! (cd "$CACHE/debs" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null); then
            # Stale package lists can point at a version the mirror no longer has.
            apt_update_once
            (cd "$CACHE/debs" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null)
        fi
        f=$(compgen -G "$CACHE/debs/$glob" | head -n1 || true)
        [[ -n $f ]] || die "download of $pkg produced no $glob"
    else
        log "using cached $(basename "$f")" >&2
    fi
    printf '%s\n' "$f"
}

IMG_DEB=$(download "linux-image-$KVER" "linux-image-${KVER}_*.deb")
BB_DEB=$(download busybox-static "busybox-static_*.deb")

rm -rf "$KDIR.tmp"
mkdir -p "$KDIR.tmp"
EXTRACT=$KDIR.tmp/extract
log "extracting $(basename "$IMG_DEB")"
dpkg -x "$IMG_DEB" "$EXTRACT"
[[ -f $EXTRACT/boot/vmlinuz-$KVER ]] || die "no vmlinuz-$KVER in $IMG_DEB"
[[ -d $EXTRACT/lib/modules/$KVER ]] || die "no lib/modules/$KVER in $IMG_DEB"
dpkg -x "$BB_DEB" "$KDIR.tmp/bb"

# ---- 3. v4l2loopback.ko for the guest kernel -----------------------------
# Installing v4l2loopback-dkms with linux-headers-$KVER present makes dkms build
# it for $KVER. Look where Debian's dkms puts it; build explicitly if it did not
# (e.g. headers were installed after the dkms package, or an old failed build).
find_loopback() {
    # No `| head`: with pipefail, the writer's SIGPIPE (two matches) would fail the script.
    local found=()
    mapfile -t found < <(compgen -G "/lib/modules/$KVER/updates/dkms/v4l2loopback.ko*" || true
                         compgen -G "/var/lib/dkms/v4l2loopback/*/$KVER/*/module/v4l2loopback.ko*" || true)
    [[ ${#found[@]} -gt 0 ]] && printf '%s\n' "${found[0]}"
    return 0
}
LOOP_KO=$(find_loopback)
if [[ -z $LOOP_KO ]]; then
    LOOP_VER=$(dpkg-query -W -f='${Version}' v4l2loopback-dkms | sed 's/-[^-]*$//')
    log "dkms build v4l2loopback/$LOOP_VER for $KVER"
    dkms build -m v4l2loopback -v "$LOOP_VER" -k "$KVER" || {
        find /var/lib/dkms/v4l2loopback -name make.log -exec tail -n 40 {} \; >&2 || true
        die "dkms build of v4l2loopback failed"
    }
    LOOP_KO=$(find_loopback)
fi
[[ -n $LOOP_KO ]] || die "v4l2loopback.ko for $KVER not found after dkms build"
log "v4l2loopback module: $LOOP_KO"

# Put it into the extracted (full) tree first so depmod there resolves its deps.
EMOD=$EXTRACT/lib/modules/$KVER
mkdir -p "$EMOD/updates"
case $LOOP_KO in
    *.ko) cp "$LOOP_KO" "$EMOD/updates/v4l2loopback.ko" ;;
    *.ko.xz) xz -dc "$LOOP_KO" >"$EMOD/updates/v4l2loopback.ko" ;;
    *.ko.zst) zstd -dcq "$LOOP_KO" >"$EMOD/updates/v4l2loopback.ko" ;;
    *.ko.gz) gzip -dc "$LOOP_KO" >"$EMOD/updates/v4l2loopback.ko" ;;
    *) die "unexpected module file $LOOP_KO" ;;
esac

# ---- 4. trimmed module tree ----------------------------------------------
log "depmod on the full tree, resolving dependencies of: ${WANTED_MODULES[*]}"
depmod -b "$EXTRACT" "$KVER"
ROOT=$KDIR.tmp/root
RMOD=$ROOT/lib/modules/$KVER
mkdir -p "$RMOD"
declare -A SEEN=()
for m in "${WANTED_MODULES[@]}"; do
    out=$(modprobe -d "$EXTRACT" -S "$KVER" --show-depends "$m") || die "cannot resolve module $m"
    while read -r kind path _; do
        # "builtin X" lines need nothing; "insmod /path/x.ko [opts]" must be copied.
        [[ $kind == insmod ]] || continue
        rel=${path#"$EMOD/"}
        [[ -n ${SEEN[$rel]:-} ]] && continue
        SEEN[$rel]=1
        mkdir -p "$RMOD/$(dirname "$rel")"
        case $rel in
            # Debian 6.1 ships plain .ko; decompress in case a later ABI does not,
            # so busybox modprobe never needs compression support.
            *.ko.xz) xz -dc "$path" >"$RMOD/${rel%.xz}" ;;
            *.ko.zst) zstd -dcq "$path" >"$RMOD/${rel%.zst}" ;;
            *) cp "$path" "$RMOD/$rel" ;;
        esac
    done <<<"$out"
done
log "copied ${#SEEN[@]} modules"
for f in modules.builtin modules.builtin.modinfo modules.order; do
    [[ -f $EMOD/$f ]] && cp "$EMOD/$f" "$RMOD/"
done
depmod -b "$ROOT" "$KVER"
# Sanity: every wanted module must resolve inside the trimmed tree.
for m in "${WANTED_MODULES[@]}"; do
    modprobe -d "$ROOT" -S "$KVER" --show-depends "$m" >/dev/null || die "trimmed tree cannot resolve $m"
done

# ---- 5. the rest of the static guest root --------------------------------
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root}
install -m 0755 "$KDIR.tmp/bb/bin/busybox" "$ROOT/bin/busybox"
ln -sf busybox "$ROOT/bin/sh"
# Minimal /etc so libc lookups (localhost, uid 0) behave.
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.0.2.15\tcamcast-vm\n' >"$ROOT/etc/hosts"
printf 'hosts: files\npasswd: files\ngroup: files\n' >"$ROOT/etc/nsswitch.conf"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\nvideo:x:44:\nnogroup:x:65534:\n' >"$ROOT/etc/group"
echo camcast-vm >"$ROOT/etc/hostname"
cp "$EXTRACT/boot/vmlinuz-$KVER" "$KDIR.tmp/vmlinuz"
cp "$EXTRACT/boot/config-$KVER" "$KDIR.tmp/config"

log "packing base.cpio"
(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) >"$KDIR.tmp/base.cpio"
rm -rf "$EXTRACT" "$KDIR.tmp/bb"
printf '%s\n' "$STAMP" >"$KDIR.tmp/.complete"

# Swap in atomically-ish so a concurrent run-in-vm.sh never sees half a tree.
rm -rf "$KDIR.old"
[[ -e $KDIR ]] && mv "$KDIR" "$KDIR.old"
mv "$KDIR.tmp" "$KDIR"
rm -rf "$KDIR.old"
printf '%s\n' "$KVER" >"$CACHE/current"
log "done: kernel $KDIR/vmlinuz ($(du -h "$KDIR/vmlinuz" | cut -f1)), base initramfs $KDIR/base.cpio ($(du -h "$KDIR/base.cpio" | cut -f1))"
