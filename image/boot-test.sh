#!/usr/bin/env bash
# image/boot-test.sh — boots the SD image under QEMU and checks it end to end.
#
#   image/boot-test.sh [--image FILE.img.xz] [--viewer camcast-view] [--timeout SECS] [--keep]
#                      [--deb camcast_V-1_arm64.deb --upgrade camcast_V-2_arm64.deb]
#
# 1. Checks the .img.xz against its .sha256, unpacks it and checks the boot partition holds what
#    a Raspberry Pi 3/4 needs (bootcode.bin, start*.elf, fixup*.dat, the bcm2837/bcm2711 device
#    trees, and the kernel and initramfs config.txt names) — read with mtools, no mounts.
# 2. Adds first-boot settings to the boot partition of a copy, as a user would: hostname,
#    authorized_keys (a throw-away key), camcast.toml (test pattern, 320x240); and makes the
#    disk 512 MiB larger, like a bigger SD card.
# 3. Boots that disk in qemu-system-aarch64 -M virt -cpu cortex-a72 (TCG) with the image's own
#    kernel and initramfs (the files config.txt names) and the image's cmdline.txt (console
#    moved to the virt machine's ttyAMA0). Root is the image's ext4 partition on virtio-blk,
#    found by its label as on the Pi. User networking with restrict=on: the guest reaches
#    nothing; 127.0.0.1:<port> on the host is forwarded to its gRPC port 1234 and SSH port 22.
# 4. The host-built camcast-view receives frames (boot-to-first-frame is measured), then over
#    SSH: camcast.service active as user camcast (Type=notify: READY=1 arrived), status text,
#    no restarts after more than WatchdogSec (the watchdog is fed), the FAT settings applied,
#    the root file system grown, no failed units, udev rules for gpiochip, camcast's own mDNS
#    advertisement (resolved through the camera's avahi),
#    the service's exposure score. Then `deploy/install.sh --deb` over SSH: the package the
#    image already has (nothing changes, camcast keeps running), then the upgrade package (apt
#    upgrades it, the package restarts camcast, the config from the boot partition is kept),
#    frames again, and a clean poweroff. Without --deb/--upgrade that step fails under CI=true.
#
# Ends with "boot-test: N passed, M failed". Needs: qemu-system-arm (qemu-system-aarch64),
# mtools, fdisk (sfdisk), openssh-client, xz-utils, file, and a host camcast-view.
#
# SC2317: functions called through check/bash -c look unreachable to shellcheck.
# SC2016: commands in single quotes are expanded by the guest's shell, on purpose.
# shellcheck disable=SC2317,SC2016
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
# shellcheck source=.ci/lib.sh
. "$repo/.ci/lib.sh" # no_panics_in

IMAGE=
VIEWER=
DEB=
UPGRADE=
TIMEOUT=600
KEEP=0
while [ $# -gt 0 ]; do
  case $1 in
    --image) IMAGE=${2:?}; shift ;;
    --viewer) VIEWER=${2:?}; shift ;;
    --deb) DEB=${2:?}; shift ;;
    --upgrade) UPGRADE=${2:?}; shift ;;
    --timeout) TIMEOUT=${2:?}; shift ;;
    --keep) KEEP=1 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;/^# \(shellcheck\|SC[0-9]\)/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

# shellcheck source=image/boot-lib.sh
. "$here/boot-lib.sh"
boot_setup boot-test

# ---- 1. the artefact and its boot partition ------------------------------------------------------
log "image: $IMAGE ($(stat -c %s "$IMAGE") bytes)"
if [ -f "$IMAGE.sha256" ]; then
  check "sha256 matches $(basename "$IMAGE").sha256" bash -c "cd '$(dirname "$IMAGE")' && sha256sum --quiet -c '$(basename "$IMAGE").sha256'"
else
  bad "no $IMAGE.sha256"
fi
disk=$work/disk.img
xz -dc -T2 "$IMAGE" >"$disk"
raw_bytes=$(stat -c %s "$disk")
log "unpacked: $raw_bytes bytes raw"

