#!/usr/bin/env bash
# Where the HTTP side's per-frame CPU goes: the release camcast serving its 30 fps test pattern
# to N curl readers of /stream.mjpg on loopback (readers that keep up), measured from outside.
#
#   benches/http_profile.sh [N [SECONDS [SIZE]]]   # default 10 viewers, 10 s, 640x480
#   CAMCAST_BIN=/path/to/camcast benches/http_profile.sh 10   # another binary (before/after)
#   PERF=1 benches/http_profile.sh 1                # also `perf record -g` (report in /tmp)
#
# Three phases on one server, each over SECONDS, frames counted by the server's own
# camcast_frames_sent_total{api="http"}:
#   1. CPU: utime+stime of the server per delivered frame (nothing attached);
#   2. syscalls: `strace -c -f` attached (which slows the server: its CPU is not counted), each
#      syscall's count per delivered frame;
#   3. with PERF=1: `perf record -g` (call graphs by frame pointer... or DWARF with
#      PERF_CALLGRAPH=dwarf), then `perf report --no-children` top entries.
# Needs curl, strace, and for PERF=1 perf (Debian: linux-perf).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10}
secs=${2:-10}
size=${3:-640x480}
bin=${CAMCAST_BIN:-target/release/camcast}
if [ -z "${CAMCAST_BIN:-}" ]; then
  cargo build --release --bin camcast >&2
fi
work=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
room=$((n + 8))
"$bin" --source test-pattern --size "$size" --fps 30 --led none --log warn --no-mdns \
  --listen 127.0.0.1:0 --http-listen "127.0.0.1:$port" --max-viewers "$room" \
  --max-connections-per-address "$room" --max-viewers-per-address "$room" 2>"$work/server.log" &
server=$!
pids+=("$server")
for _ in $(seq 100); do
  curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && break
  sleep 0.1
done
for i in $(seq "$n"); do
  curl -sS -o /dev/null "http://127.0.0.1:$port/stream.mjpg?name=profile-$i" &
  pids+=($!)
done
sent() {
  curl -fsS "http://127.0.0.1:$port/metrics" |
    awk '/^camcast_frames_sent_total\{.*api="http"/ {print $2}'
}
cpu() { awk '{print $14 + $15}' "/proc/$server/stat"; }
sleep 2
echo "camcast HTTP profile: $n curl readers of $size @30, ${secs} s per phase; $(date -u +%FT%TZ), binary $bin ($("$bin" --version)), $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"

f0=$(sent)
c0=$(cpu)
sleep "$secs"
f1=$(sent)
c1=$(cpu)
frames=$((f1 - f0))
hz=$(getconf CLK_TCK)
awk -v c="$((c1 - c0))" -v hz="$hz" -v f="$frames" -v s="$secs" 'BEGIN {
  printf "CPU: %d frames delivered (%.1f/s), server %.3f ms CPU per delivered frame, %.0f%% of a core\n",
    f, f / s, c * 1000 / hz / f, c * 100 / hz / s }'

f0=$(sent)
timeout -s INT "$secs" strace -c -f -p "$server" -o "$work/strace" 2>/dev/null || true
f1=$(sent)
frames=$((f1 - f0))
echo "syscalls per delivered frame under strace ($frames frames):"
awk -v f="$frames" '$1 ~ /^[0-9.]+$/ && NF >= 5 {
    name = $NF; calls = $4
    printf "  %-16s %7.2f\n", name, calls / f
  } $NF == "total" { printf "  %-16s %7.2f\n", "total", $3 / f }' "$work/strace" | sort -k2 -nr | head -20

if [ -n "${PERF:-}" ]; then
  out=/tmp/camcast-http-profile-$n.perf.data
  perf record -q -g ${PERF_CALLGRAPH:+--call-graph "$PERF_CALLGRAPH"} -p "$server" -o "$out" -- sleep "$secs" 2>/dev/null
  echo "perf: $out (perf report -i $out --no-children)"
  perf report -i "$out" --no-children --stdio --sort symbol 2>/dev/null | grep -E '^ +[0-9]' | head -40
fi
