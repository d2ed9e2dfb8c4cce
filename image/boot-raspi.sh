#!/usr/bin/env bash
# image/boot-raspi.sh — boots the SD image on QEMU's Raspberry Pi 3 Model B machine (raspi3b)
# the way the Pi itself would load it, and checks camcast there.
#
#   image/boot-raspi.sh [--image FILE.img.xz|FILE.img] [--viewer camcast-view] [--timeout SECS] [--keep]
#
# What is the Pi's own here: the BCM2837 machine model (4 Cortex-A53, the SoC's SD host, its
# USB controller, GPIO and mailbox), the image's own kernel and initramfs (the files config.txt
# names), the image's device tree for the board, bcm2837-rpi-3-b.dtb from the FAT partition,
# the image's cmdline.txt as it is (root=LABEL=RASPIROOT, consoles tty0 and ttyS1: the mini UART
# on the GPIO header, qemu's second serial port), and the image file as the SD card, grown to a
# power of two as qemu's SD card model requires. What is not: QEMU loads kernel, initramfs and
# device tree itself (it does not run the GPU firmware bootcode.bin/start.elf, so config.txt's
# other settings do not apply), and the network is qemu's usb-net device on the Pi's USB (the
# Pi 3's own Ethernet chip is not modelled), which the guest names usb0 and configures by DHCP
# (image/rootfs/etc/systemd/network/40-usb.network).
#
# Checks: the device tree describes the ACT LED (dtc on the host: label "ACT" under /leds), the
# guest boots to camcast.service active, the host's camcast-view gets frames through the USB
# network (boot-to-first-frame measured), and over SSH: the kernel saw the Pi 3 Model B device
# tree, usb0 has 10.0.2.15, the ACT LED exists under /sys/class/leds with its device-tree node,
# and camcast took it over (trigger "none") from inside its sandbox (ReadWritePaths=). Measured
# under QEMU 7.2: the Pi 3 B's ACT LED sits on the firmware's GPIO expander, which QEMU's mailbox
# does not answer, so leds-gpio fails to probe and there is no /sys/class/leds/ACT; the test
# accepts exactly that cause (from dmesg) and fails on any other. A boot in which QEMU's USB
# model lost usb-net (the guest's dwc2 driver: "Not connected") is shown and tried once more
# from a fresh card (see USB_LOST below). Ends with
# "boot-raspi: N passed, M failed". Needs: qemu-system-arm, mtools, fdisk, openssh-client,
# xz-utils, file, device-tree-compiler, python3, and a host camcast-view.
#
# SC2317: functions called through check/bash -c look unreachable to shellcheck.
# SC2016: commands in single quotes are expanded by the guest's shell, on purpose.
# shellcheck disable=SC2317,SC2016
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

IMAGE=
VIEWER=
TIMEOUT=600
KEEP=0
while [ $# -gt 0 ]; do
  case $1 in
    --image) IMAGE=${2:?}; shift ;;
    --viewer) VIEWER=${2:?}; shift ;;
    --timeout) TIMEOUT=${2:?}; shift ;;
    --keep) KEEP=1 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;/^# \(shellcheck\|SC[0-9]\)/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

# shellcheck source=image/boot-lib.sh
. "$here/boot-lib.sh"
boot_setup boot-raspi