# Partition table: sfdisk's dump, start and size in 512-byte sectors.
table=$(sfdisk -d "$disk")
echo "$table"
part_field() { echo "$table" | sed -n "s|^$disk$1 : .*$2= *\([0-9a-z]*\).*|\1|p"; }
p1_start=$(part_field 1 start); p1_type=$(part_field 1 type)
p2_size=$(part_field 2 size); p2_type=$(part_field 2 type)
check "MBR: partition 1 is FAT32 LBA (type c), bootable" bash -c "[ '$p1_type' = c ] && grep -q '^$disk''1 .*bootable' <<<\"\$1\"" _ "$table"
check "MBR: partition 2 is Linux (type 83)" test "$p2_type" = 83
fat="$disk@@$((p1_start * 512))"
export MTOOLS_SKIP_CHECK=1
mdir -b -i "$fat" :: | sed 's|^::/||' | sort >"$work/boot-files"
check "boot partition label RASPIFIRM" bash -c "mlabel -s -i '$fat' :: | grep -q 'Volume label is RASPIFIRM'"
for f in bootcode.bin start.elf fixup.dat start4.elf fixup4.dat config.txt cmdline.txt \
  bcm2837-rpi-3-b.dtb bcm2837-rpi-3-b-plus.dtb bcm2711-rpi-4-b.dtb README-camcast.txt camcast.toml.example; do
  check "boot partition has $f" grep -qx "$f" "$work/boot-files"
done
mcopy -n -i "$fat" ::config.txt ::cmdline.txt "$work/"
echo "--- config.txt"; grep -v '^#' "$work/config.txt" | grep .; echo "--- cmdline.txt"; cat "$work/cmdline.txt"
kernel=$(sed -n 's/^kernel=//p' "$work/config.txt")
initrd=$(sed -n 's/^initramfs \([^ ]*\).*/\1/p' "$work/config.txt")
check "config.txt: arm_64bit=1" grep -qx 'arm_64bit=1' "$work/config.txt"
check "config.txt: kernel=$kernel is on the boot partition" grep -qx "$kernel" "$work/boot-files"
check "config.txt: initramfs $initrd is on the boot partition" grep -qx "$initrd" "$work/boot-files"
check "cmdline.txt: root=LABEL=RASPIROOT" grep -q 'root=LABEL=RASPIROOT' "$work/cmdline.txt"
mcopy -n -i "$fat" "::$kernel" "$work/vmlinuz"
mcopy -n -i "$fat" "::$initrd" "$work/initrd"
log "kernel $(stat -c %s "$work/vmlinuz") bytes ($(file -b "$work/vmlinuz" | cut -d, -f1)), initramfs $(stat -c %s "$work/initrd") bytes"

# ---- 2. first-boot settings, a bigger card -----------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -C camcast-boot-test -f "$work/id"
cp "$work/id.pub" "$work/authorized_keys"
echo camcast-test >"$work/hostname"
sed -e 's/^source = .*/source = "test-pattern"/' -e 's/^size = .*/size = "320x240"/' \
  "$repo/deploy/camcast.toml" >"$work/camcast.toml"
mcopy -i "$fat" "$work/authorized_keys" "$work/hostname" "$work/camcast.toml" ::/
truncate -s +512M "$disk"

# ---- 3. boot -------------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
GRPC_PORT=$(free_port)
SSH_PORT=$(free_port)
cmdline=$(sed -e 's/console=[^ ]*//g' -e 's/  */ /g' "$work/cmdline.txt")
cmdline="console=ttyAMA0 $cmdline panic=-1"
log "qemu: gRPC on 127.0.0.1:$GRPC_PORT, ssh on 127.0.0.1:$SSH_PORT; kernel command line: $cmdline"
console=$work/console.log
t_boot=$SECONDS
timeout --foreground -k 10 "$TIMEOUT" qemu-system-aarch64 \
  -M virt -cpu cortex-a72 -smp 2 -m 1024 -accel tcg \
  -nographic -monitor none -serial "file:$console" -no-reboot \
  -kernel "$work/vmlinuz" -initrd "$work/initrd" -append "$cmdline" \
  -drive "if=none,file=$disk,format=raw,id=hd0" -device virtio-blk-pci,drive=hd0 \
  -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$GRPC_PORT-:1234,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22" \
  -device virtio-net-pci,netdev=n0 \
  -device virtio-rng-pci \
  </dev/null >"$work/qemu.out" 2>&1 &
QEMU_PID=$!

dump_console() { echo "--- guest console (last 60 lines)"; tail -n 60 "$console" | sed 's/\r$//'; cat "$work/qemu.out"; }
alive() { kill -0 "$QEMU_PID" 2>/dev/null; }

# What went wrong inside, when the guest is up but camcast is not: its journal over SSH.
SSH_OPTS=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes
  -o IdentitiesOnly=yes -o IdentityFile="$work/id" -o ConnectTimeout=20)
