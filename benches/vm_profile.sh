#!/usr/bin/env bash
# Where camcast's and µStreamer's CPU goes, inside the test VM, with Debian's `perf`
# (linux-perf): the same guest, devices and bench as .ci/vm-bench (benches/vm_compare.rs), one
# configuration, each side run once while perf watches the whole guest. Prints the bench's
# own figures, then per server thread the share of samples in the kernel, in the server's
# code and in libc, the top symbols of each busy thread, and system-wide counts of the
# syscalls and page faults that differ between the servers (one count per side).
#
#   benches/vm_profile.sh                         # passthrough (loopback MJPEG 720p), 1 viewer,
#                                                 # µStreamer HTTP, camcast HTTP, camcast gRPC
#   benches/vm_profile.sh --case encode --viewers 10 --sides ustreamer,http --window 10
#   benches/vm_profile.sh --counts-only           # skip the sampling run
#   benches/vm_profile.sh --sides grpc --grpc stream   # the gRPC side on StreamFrames (default: pull)
#
# Binaries: a release build that keeps its symbols (the shipped profile strips them), built
# here into target/vm-profile unless VM_COMPARE_BENCH and CAMCAST_BIN name prebuilt ones.
# Not part of .ci/run: a measurement tool (docs/benchmarks.md quotes its output).
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh

CASE=passthrough SIDES=ustreamer,http,grpc VIEWERS=1 WINDOW=10 COUNTS_ONLY=0 GRPC=pull
while [ $# -gt 0 ]; do
  case $1 in
    --case) CASE=$2; shift 2 ;;
    --sides) SIDES=$2; shift 2 ;;
    --viewers) VIEWERS=$2; shift 2 ;;
    --window) WINDOW=$2; shift 2 ;;
    --grpc) GRPC=$2; shift 2 ;;
    --counts-only) COUNTS_ONLY=1; shift ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)"; exit 2 ;;
  esac
done

CACHE=${CAMCAST_VM_CACHE:-/var/tmp/camcast-vm}
UST=$CACHE/ustreamer
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

command -v perf >/dev/null || apt_install linux-perf
[ -x "$UST/root/usr/bin/ustreamer" ] || { echo "µStreamer is not unpacked in $UST: run .ci/vm-bench once"; exit 1; }

if [ -n "${VM_COMPARE_BENCH:-}" ]; then
  bench=$VM_COMPARE_BENCH camcast_bin=${CAMCAST_BIN:?VM_COMPARE_BENCH needs CAMCAST_BIN too}
else
  CARGO_TARGET_DIR=target/vm-profile CARGO_PROFILE_RELEASE_STRIP=none \
    CARGO_PROFILE_RELEASE_DEBUG=line-tables-only build_vm_compare
fi

# perf is dynamically linked: its libraries go in beside it (the guest has only busybox).
mkdir -p "$WORK/lib"
ldd "$(command -v perf)" | awk '/=>/ {print $3}' | xargs -I{} cp -L {} "$WORK/lib/"