# ---- 1. the card: kernel, initramfs, device tree, settings ------------------------------------
log "image: $IMAGE"
disk=$work/sd.img
# The card as flashed from the image (every boot attempt starts from one: a boot that failed
# may have half-run the first-boot set-up).
unpack_card() {
  case $IMAGE in
    *.xz) xz -dc -T2 "$IMAGE" >"$disk" ;;
    *) cp --sparse=always "$IMAGE" "$disk" ;; # a raw .img (image/build.sh --no-xz)
  esac
}
unpack_card
p1_start=$(sfdisk -d "$disk" | sed -n "s|^$disk""1 : start= *\([0-9]*\).*|\1|p")
fat="$disk@@$((p1_start * 512))"
export MTOOLS_SKIP_CHECK=1
mcopy -n -i "$fat" ::config.txt ::cmdline.txt ::bcm2837-rpi-3-b.dtb "$work/"
kernel=$(sed -n 's/^kernel=//p' "$work/config.txt")
initrd=$(sed -n 's/^initramfs \([^ ]*\).*/\1/p' "$work/config.txt")
mcopy -n -i "$fat" "::$kernel" "$work/vmlinuz"
mcopy -n -i "$fat" "::$initrd" "$work/initrd"
cmdline=$(tr -d '\n' <"$work/cmdline.txt")
log "kernel $kernel, initramfs $initrd, device tree bcm2837-rpi-3-b.dtb; cmdline.txt: $cmdline"

# The ACT LED in the board's device tree: a gpio-leds child labelled ACT.
dtc -q -I dtb -O dts -o "$work/rpi-3-b.dts" "$work/bcm2837-rpi-3-b.dtb"
led_node=$(awk '/^\tleds \{/{on=1} on' "$work/rpi-3-b.dts" | sed -n '/compatible = "gpio-leds"/,/^\t};/p')
echo "--- device tree /leds:"
echo "$led_node"
check "device tree: /leds is gpio-leds with a child labelled \"ACT\" (what led = \"sysfs:ACT\" and ReadWritePaths= name)" \
  grep -q 'label = "ACT";' <<<"$led_node"

ssh-keygen -q -t ed25519 -N '' -C camcast-boot-raspi -f "$work/id"
cp "$work/id.pub" "$work/authorized_keys"
sed -e 's/^source = .*/source = "test-pattern"/' -e 's/^size = .*/size = "320x240"/' \
  "$repo/deploy/camcast.toml" >"$work/camcast.toml"
# The test's key and settings on the boot partition, and the size QEMU's SD card model takes
# (a power of two).
finish_card() {
  mcopy -i "$fat" "$work/authorized_keys" "$work/camcast.toml" ::/
  size=$(stat -c %s "$disk")
  card=1
  while [ "$card" -lt "$size" ]; do card=$((card * 2)); done
  truncate -s "$card" "$disk"
}
finish_card
log "SD card: $size bytes of image in a $((card / 1048576)) MiB card"

# ---- 2. boot on the raspi3b model ------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
GRPC_PORT=$(free_port)
SSH_PORT=$(free_port)
console=$work/console.log
log "qemu -M raspi3b: gRPC on 127.0.0.1:$GRPC_PORT, ssh on 127.0.0.1:$SSH_PORT (usb-net)"
# Serial ports: the first is the PL011 (the Pi 3 wires it to Bluetooth), the second the mini
# UART, the header's ttyS1, where cmdline.txt's console= sends the boot messages.
start_qemu() {
  t_boot=$SECONDS
  : >"$console"
  timeout --foreground -k 10 "$TIMEOUT" qemu-system-aarch64 \
    -M raspi3b -m 1G -accel tcg \
    -kernel "$work/vmlinuz" -initrd "$work/initrd" -dtb "$work/bcm2837-rpi-3-b.dtb" -append "$cmdline" \
    -drive "file=$disk,if=sd,format=raw" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$GRPC_PORT-:1234,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22" \
    -device usb-net,netdev=n0 \
    -display none -monitor none -serial null -serial "file:$console" -no-reboot \
    </dev/null >"$work/qemu.out" 2>&1 &
  QEMU_PID=$!
}
stop_qemu() {
  kill "$QEMU_PID" 2>/dev/null || true
  wait "$QEMU_PID" 2>/dev/null || true
  QEMU_PID=
}
alive() { kill -0 "$QEMU_PID" 2>/dev/null; }
dump_console() { echo "--- guest console (last 80 lines)"; tail -n 80 "$console" | sed 's/\r$//'; cat "$work/qemu.out"; }