g() { ssh "${SSH_OPTS[@]}" -p "$SSH_PORT" root@127.0.0.1 "$@"; }
dump_guest() {
  echo "--- guest: systemctl status camcast; journalctl -b -u camcast-setup -u camcast"
  g 'systemctl --no-pager status camcast.service; journalctl -b -u camcast-setup -u camcast --no-pager | tail -n 40; systemctl --no-pager --failed' || true
}

# qemu accepts forwarded connections before the guest listens: retry until a real answer.
# Give up early when camcast.service keeps failing (the console shows each failed start).
first_frame=
deadline=$((SECONDS + TIMEOUT - 60))
while [ $SECONDS -lt $deadline ] && alive; do
  if "$VIEWER" "127.0.0.1:$GRPC_PORT" --frames 1 --out "$work/first" --connect-timeout 3 >/dev/null 2>&1; then
    first_frame=$((SECONDS - t_boot))
    break
  fi
  failures=$(grep -ac 'Failed to start.*camcast' "$console" 2>/dev/null) || true
  if [ "${failures:-0}" -ge 3 ]; then
    echo "camcast.service failed to start 3 times"
    break
  fi
  sleep 2
done
if [ -z "$first_frame" ]; then
  bad "no frame from the guest ($((SECONDS - t_boot)) s after qemu started)"
  dump_console
  alive && dump_guest
  finish
fi
ok "first frame $first_frame s after qemu started (boot-to-first-frame, TCG)"
echo "BOOT_TO_FIRST_FRAME_SECONDS=$first_frame"

