#!/usr/bin/env bash
# image/customize-base.sh ROOT — the last step of image/build.sh's stage 1, run by mmdebstrap
# (--customize-hook) on the freshly installed bookworm arm64 tree: system settings, the one
# initramfs build, the boot partition's content, and first-boot hygiene. camcast itself is
# added in stage 2, so this result can be cached.
set -euo pipefail
root=${1:?usage: customize-base.sh ROOT}
in_root() { chroot "$root" "$@"; }
log() { printf '[customize %3ss] %s\n' "$SECONDS" "$*"; }

# ---- host name, file systems -------------------------------------------------------------
echo camcast >"$root/etc/hostname"
cat >"$root/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	camcast
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
# By label, so the same image boots from an SD card (mmcblk0), a USB disk (sda) or QEMU (vda).
cat >"$root/etc/fstab" <<'EOF'
# camcast image. The boot partition (FAT) holds the firmware, kernel, initramfs and the
# first-boot settings; only root may read it (Wi-Fi passwords can pass through it).
LABEL=RASPIROOT  /               ext4  defaults,noatime,errors=remount-ro  0  1
LABEL=RASPIFIRM  /boot/firmware  vfat  defaults,noatime,umask=0077         0  2
EOF

# ---- boot configuration: raspi-firmware writes config.txt and cmdline.txt from these -------
# ROOTPART by label (see fstab); consoles: HDMI, and the serial port on GPIO 14/15 (ttyS1 on
# the Pi 3 and 4) last, so it gets the boot messages; CMA=0: headless, no GPU memory pool
# (a cma= setting can keep a Pi 4 from booting).
defaults=$root/etc/default/raspi-firmware
sed -i \
  -e 's|^#\?ROOTPART=.*|ROOTPART="LABEL=RASPIROOT"|' \
  -e 's|^#\?CONSOLES=.*|CONSOLES="tty0 ttyS1,115200"|' \
  -e 's|^#\?CMA=.*|CMA=0|' \
  "$defaults"
if ! grep -q '^ROOTPART="LABEL=RASPIROOT"$' "$defaults" || ! grep -q '^CMA=0$' "$defaults"; then
  log "unexpected $defaults layout"
  exit 1
fi
# Quiet boot on the console, camcast's own messages in the journal.
echo "quiet" >"$root/etc/default/raspi-extra-cmdline"

# ---- the one initramfs build --------------------------------------------------------------
# build.sh's essential hook diverted update-initramfs, so installing the kernel and the
# packages that trigger it did not build it (twice, under emulation). Put it back and build
# once, with the module list of /etc/initramfs-tools/conf.d/camcast.conf. Its post-update hook
# (raspi-firmware) then fills /boot/firmware: firmware, dtbs, kernel, initrd, config.txt,
# cmdline.txt.
rm -f "$root/usr/sbin/update-initramfs"
in_root dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
log "update-initramfs -c -k all (under qemu-user)"
in_root update-initramfs -c -k all
ls "$root"/boot/firmware/initrd.img-* "$root"/boot/firmware/vmlinuz-* >/dev/null
log "initramfs built: $(du -h "$root"/boot/initrd.img-* | cut -f1)"

# ---- services -----------------------------------------------------------------------------
in_root systemctl enable systemd-networkd.service systemd-resolved.service \
  systemd-timesyncd.service ssh.service avahi-daemon.service camcast-setup.service
# Nothing of ours waits for network-online.target; make sure nothing stalls boot for it.
in_root systemctl disable systemd-networkd-wait-online.service 2>/dev/null || true
# avahi does mDNS; resolved must not answer it too.
mkdir -p "$root/etc/systemd/resolved.conf.d"
printf '[Resolve]\nMulticastDNS=no\nLLMNR=no\n' >"$root/etc/systemd/resolved.conf.d/camcast.conf"

# ---- first-boot hygiene: nothing that must differ per camera stays in the image -------------
rm -f "$root"/etc/ssh/ssh_host_*       # camcast-setup runs ssh-keygen -A at first boot
: >"$root/etc/machine-id"               # systemd makes one at first boot
rm -f "$root/var/lib/dbus/machine-id"  # dbus falls back to /etc/machine-id
rm -f "$root/var/lib/systemd/random-seed" "$root/var/lib/systemd/credential.secret"
find "$root/var/log" -type f -delete
rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin
log "base root file system customised"