SSH_OPTS=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes
  -o IdentitiesOnly=yes -o IdentityFile="$work/id" -o ConnectTimeout=20)
g() { ssh "${SSH_OPTS[@]}" -p "$SSH_PORT" root@127.0.0.1 "$@"; }

# The one failure of QEMU's model seen here that is not camcast's or the image's: in one CI run
# (2026-12-01) the guest's USB host driver (dwc2) said "Not connected" for the usb-net device
# ~12 s into the boot, in the initramfs, and the network never came up (slirp: "Failed to send
# packet"); 9 other boots of the same image on 2-core machines under loads of 1 to 12 never
# showed it. A boot with that signature is shown and tried once more from a fresh card; any
# other failure, or the signature twice, fails the test.
USB_LOST='dwc2 [0-9a-f]*\.usb: Not connected'
usb_lost() { grep -q "$USB_LOST" "$console"; }

# Waits for camcast-view's first frame through usb-net; sets first_frame (seconds since qemu
# started) or returns 1. Once the USB-lost signature shows, waits 90 s more at most.
wait_first_frame() {
  local deadline=$((SECONDS + TIMEOUT - 60)) lost=0
  while [ $SECONDS -lt $deadline ] && alive; do
    if "$VIEWER" "127.0.0.1:$GRPC_PORT" --frames 1 --out "$work/first" --connect-timeout 3 >/dev/null 2>&1; then
      first_frame=$((SECONDS - t_boot))
      return 0
    fi
    if [ $lost = 0 ] && usb_lost; then
      lost=1
      deadline=$((SECONDS + 90 < deadline ? SECONDS + 90 : deadline))
    fi
    sleep 2
  done
  return 1
}

first_frame=
attempts=0
while :; do
  attempts=$((attempts + 1))
  start_qemu
  if wait_first_frame; then break; fi
  waited=$((SECONDS - t_boot))
  stop_qemu
  if usb_lost && [ "$attempts" = 1 ]; then
    log "boot 1: no frame after $waited s, and the guest's dwc2 driver lost the usb-net device ($(grep -c "$USB_LOST" "$console") \"Not connected\", first: $(grep -m1 "$USB_LOST" "$console" | tr -d '\r'))"
    echo "EMULATION: QEMU's raspi3b USB model lost usb-net in this boot (the measured failure below); booting a fresh card once more"
    dump_console
    unpack_card
    finish_card
    continue
  fi
  bad "no frame from the raspi3b guest over usb-net ($waited s after qemu started, boot $attempts)"
  usb_lost && echo "the guest's dwc2 driver lost the usb-net device again (\"Not connected\")"
  dump_console
  finish
done
ok "first frame $first_frame s after qemu started (boot-to-first-frame, raspi3b, TCG)"
echo "RASPI_BOOT_TO_FIRST_FRAME_SECONDS=$first_frame"