frames() { # frames DIR: 10 frames, all 320x240 JPEG
  rm -rf "$1"
  "$VIEWER" "127.0.0.1:$GRPC_PORT" --frames 10 --out "$1" --stats >"$1.log" 2>&1 || { cat "$1.log"; return 1; }
  local n
  n=$(file "$1"/*.jpg | grep -c 'JPEG image data, .* 320x240' || true)
  echo "camcast-view saved $n JPEG files of 320x240 (camcast.toml from the boot partition)"
  [ "$n" -eq 10 ]
}
check "camcast-view receives 10 frames, 320x240 as the boot partition's camcast.toml says" frames "$work/frames"

# ---- 4. inside the guest -----------------------------------------------------------------------
ssh_ok=0
for _ in $(seq 30); do
  if g true 2>/dev/null; then ssh_ok=1; break; fi
  sleep 3
done
check "ssh root@ with the key from the boot partition's authorized_keys" test "$ssh_ok" = 1
[ "$ssh_ok" = 1 ] || { dump_console; finish; }

g 'systemctl --no-pager status camcast.service; echo; systemctl --no-pager show camcast.service -p Type -p User -p StatusText -p WatchdogUSec -p NRestarts -p ActiveEnterTimestampMonotonic -p MainPID' || true
svc() { g "systemctl show camcast.service -p $1 --value"; }
state=$(g systemctl is-active camcast.service || true)
check "camcast.service is active (Type=notify: READY=1 received)" test "$state" = active
[ "$state" != activating ] || echo "hint: camcast serves but never sent READY=1: is src/systemd.rs wired into main.rs?"
check "camcast runs as user camcast" test "$(g 'stat -c %U /proc/$(systemctl show camcast.service -p MainPID --value)')" = camcast
check "camcast is in groups video and gpio" bash -c "g() { ssh ${SSH_OPTS[*]} -p $SSH_PORT root@127.0.0.1 \"\$@\"; }; g id camcast | grep -q video && g id camcast | grep -q gpio"
status_text=$(svc StatusText)
echo "StatusText: $status_text"
check "STATUS= reaches systemd (StatusText names the listener)" grep -q 'gRPC on' <<<"$status_text"
check "WatchdogSec=30s is in force" test "$(svc WatchdogUSec)" = 30s
# Without WATCHDOG=1 pings systemd would kill camcast 30 s after it started: wait until it has
# run longer than that, then it must not have been restarted.
up_since() { g 'echo $(( $(cut -d" " -f1 /proc/uptime | tr -d .)0000 - $(systemctl show camcast.service -p ActiveEnterTimestampMonotonic --value) ))'; }
up_us=$(up_since)
if [ "$up_us" -lt 36000000 ]; then
  log "camcast active for $((up_us / 1000000)) s; waiting until it has run 36 s (> WatchdogSec)"
  sleep $(((36000000 - up_us) / 1000000 + 1))
fi
check "still active, never restarted, after more than WatchdogSec (watchdog fed)" \
  test "$(g systemctl is-active camcast.service)/$(svc NRestarts)" = active/0

check "host name from the boot partition" test "$(g hostname)" = camcast-test
check "camcast.toml from the boot partition installed" bash -c "ssh ${SSH_OPTS[*]} -p $SSH_PORT root@127.0.0.1 cat /etc/camcast/camcast.toml | cmp -s - '$work/camcast.toml'"
check "boot partition files renamed *.applied" bash -c "ssh ${SSH_OPTS[*]} -p $SSH_PORT root@127.0.0.1 ls /boot/firmware | grep -c '\.applied$' | grep -qx 3"
root_mib=$(g "df -m --output=size / | tail -n 1" | tr -d ' ')
p2_mib=$((p2_size / 2048))
log "root file system: ${root_mib} MiB on a ${p2_mib} MiB partition in the image; disk grown by 512 MiB"
check "root file system grown to the larger disk at first boot" test "$root_mib" -gt $((p2_mib + 400))
check "TLS certificate made at first boot, key readable by camcast only" test "$(g 'stat -c %U:%G:%a /etc/camcast/tls/key.pem; runuser -u camcast -- head -c 27 /etc/camcast/tls/key.pem')" = "$(printf 'root:camcast:640\n-----BEGIN PRIVATE KEY-----')"
check "SSH host keys generated on the camera (none shipped)" test "$(g 'ls /etc/ssh/ssh_host_*_key | wc -l')" -ge 3
check "machine-id generated at first boot" bash -c "ssh ${SSH_OPTS[*]} -p $SSH_PORT root@127.0.0.1 cat /etc/machine-id | grep -qE '^[0-9a-f]{32}$'"
failed=$(g 'systemctl list-units --failed --plain --no-legend' || true)
check "no failed units${failed:+: $failed}" test -z "$failed"
g 'systemctl is-system-running' || true
check "udev: /dev/gpiochip0 is root:gpio 0660 (99-camcast.rules)" test "$(g 'stat -c %U:%G:%a /dev/gpiochip0')" = root:gpio:660
# The LED's way through ProtectKernelTunables=yes (a read-only /sys): ReadWritePaths= on the
# /sys/class/... symlink. The virt machine has no LED; eth0 is laid out the same way
# (/sys/class/net/eth0 -> /sys/devices/.../net/eth0), so it stands in for /sys/class/leds/ACT.
sysfs_write='v=$(cat /sys/class/net/eth0/tx_queue_len) && echo $v >/sys/class/net/eth0/tx_queue_len'
check "ProtectKernelTunables=yes + ReadWritePaths=-/sys/class/<class>/<dev>/ makes that directory writable (as for the LED)" \
  g "systemd-run --quiet --wait --pipe -p ProtectKernelTunables=yes -p ReadWritePaths=-/sys/class/net/eth0/ sh -c '$sysfs_write'"
check "... and without the ReadWritePaths= it is read-only" \
  not g "systemd-run --quiet --wait --pipe -p ProtectKernelTunables=yes sh -c '$sysfs_write' 2>/dev/null"
# mDNS: camcast advertises itself (src/discovery.rs; avahi only answers for camcast-test.local).
# avahi-daemon on the camera is a separate mDNS responder, so resolving camcast's service
# through it (D-Bus, ResolveService) goes over multicast like any browser on the LAN does,
# under camcast.service's sandbox. TXT strings arrive as byte arrays: compare bytes.
txt_bytes() { printf %s "$1" | od -An -tu1 | xargs; }
mdns_resolve='busctl call -- org.freedesktop.Avahi / org.freedesktop.Avahi.Server ResolveService iisssiu -1 -1 "camcast on camcast-test" _camcast._tcp local -1 0'
resolved=
for _ in 1 2 3 4 5; do
  resolved=$(g "$mdns_resolve" 2>&1) && break
  sleep 3
done
echo "avahi resolves camcast's advertisement: $resolved"
has_txt() { grep -qF "$(txt_bytes "$1")" <<<"$resolved"; }
check "camcast advertises _camcast._tcp \"camcast on camcast-test\" on port 1234 (resolved by avahi)" \
  grep -qE '"camcast-test-camcast\.local\.?" -?[0-9]+ "[^"]+" 1234 ' <<<"$resolved"
check "... with api=seed,v1 in its TXT record" has_txt api=seed,v1
check "... and res=320x240 (the boot partition's camcast.toml)" has_txt res=320x240
camcast_log=$(g 'journalctl -b -u camcast --no-pager -o cat' || true)
check "camcast logged its mDNS advertisement" grep -q 'mDNS: advertising' <<<"$camcast_log"
avahi_log=$(g 'journalctl -b -u avahi-daemon --no-pager -o cat' || true)
check "avahi kept the host name camcast-test.local (no conflict with camcast's responder)" \
  not grep -q 'Host name conflict' <<<"$avahi_log"
check "no static avahi service file duplicates camcast's own advertisement" \
  not g 'test -e /etc/avahi/services/camcast.service'
echo "--- on the camera: systemd-analyze security camcast.service"
g 'systemd-analyze security camcast.service 2>/dev/null | tail -n 1' || true
g 'journalctl -b -u camcast-setup -u camcast --no-pager -o cat | head -n 40' || true

# ---- 5. update over SSH with deploy/install.sh --deb ------------------------------------------
inst() {
  "$repo/deploy/install.sh" --port "$SSH_PORT" --deb "$1" \
    --ssh-option StrictHostKeyChecking=no --ssh-option UserKnownHostsFile=/dev/null \
    --ssh-option LogLevel=ERROR --ssh-option BatchMode=yes --ssh-option IdentitiesOnly=yes \
    --ssh-option IdentityFile="$work/id" root@127.0.0.1
}
if [ -n "$DEB" ] && [ -n "$UPGRADE" ]; then
  pid_before=$(svc MainPID)
  log "deploy/install.sh --deb over SSH: the package the image has, $(dpkg-deb -f "$DEB" Version)"
  inst "$DEB" >"$work/inst1.log" 2>&1 || true
  cat "$work/inst1.log"
  check "install.sh --deb, same version: apt changes nothing, camcast not restarted" \
    bash -c "grep -q 'package camcast: $(dpkg-deb -f "$DEB" Version) -> $(dpkg-deb -f "$DEB" Version)' '$work/inst1.log' && grep -q 'camcast.service is running' '$work/inst1.log' && test \"\$(ssh ${SSH_OPTS[*]} -p $SSH_PORT root@127.0.0.1 systemctl show camcast.service -p MainPID --value)\" = '$pid_before'"
  log "deploy/install.sh --deb over SSH: the upgrade, $(dpkg-deb -f "$UPGRADE" Version)"
  inst "$UPGRADE" >"$work/inst2.log" 2>&1 || true
  cat "$work/inst2.log"
  check "install.sh --deb, upgrade: apt installs $(dpkg-deb -f "$UPGRADE" Version), camcast runs" \
    bash -c "grep -q 'package camcast: $(dpkg-deb -f "$DEB" Version) -> $(dpkg-deb -f "$UPGRADE" Version)' '$work/inst2.log' && grep -q 'camcast.service is running' '$work/inst2.log'"
  check "the package's upgrade restarted camcast (a new main process)" test "$(svc MainPID)" != "$pid_before"
  check "the config from the boot partition is kept; the new default is beside it (.dpkg-dist)" \
    bash -c "ssh ${SSH_OPTS[*]} -p $SSH_PORT root@127.0.0.1 cat /etc/camcast/camcast.toml | cmp -s - '$work/camcast.toml' && ssh ${SSH_OPTS[*]} -p $SSH_PORT root@127.0.0.1 test -f /etc/camcast/camcast.toml.dpkg-dist"
  check "frames again after the upgrade" frames "$work/frames2"
elif [ "${CI:-}" = true ]; then
  bad "no --deb/--upgrade packages given: the update over SSH was not tested"
else
  echo "note: no --deb/--upgrade given: the update over SSH with deploy/install.sh --deb is not tested"
fi

# A panic is a bug even when camcast goes on serving: none in its journal, over both runs.
if g 'journalctl -b -u camcast --no-pager -o cat' >"$work/camcast.journal"; then
  check "no panic in camcast's journal" no_panics_in "$work/camcast.journal"
else
  bad "cannot read camcast's journal over SSH"
fi

# ---- 6. clean shutdown ---------------------------------------------------------------------------
g 'systemctl poweroff' >/dev/null 2>&1 || true
for _ in $(seq 90); do alive || break; sleep 1; done
if alive; then bad "guest did not power off within 90 s"; else ok "guest powered off cleanly"; fi
QEMU_PID=
grep -qE 'Kernel panic|Failed to start' "$console" && { echo "--- console problems:"; grep -E 'Kernel panic|Failed to start' "$console"; }

echo
echo "timings: boot-to-first-frame ${first_frame} s (TCG, 2 vCPUs); whole boot test $((SECONDS - T0)) s"
echo "image: $(stat -c %s "$IMAGE") bytes compressed, $raw_bytes bytes raw"
finish
