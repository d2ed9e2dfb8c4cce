#!/bin/sh
# /init of the throw-away test VM (busybox ash, PID 1). run-in-vm.sh copies this
# file into the per-run initramfs next to:
#   /camcast/config   shell variables written by the host (module options, net, ...)
#   /camcast/run.sh   the payload: exports --env variables, then execs the binary
#                     (or `sh -c` for --shell-cmd)
# Contract with the host: the last thing printed is a line CAMCAST_VM_EXIT=<rc>
# carrying the payload's exit status; then the VM powers off. If setup fails
# no such line is printed (the host then reports a harness failure, 125).

export PATH=/sbin:/usr/sbin:/bin:/usr/bin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
# Symlinks for every applet: /sbin/modprobe, /sbin/rmmod, /sbin/ip, ... (tests
# exec /sbin/modprobe and /sbin/rmmod to simulate camera unplug/replug).
/bin/busybox --install -s
mkdir -p /dev/pts /dev/shm /tmp /run
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
# The kernel opened /dev/console from the built-in initramfs for us, but be
# explicit: everything below must reach the serial console the host reads.
exec </dev/console >/dev/console 2>&1

# shellcheck source=/dev/null  # generated per run by run-in-vm.sh
. /camcast/config

vm() { [ "$CAMCAST_QUIET" = 1 ] || echo "[vm] $*"; }
# Kernel log since userspace started (module loads, driver errors, oopses);
# the boot chatter before "Run /init" is never useful here.
dmesg_since_init() {
    dmesg | awk 'f && !/^\[ *[0-9.]+\] +(\/init|[A-Z]+=|with (arguments|environment):)/
                 /Run \/init as init process/ { f = 1 }'
}
setup_fail() {
    echo "[vm] SETUP FAILED: $*"
    echo "[vm] ---- dmesg since /init ----"
    dmesg_since_init | tail -n 60
    echo "CAMCAST_VM_SETUP_FAILED"
    sync
    poweroff -f
    sleep 10
}

hostname camcast-vm
ip link set lo up || setup_fail "cannot bring up lo"

# Module options also go to modprobe.d so that a later plain
# `modprobe v4l2loopback` (replug simulation) recreates the same device;
# options given on that command line are appended and win.
mkdir -p /etc/modprobe.d
{
    echo "options vivid $CAMCAST_VIVID_OPTS"
    echo "options v4l2loopback $CAMCAST_LOOP_OPTS"
} >/etc/modprobe.d/camcast.conf

# virtio-rng: the kernel's CRNG is seeded at once, so getrandom() never blocks.
modprobe virtio_pci || setup_fail "modprobe virtio_pci"
modprobe virtio_rng 2>/dev/null || true

if [ "$CAMCAST_LOAD_VIVID" = 1 ]; then
    modprobe vivid || setup_fail "modprobe vivid $CAMCAST_VIVID_OPTS"
fi
if [ "$CAMCAST_LOAD_LOOP" = 1 ]; then
    modprobe v4l2loopback || setup_fail "modprobe v4l2loopback $CAMCAST_LOOP_OPTS"
fi

if [ "$CAMCAST_NET" = 1 ]; then
    modprobe virtio_net || setup_fail "modprobe virtio_net"
    i=0
    while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    ip addr add 10.0.2.15/24 dev eth0 || setup_fail "ip addr on eth0"
    ip link set eth0 up || setup_fail "eth0 up"
    # No default route on purpose: qemu's user net is also started with
    # restrict=on, so the guest can only be reached via --hostfwd and can
    # reach nothing outside itself.
fi

up=$(cut -d' ' -f1 /proc/uptime)
vids=
for v in /dev/video*; do [ -e "$v" ] && vids="$vids${vids:+ }$v"; done
vm "$(uname -r) ready at ${up}s; video nodes: ${vids:-none}; net: $([ "$CAMCAST_NET" = 1 ] && echo 'lo, eth0 10.0.2.15/24' || echo lo)"

cd /tmp || setup_fail "no /tmp"
/bin/sh /camcast/run.sh
rc=$?

case "$CAMCAST_DMESG" in
    always) echo "[vm] ---- dmesg ----"; dmesg ;;
    never) ;;
    *) if [ $rc -ne 0 ]; then
           echo "[vm] ---- dmesg since /init (last 40 lines; payload exited $rc) ----"
           dmesg_since_init | tail -n 40
       fi ;;
esac
vm "payload exited $rc at $(cut -d' ' -f1 /proc/uptime)s"
echo "CAMCAST_VM_EXIT=$rc"
sync
poweroff -f
# poweroff -f does not return; if it somehow does, the kernel panics when PID 1
# exits and panic=-1 + qemu -no-reboot end the VM anyway.
sleep 10
