# shellcheck shell=bash disable=SC2154 # here, repo, IMAGE, VIEWER and KEEP come from the caller
# Shared set-up of the SD image boot tests (boot-test.sh on QEMU's virt machine, boot-raspi.sh
# on its raspi3b model). Source it after parsing arguments; do not run it.
#
#   boot_setup NAME   # NAME labels log lines, the summary and the scratch directory
#
# Uses IMAGE, VIEWER, KEEP and $here/$repo from the caller; sets IMAGE and VIEWER to what will
# be used (the newest image in image/out, the release camcast-view, built if missing), T0,
# work (a scratch directory, removed on exit unless KEEP=1) and QEMU_PID (killed on exit).
# Defines log, finish (prints the tally and exits with its status) and the scripts/checks.sh
# tally.

# shellcheck source=scripts/checks.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/checks.sh"

boot_setup() {
  BOOT_NAME=$1
  T0=$SECONDS
  [ -n "$IMAGE" ] || IMAGE=$(find "$here/out" -maxdepth 1 -name 'camcast-*-rpi-arm64.img.xz' -printf '%T@ %p\n' 2>/dev/null | sort -rn | sed -n 1p | cut -d' ' -f2-)
  if [ -z "$IMAGE" ] || [ ! -f "$IMAGE" ]; then echo "no image (build one: sudo image/build.sh)"; exit 2; fi
  if [ -z "$VIEWER" ]; then
    VIEWER=${CARGO_TARGET_DIR:-$repo/target}/release/camcast-view
    [ -x "$VIEWER" ] || (cd "$repo" && cargo build --release --bin camcast-view)
  fi
  [ -x "$VIEWER" ] || { echo "no camcast-view at $VIEWER"; exit 2; }
  work=$(mktemp -d "${TMPDIR:-/var/tmp}/camcast-$BOOT_NAME.XXXXXX")
  QEMU_PID=
  trap boot_cleanup EXIT
}

log() { printf '[%s %4ss] %s\n' "$BOOT_NAME" "$((SECONDS - T0))" "$*"; }

finish() {
  checks_summary "$BOOT_NAME"
  exit
}

boot_cleanup() {
  if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then kill "$QEMU_PID" 2>/dev/null || true; wait "$QEMU_PID" 2>/dev/null || true; fi
  if [ "$KEEP" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
