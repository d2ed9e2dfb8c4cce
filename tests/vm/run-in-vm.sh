#!/usr/bin/env bash
# run-in-vm.sh — run one program inside a throw-away QEMU VM (Debian kernel,
# busybox userland, TCG emulation) that has virtual cameras:
#   vivid         /dev/video0  capture, webcam input, YUYV 640x480 / 1280x720 / ...
#   v4l2loopback  /dev/video10 "loopcam", exclusive_caps=1
# and exit with that program's exit status.
#
# Usage:
#   run-in-vm.sh [options] -- /path/to/binary [args...]
#   run-in-vm.sh [options] --shell-cmd 'busybox sh command'
# Options:
#   --timeout SECS           kill the VM after SECS seconds (default 600) -> exit 124
#   --hostfwd HPORT:GPORT    forward 127.0.0.1:HPORT on the host to guest port GPORT
#                            (TCP; repeatable; enables virtio-net, guest 10.0.2.15/24)
#   --file SRC:DEST          put host file/dir SRC at DEST in the guest (repeatable;
#                            DEST ending in / means "into that directory")
#   --env K=V                environment variable for the payload (repeatable)
#   --shell-cmd CMD          run `sh -c CMD` (busybox) instead of a binary
#   --log FILE               also save the full console output to FILE
#   -h, --help
# Exit status: the payload's; 124 on timeout; 125 if the VM never reported one
# (boot or setup failure, guest crash); 2 on usage errors.
#
# The binary should be static (musl or glibc -static). A dynamically linked one
# also works: its shared libraries (as listed by ldd) are copied into the guest.
#
# Environment knobs:
#   CAMCAST_VM_CACHE             cache dir from prepare.sh (default /var/tmp/camcast-vm)
#   CAMCAST_VM_VIVID_OPTS        vivid options, replacing the default
#       "n_devs=1 node_types=0x1 num_inputs=1 input_types=0x0 multiplanar=1 vid_cap_nr=0"
#   CAMCAST_VM_V4L2LOOPBACK_OPTS v4l2loopback options, replacing the default
#       "devices=1 video_nr=10 card_label=loopcam exclusive_caps=1"
#     (both also go to the guest's /etc/modprobe.d, so a plain
#     `modprobe v4l2loopback` after `rmmod` recreates the same device)
#   CAMCAST_VM_NO_VIVID=1        do not load vivid at boot
#   CAMCAST_VM_NO_V4L2LOOPBACK=1 do not load v4l2loopback at boot
#   CAMCAST_VM_MEM               guest RAM in MiB (default 1024)
#   CAMCAST_VM_SMP               guest CPUs (default 2; TCG runs one host thread each)
#   CAMCAST_VM_ACCEL             qemu accelerator (default tcg; kvm hangs on this host)
#   CAMCAST_VM_CMDLINE           extra kernel command line
#   CAMCAST_VM_DMESG             on-failure (default) | always | never
#   CAMCAST_VM_QUIET=1           suppress the harness' own [vm] lines
#   CAMCAST_VM_KEEP=1            keep the per-run staging dir (for debugging)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${CAMCAST_VM_CACHE:-/var/tmp/camcast-vm}

# Defaults for the virtual cameras.
# vivid: one instance, only a video-capture node (node_types=0x1) with a single
# "webcam" input (input_types=0), single-planar. Its webcam input offers YUYV
# (and other formats) at 320x180 .. 3840x2160 incl. 640x480 and 1280x720.
VIVID_OPTS=${CAMCAST_VM_VIVID_OPTS:-n_devs=1 node_types=0x1 num_inputs=1 input_types=0x0 multiplanar=1 vid_cap_nr=0}
LOOP_OPTS=${CAMCAST_VM_V4L2LOOPBACK_OPTS:-devices=1 video_nr=10 card_label=loopcam exclusive_caps=1}

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
log() { printf '[run-in-vm] %s\n' "$*" >&2; }
die_usage() { log "$*"; echo "see: $0 --help" >&2; exit 2; }
fail() { log "ERROR: $*"; exit 125; }