cat >"$WORK/guest.sh" <<'EOF'
#!/bin/sh
# Inside the guest. perf samples with the cpu-clock software event (TCG has no PMU).
export LD_LIBRARY_PATH=/opt/perf/lib
P=/opt/perf/perf
mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
echo 0 >/proc/sys/kernel/kptr_restrict
echo -1 >/proc/sys/kernel/perf_event_paranoid
if [ "$COUNTS_ONLY" = 0 ]; then
  echo "## perf record -a, cpu-clock 999 Hz: $SIDES (one run each, in that order)"
  $P record -a -F 999 -o /tmp/p.data -- /opt/b/vm_compare --case "$CASE" --only "$SIDES" --viewers "$VIEWERS" \
    --grpc "$GRPC" --repeat 1 --fresh-secs 0 --window "$WINDOW" --warmup 2 >/tmp/bench.out 2>&1
  grep -E "CPU/frame|copy \+ check|→ JPEG" /tmp/bench.out
  echo
  echo "## server threads: samples by where they ran"
  echo "| process, thread | samples | kernel % | own code % | libc % | other libraries % |"
  echo "|---|---|---|---|---|---|"
  # "thread-name pid/tid (shared object)" per sample; servers only (camcast, ustreamer).
  $P script -i /tmp/p.data -F comm,pid,tid,ip,dso -G 2>/dev/null | awk '
    { comm = $1; split($2, ids, "/"); pid = ids[1]; tid = ids[2]; dso = $NF
      gsub(/[()]/, "", dso); n = split(dso, parts, "/"); obj = parts[n]
      key = pid ":" tid " " comm
      total[key]++; all[pid]++
      if (obj ~ /kernel/) k[key]++; else if (obj ~ /^libc/) c[key]++; else if (obj == "camcast" || obj == "ustreamer") own[key]++; else other[key]++
      if (obj == "camcast" || obj == "ustreamer") server[pid] = obj }
    function row(name, n, kk, oo, cc, xx) { printf "| %s | %d | %.0f | %.0f | %.0f | %.0f |\n", name, n, 100 * kk / n, 100 * oo / n, 100 * cc / n, 100 * xx / n }
    END {
      for (key in total) { split(key, a, ":"); p = a[1]
        if (!(p in server)) continue
        T[p] += total[key]; K[p] += k[key]; O[p] += own[key]; C[p] += c[key]; X[p] += other[key]
        if (total[key] >= 20) row(server[p] " " p ", thread " substr(key, index(key, " ") + 1), total[key], k[key], own[key], c[key], other[key]) }
      for (p in T) row(server[p] " " p ", all threads", T[p], K[p], O[p], C[p], X[p]) }' | sort
  echo
  # The servers' threads with at least 100 samples.
  for t in $($P script -i /tmp/p.data -F comm,pid,tid,ip,dso -G 2>/dev/null | awk '
      { split($2, ids, "/"); n[ids[2]]++; of[ids[2]] = ids[1]; if ($NF ~ /\/(camcast|ustreamer)\)$/) server[ids[1]] = 1 }
      END { for (t in n) if (n[t] >= 100 && (of[t] in server)) print t }' | sort -n); do
    echo "## thread $t: top symbols (% of its samples)"
    $P report -i /tmp/p.data --no-children --tid "$t" --sort comm,dso,sym --percentage relative \
      --percent-limit 2 --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -20
  done
fi
echo
echo "## system-wide counts while each side runs alone (perf stat; includes the viewers and the feeder)"
EVENTS=syscalls:sys_enter_madvise,exceptions:page_fault_user,syscalls:sys_enter_futex,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_ioctl,syscalls:sys_enter_poll,syscalls:sys_enter_getsockopt
for side in $(echo "$SIDES" | tr , ' '); do
  $P stat -x, -a -e "$EVENTS" -- /opt/b/vm_compare --case "$CASE" --only "$side" --viewers "$VIEWERS" \
    --grpc "$GRPC" --repeat 1 --fresh-secs 0 --window "$WINDOW" --warmup 2 >/tmp/bench.out 2>/tmp/stat.out
  echo "### $side: $(grep -E 'CPU/frame' /tmp/bench.out | sed 's/.*| //')"
  awk -F, '$3 ~ /:/ { sub(/.*:/, "", $3); printf "%s=%s ", $3, $1 } END { print "" }' /tmp/stat.out
done
EOF
chmod +x "$WORK/guest.sh"

echo "profiling in the test VM: case $CASE, sides $SIDES (gRPC: $GRPC), $VIEWERS viewer(s), ${WINDOW} s window; camcast $camcast_bin"
tests/vm/run-in-vm.sh --timeout 1200 --log "${VM_PROFILE_LOG:-/tmp/vm-profile.log}" \
  --file "$(command -v perf):/opt/perf/perf" \
  --file "$WORK/lib:/opt/perf/lib" \
  --file "$WORK/guest.sh:/opt/perf/guest.sh" \
  --file "$bench:/opt/b/vm_compare" \
  --file "$camcast_bin:/opt/camcast/camcast" \
  --file "$UST/root/usr/bin/ustreamer:/opt/ustreamer/ustreamer" \
  --file "$UST/lib:/opt/ustreamer/lib" \
  --env CAMCAST_BIN=/opt/camcast/camcast \
  --env USTREAMER_BIN=/opt/ustreamer/ustreamer \
  --env USTREAMER_LIB=/opt/ustreamer/lib \
  --env VM_COMPARE_REQUIRE=1 \
  --env "CASE=$CASE" --env "SIDES=$SIDES" --env "VIEWERS=$VIEWERS" --env "WINDOW=$WINDOW" --env "GRPC=$GRPC" \
  --env "COUNTS_ONLY=$COUNTS_ONLY" \
  -- "$(command -v dash)" /opt/perf/guest.sh | grep -v '^\[ *[0-9.]*\]'
