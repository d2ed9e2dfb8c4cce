#!/usr/bin/env bash
# self-check.sh — prove the VM harness works end to end (about 30-40 s):
#   prepare (cached after the first time), device nodes of vivid and
#   v4l2loopback, QUERYCAP + capture through a static C program, exit-status
#   pass-through (0, 1, 3), setup-failure (125), timeout (124), and
#   v4l2loopback unplug/replug with /sbin/rmmod + /sbin/modprobe.
# Prints "N passed, M failed" at the end and exits non-zero on any failure.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${CAMCAST_VM_CACHE:-/var/tmp/camcast-vm}
RUN=$HERE/run-in-vm.sh

"$HERE/prepare.sh"
mkdir -p "$CACHE"
# The C test program is built into the cache, not the source tree.
gcc -static -O2 -Wall -Wextra -o "$CACHE/selftest" "$HERE/selftest.c"

PASS=0
FAIL=0
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT

# check NAME EXPECTED_RC GREP_PATTERN -- run-in-vm.sh args...
check() {
    local name=$1 want=$2 pattern=$3 rc
    shift 4
    echo "=== $name"
    set +e
    "$RUN" --timeout 120 "$@" 2>&1 | tee "$OUT"
    rc=${PIPESTATUS[0]}
    set -e
    if [[ $rc -eq $want ]] && grep -qE "$pattern" "$OUT"; then
        echo "=== PASS $name (exit $rc)"
        PASS=$((PASS + 1))
    else
        echo "=== FAIL $name: exit $rc (want $want), pattern /$pattern/ $(grep -qE "$pattern" "$OUT" && echo found || echo 'NOT found')"
        FAIL=$((FAIL + 1))
    fi
}

check "device nodes" 0 'vivid-000-vid-cap' -- \
    --shell-cmd 'ls -l /dev/video*; cat /sys/class/video4linux/*/name; grep -q loopcam /sys/class/video4linux/video10/name'
check "vivid QUERYCAP + YUYV sizes + capture" 0 'captured 10 frames' -- \
    -- "$CACHE/selftest" /dev/video0 vivid 10 25
check "binary non-zero exit (loopback is not vivid)" 1 'driver: v4l2 loopback' -- \
    -- "$CACHE/selftest" /dev/video10 vivid
check "shell exit 3" 3 'CAMCAST_VM_EXIT=3' -- --shell-cmd 'exit 3'
# shellcheck disable=SC2016  # $(...) is for the guest shell
check "unplug/replug v4l2loopback" 0 'replugged: loopcam' -- \
    --shell-cmd '/sbin/rmmod v4l2loopback && [ ! -e /dev/video10 ] && /sbin/modprobe v4l2loopback && echo "replugged: $(cat /sys/class/video4linux/video10/name)"'
CAMCAST_VM_VIVID_OPTS='n_devs=notanumber' \
    check "setup failure gives 125" 125 'SETUP FAILED' -- --shell-cmd 'true'
check "timeout gives 124" 124 'TIMEOUT' -- --timeout 6 --shell-cmd 'sleep 600'

echo
echo "vm-harness: $PASS passed, $FAIL failed"
[[ $FAIL -eq 0 ]]