TIMEOUT=600
HOSTFWDS=()
FILES=()
ENVS=()
SHELL_CMD=
HAVE_SHELL_CMD=0
LOGFILE=
while [[ $# -gt 0 ]]; do
    case $1 in
        --timeout) [[ ${2:-} =~ ^[0-9]+$ ]] || die_usage "--timeout needs seconds"; TIMEOUT=$2; shift 2 ;;
        --hostfwd) [[ ${2:-} =~ ^[0-9]+:[0-9]+$ ]] || die_usage "--hostfwd needs HOSTPORT:GUESTPORT"; HOSTFWDS+=("$2"); shift 2 ;;
        --file) [[ ${2:-} == *:* ]] || die_usage "--file needs SRC:DEST"; FILES+=("$2"); shift 2 ;;
        --env) [[ ${2:-} =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die_usage "--env needs K=V"; ENVS+=("$2"); shift 2 ;;
        --shell-cmd) [[ $# -ge 2 ]] || die_usage "--shell-cmd needs a command"; SHELL_CMD=$2; HAVE_SHELL_CMD=1; shift 2 ;;
        --log) [[ -n ${2:-} ]] || die_usage "--log needs a file"; LOGFILE=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        *) die_usage "unknown option: $1" ;;
    esac
done
if [[ $HAVE_SHELL_CMD -eq 1 ]]; then
    [[ $# -eq 0 ]] || die_usage "give either --shell-cmd or -- BINARY, not both"
else
    [[ $# -ge 1 ]] || die_usage "no binary given (use -- /path/to/binary [args] or --shell-cmd)"
    BIN=$1; shift
    [[ -f $BIN && -x $BIN ]] || die_usage "not an executable file: $BIN"
fi

# ---- cache from prepare.sh -------------------------------------------------
if [[ ! -f $CACHE/current ]] || [[ ! -f $CACHE/$(cat "$CACHE/current")/.complete ]]; then
    log "VM cache missing in $CACHE — running prepare.sh"
    "$HERE/prepare.sh" >&2 || fail "prepare.sh failed"
fi
KVER=$(cat "$CACHE/current")
KDIR=$CACHE/$KVER
[[ -f $KDIR/vmlinuz && -f $KDIR/base.cpio ]] || fail "incomplete cache $KDIR (re-run prepare.sh)"
command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 not installed (run prepare.sh)"

# ---- per-run initramfs -------------------------------------------------------
mkdir -p "$CACHE/runs"
RUN=$(mktemp -d "$CACHE/runs/run.XXXXXX")
# shellcheck disable=SC2329  # called by the EXIT trap
cleanup() {
    if [[ ${CAMCAST_VM_KEEP:-0} == 1 ]]; then log "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
STAGE=$RUN/stage
mkdir -p "$STAGE/camcast/bin"

# Single-quote a string for the guest's sh.
q() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }

is_elf() { [[ -f $1 && $(head -c4 "$1" | od -An -c | tr -d ' ') == '177ELF' ]]; }

# Copy the shared libraries (and ELF interpreter) of a dynamically linked
# executable to the same paths inside the guest. ldd prints nothing useful (and
# exits non-zero) for static binaries, which need nothing.
add_libs() {
    local f=$1 line p
    is_elf "$f" || return 0
    while read -r line; do
        for p in $line; do
            [[ $p == /* && -e $p ]] || continue
            [[ -e $STAGE$p ]] && continue
            mkdir -p "$STAGE$(dirname "$p")"
            cp -L "$p" "$STAGE$p"
        done
    done < <(ldd "$f" 2>/dev/null || true)
}

for spec in "${FILES[@]}"; do
    src=${spec%%:*}
    dest=${spec#*:}
    [[ -e $src ]] || die_usage "--file source does not exist: $src"
    [[ $dest == /* ]] || die_usage "--file destination must be absolute: $dest"
    [[ $dest == */ ]] && dest=$dest$(basename "$src")
    mkdir -p "$STAGE$(dirname "$dest")"
    cp -a "$src" "$STAGE$dest"
    [[ -x $src && -f $src ]] && add_libs "$src"
done

{
    echo "# generated by run-in-vm.sh"
    echo "CAMCAST_VIVID_OPTS=$(q "$VIVID_OPTS")"
    echo "CAMCAST_LOOP_OPTS=$(q "$LOOP_OPTS")"
    echo "CAMCAST_LOAD_VIVID=$([[ ${CAMCAST_VM_NO_VIVID:-0} == 1 ]] && echo 0 || echo 1)"
    echo "CAMCAST_LOAD_LOOP=$([[ ${CAMCAST_VM_NO_V4L2LOOPBACK:-0} == 1 ]] && echo 0 || echo 1)"
    echo "CAMCAST_NET=$([[ ${#HOSTFWDS[@]} -gt 0 ]] && echo 1 || echo 0)"
    echo "CAMCAST_DMESG=$(q "${CAMCAST_VM_DMESG:-on-failure}")"
    echo "CAMCAST_QUIET=$(q "${CAMCAST_VM_QUIET:-0}")"
} >"$STAGE/camcast/config"

{
    echo "# generated by run-in-vm.sh: the payload"
    echo "export HOME=/root"
    for kv in "${ENVS[@]}"; do echo "export $(q "$kv")"; done
    if [[ $HAVE_SHELL_CMD -eq 1 ]]; then
        echo "exec /bin/sh -c $(q "$SHELL_CMD")"
    else
        name=$(basename "$BIN")
        cp -L "$BIN" "$STAGE/camcast/bin/$name"
        add_libs "$BIN"
        printf 'exec %s' "$(q "/camcast/bin/$name")"
        for a in "$@"; do printf ' %s' "$(q "$a")"; done
        echo
    fi
} >"$STAGE/camcast/run.sh"

install -m 0755 "$HERE/guest-init.sh" "$STAGE/init"
# Concatenated newc archives are fine for the kernel; GNU cpio pads each to 512
# bytes, so the second starts aligned. Uncompressed on purpose (TCG is slow at
# decompressing; the binary is loaded into guest RAM either way).
(cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) >"$RUN/payload.cpio"
cat "$KDIR/base.cpio" "$RUN/payload.cpio" >"$RUN/initrd.cpio"
rm -f "$RUN/payload.cpio"

# ---- boot ----------------------------------------------------------------------
MEM=${CAMCAST_VM_MEM:-1024}
SMP=${CAMCAST_VM_SMP:-2}
ACCEL=${CAMCAST_VM_ACCEL:-tcg}
# panic=-1 + -no-reboot: a guest panic (e.g. /init dying) ends qemu at once.
CMDLINE="console=ttyS0,115200 quiet loglevel=3 panic=-1 rdinit=/init mitigations=off ${CAMCAST_VM_CMDLINE:-}"
QEMU=(qemu-system-x86_64
    -accel "$ACCEL" -cpu max -smp "$SMP" -m "$MEM"
    -machine pc -nodefaults -no-user-config -no-reboot
    -display none -monitor none -serial stdio
    -kernel "$KDIR/vmlinuz" -initrd "$RUN/initrd.cpio" -append "$CMDLINE"
    -device virtio-rng-pci)
if [[ ${#HOSTFWDS[@]} -gt 0 ]]; then
    # restrict=on: the guest can reach nothing but itself; explicit hostfwd
    # rules (bound to host loopback only) still work.
    nd="user,id=n0,restrict=on"
    for fw in "${HOSTFWDS[@]}"; do nd+=",hostfwd=tcp:127.0.0.1:${fw%%:*}-:${fw#*:}"; done
    # shellcheck disable=SC2054  # the commas belong to qemu's option syntax
    QEMU+=(-netdev "$nd" -device virtio-net-pci,netdev=n0)
fi

LOG=$RUN/console.log
log "kernel $KVER, accel $ACCEL, ${SMP} vCPU, ${MEM} MiB, timeout ${TIMEOUT}s, initrd $(du -h "$RUN/initrd.cpio" | cut -f1)"
START=$SECONDS
# timeout bounds the whole VM (-k: SIGKILL if qemu ignores SIGTERM). --foreground
# keeps qemu in our process group so Ctrl-C on the host reaches it too.
# stdin is /dev/null: nothing is typed into the guest. sed strips the serial
# console's CRs and, with tee, prints and logs each line as it arrives.
set +e
timeout --foreground -k 10 "$TIMEOUT" "${QEMU[@]}" </dev/null 2>&1 | sed -u 's/\r$//' | tee "$LOG"
QEMU_RC=${PIPESTATUS[0]}
set -e
ELAPSED=$((SECONDS - START))
# The console's last line ("reboot: Power down") has no newline; end it so our
# own messages below start on a fresh line.
[[ -s $LOG && -n $(tail -c1 "$LOG") ]] && echo
[[ -n $LOGFILE ]] && cp "$LOG" "$LOGFILE"

# Last exit marker wins (the payload itself could print something similar
# earlier); it may follow unterminated payload output on the same line.
RC=$(grep -aoE 'CAMCAST_VM_EXIT=[0-9]+$' "$LOG" | tail -n1 | cut -d= -f2 || true)
if [[ -z $RC && ( $QEMU_RC == 124 || $QEMU_RC == 137 ) ]]; then
    log "TIMEOUT: guest did not finish within ${TIMEOUT}s, qemu killed (exit 124)"
    exit 124
fi
if [[ -z $RC ]]; then
    if grep -aq CAMCAST_VM_SETUP_FAILED "$LOG"; then
        log "guest setup failed (see above); qemu exit $QEMU_RC, ${ELAPSED}s (exit 125)"
    else
        log "no CAMCAST_VM_EXIT marker: guest crashed or did not boot; qemu exit $QEMU_RC, ${ELAPSED}s (exit 125)"
    fi
    exit 125
fi
log "payload exit status $RC, total ${ELAPSED}s"
exit "$RC"