frames() {
  rm -rf "$1"
  "$VIEWER" "127.0.0.1:$GRPC_PORT" --frames 10 --out "$1" --stats >"$1.log" 2>&1 || { cat "$1.log"; return 1; }
  local n
  n=$(file "$1"/*.jpg | grep -c 'JPEG image data, .* 320x240' || true)
  echo "camcast-view saved $n JPEG files of 320x240 over the Pi's USB network"
  [ "$n" -eq 10 ]
}
check "camcast-view receives 10 frames, 320x240 as the boot partition's camcast.toml says" frames "$work/frames"

# ---- 3. inside: the board, the network, the LED ------------------------------------------------
ssh_ok=0
for _ in $(seq 30); do
  if g true 2>/dev/null; then ssh_ok=1; break; fi
  sleep 3
done
check "ssh root@ over the USB network" test "$ssh_ok" = 1
[ "$ssh_ok" = 1 ] || { dump_console; finish; }
model=$(g 'tr -d "\0" </proc/device-tree/model')
echo "device tree model: $model"
check "the kernel runs on the Raspberry Pi 3 Model B device tree" test "$model" = "Raspberry Pi 3 Model B"
usb0=$(g 'ip -4 -o addr show dev usb0' || true)
echo "usb0: $usb0"
check "usb0 (qemu's usb-net; cdc_subset binds it) configured by DHCP: 10.0.2.15" grep -q 'inet 10.0.2.15/24' <<<"$usb0"
check "camcast.service is active" test "$(g systemctl is-active camcast.service)" = active

dt_label=$(g 'tr -d "\0" </sys/firmware/devicetree/base/leds/led-act/label 2>/dev/null' || true)
check "the running kernel's device tree has /leds/led-act labelled ACT" test "$dt_label" = ACT
camcast_log=$(g 'journalctl -b -u camcast --no-pager -o cat' || true)
if g 'test -d /sys/class/leds/ACT'; then
  ok "/sys/class/leds/ACT exists (the path camcast.service's ReadWritePaths= makes writable)"
  g 'readlink -f /sys/class/leds/ACT; ls -l /sys/class/leds/ACT/brightness /sys/class/leds/ACT/trigger' || true
  check "99-camcast.rules gave group gpio write access to ACT's brightness and trigger" \
    test "$(g 'stat -c %G:%A /sys/class/leds/ACT/brightness /sys/class/leds/ACT/trigger' | sort -u | tr '\n' ' ')" = "gpio:-rw-rw-r-- "
  trigger=$(g 'cat /sys/class/leds/ACT/trigger')
  check "camcast took the ACT LED over from inside its sandbox (trigger [none])" grep -q '\[none\]' <<<"$trigger"
else
  # On a Pi 3 Model B the ACT LED hangs off the firmware's GPIO expander (gpios = <&expgpio 2>):
  # the kernel asks the VideoCore firmware for it through the mailbox, and QEMU's model of the
  # mailbox has no GPIO-expander property, so leds-gpio cannot probe. Only that cause is
  # accepted here; any other reason for a missing LED fails.
  dmesg_led=$(g 'dmesg' | grep -E 'leds-gpio: probe of leds failed|raspberrypi-exp-gpio .*Failed to get GPIO 2 (config|state)' || true)
  echo "--- dmesg: why there is no /sys/class/leds/ACT"
  echo "$dmesg_led"
  if grep -q 'leds-gpio: probe of leds failed' <<<"$dmesg_led" && grep -q 'raspberrypi-exp-gpio .*Failed to get GPIO 2' <<<"$dmesg_led"; then
    ok "no /sys/class/leds/ACT, for the known emulation reason only: qemu's firmware mailbox answers no GPIO-expander query (expgpio 2), so leds-gpio's probe failed"
    echo "EMULATION LIMIT: the ACT LED and camcast driving it cannot be shown under qemu -M raspi3b;"
    echo "  .ci/image-boot-test shows the sandbox side (ReadWritePaths= on a /sys/class symlink) on virt."
    echo "$camcast_log" | grep -i 'led' || true
    check "camcast, without its LED, says so in its log and keeps serving" \
      bash -c "grep -qi 'status LED' <<<\"\$1\" && test \"\$(ssh ${SSH_OPTS[*]} -p $SSH_PORT root@127.0.0.1 systemctl is-active camcast.service)\" = active" _ "$camcast_log"
  else
    bad "/sys/class/leds/ACT does not exist, and not for the known emulation reason"
    g 'ls -l /sys/class/leds/; dmesg | grep -iE "leds|gpio" | tail -n 20' || true
  fi
fi

# ---- 4. done: qemu is stopped (the virt boot test checks a clean poweroff) --------------------
stop_qemu
echo
echo "timings: boot-to-first-frame ${first_frame} s (raspi3b, TCG, boot $attempts); whole raspi boot test $((SECONDS - T0)) s"
finish
