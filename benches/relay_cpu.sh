#!/usr/bin/env bash
# camcast's CPU and egress with N direct MJPEG viewers vs one relay (ffmpeg → nginx-rtmp → HLS)
# feeding N HLS readers: the figures in docs/fleet.md ("Relaying to many viewers").
#
#   benches/relay_cpu.sh [SIZE] [FPS] [N]        (defaults: 1280x720 30 10)
#
# Needs the release binary (cargo build --release --bin camcast) and the Debian packages
# nginx-light, libnginx-mod-rtmp, ffmpeg, curl. Loopback only. camcast's CPU is read from
# /proc/PID/stat (utime + stime) over a 10 s window after 3 s of warm-up, as % of one core;
# its egress from camcast_bytes_sent_total over the same window. The test pattern is encoded
# by camcast in every case, so "idle" is the capture-and-encode floor and each case's excess
# over it is the cost of serving.
set -euo pipefail
cd "$(dirname "$0")/.."

size=${1:-1280x720}
fps=${2:-30}
n=${3:-10}
window=10
camcast=${CARGO_TARGET_DIR:-target}/release/camcast
[ -x "$camcast" ] || { echo "build it first: cargo build --release --bin camcast"; exit 1; }
rtmp_module=/usr/lib/nginx/modules/ngx_rtmp_module.so
[ -e "$rtmp_module" ] || { echo "install nginx-light and libnginx-mod-rtmp"; exit 1; }
work=$(mktemp -d)
chmod 755 "$work"
mkdir -p "$work/hls" "$work/tmp"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
http_port=$(free_port)
rtmp_port=$(free_port)
hls_port=$(free_port)
base="http://127.0.0.1:$http_port"
tck=$(getconf CLK_TCK)

"$camcast" --source test-pattern --size "$size" --fps "$fps" --led none --no-mdns \
  --listen "127.0.0.1:$(free_port)" --http "127.0.0.1:$http_port" 2>"$work/camcast.log" &
camcast_pid=$!
pids+=("$camcast_pid")
for _ in $(seq 100); do curl -fsS -o /dev/null "$base/healthz" 2>/dev/null && break; sleep 0.1; done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sent() { curl -fsS "$base/metrics" | awk '/^camcast_bytes_sent_total/ {s += $2} END {printf "%d", s}'; }
# measure LABEL [PID...]: camcast's CPU and egress over the window; then the other PIDs' CPU.
measure() {
  local label=$1
  shift
  sleep 3
  local c0 b0 c1 b1 others=() o
  c0=$(ticks "$camcast_pid")
  b0=$(sent)
  for o in "$@"; do others+=("$(ticks "$o")"); done
  sleep "$window"
  c1=$(ticks "$camcast_pid")
  b1=$(sent)
  local extra=""
  local i=0
  for o in "$@"; do
    extra="$extra, relay ffmpeg $(pct $(($(ticks "$o") - others[i])))% of a core"
    i=$((i + 1))
  done
  printf '%-36s camcast %5s%% of a core, egress %6.1f Mbit/s%s\n' "$label" "$(pct $((c1 - c0)))" \
    "$(awk -v b=$((b1 - b0)) -v w="$window" 'BEGIN {print b * 8 / w / 1e6}')" "$extra"
}
# pct TICKS: CPU ticks over the window as % of one core, one decimal.
pct() { awk -v t="$1" -v hz="$tck" -v w="$window" 'BEGIN {printf "%.1f", t * 100 / hz / w}'; }

echo "camcast $size@$fps test pattern, $n viewers; $(date -u +%F) $(git rev-parse --short HEAD);" \
  "$(nproc) cores $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load $(cut -d' ' -f1-3 /proc/loadavg)"

# Capture and encode only: one viewer that takes one frame a second.
curl -sS -N -o /dev/null "$base/stream.mjpg?fps=1&name=floor" &
floor=$!
pids+=("$floor")
measure "capture+encode floor (1 fps viewer)"

viewers=()
for i in $(seq "$n"); do
  curl -sS -N -o /dev/null "$base/stream.mjpg?name=direct-$i" &
  viewers+=($!)
  pids+=($!)
  [ "$i" = 1 ] && measure "1 direct MJPEG viewer"
done
measure "$n direct MJPEG viewers"
kill "${viewers[@]}"

cat >"$work/nginx.conf" <<EOF
load_module $rtmp_module;
daemon off;
master_process off;
pid $work/nginx.pid;
error_log $work/nginx.log;
events { worker_connections 256; }
rtmp { server { listen 127.0.0.1:$rtmp_port; application live {
  live on; record off; hls on; hls_path $work/hls; hls_fragment 1s; hls_playlist_length 6s; } } }
http {
  access_log off;
  client_body_temp_path $work/tmp; proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp;
  uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;
  server { listen 127.0.0.1:$hls_port; location /hls/ { alias $work/hls/; } }
}
EOF
nginx -p "$work" -c "$work/nginx.conf" 2>>"$work/nginx.log" &
pids+=($!)
sleep 0.5
ffmpeg -nostdin -loglevel error -use_wallclock_as_timestamps 1 -f mpjpeg \
  -i "$base/stream.mjpg?name=relay" -c:v libx264 -preset ultrafast -tune zerolatency -g "$fps" \
  -pix_fmt yuv420p -f flv "rtmp://127.0.0.1:$rtmp_port/live/cam" 2>"$work/relay.log" &
relay=$!
pids+=("$relay")
for _ in $(seq 100); do [ -s "$work/hls/cam.m3u8" ] && break; sleep 0.2; done
for i in $(seq "$n"); do
  # HLS readers that copy without decoding: they load nginx, never camcast.
  ffmpeg -nostdin -loglevel error -i "http://127.0.0.1:$hls_port/hls/cam.m3u8" -c copy -f null - \
    2>"$work/reader-$i.log" &
  pids+=($!)
done
measure "1 relay + $n HLS readers" "$relay"
