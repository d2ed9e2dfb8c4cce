#!/usr/bin/env bash
# tests/deploy/deb_test.sh — camcast's arm64 Debian package in a real arm64 Debian root file
# system, with dpkg and the maintainer scripts running under qemu-user (binfmt_misc):
#
#   sudo tests/deploy/deb_test.sh --base BASE.tar --deb camcast_V-1_arm64.deb --upgrade camcast_V-2_arm64.deb
#
# BASE.tar is the SD image's base root file system (image/build.sh --base-only: Debian bookworm
# arm64 with systemd, udev, dbus; no camcast). In a scratch copy of it:
#   1. install: files in place, user camcast in video and gpio, camcast.service enabled (the
#      multi-user.target.wants link, deb-systemd-helper's state), the conffile registered, and
#      the installed camcast runs (--help, under qemu-user);
#   2. upgrade with an edited config, the way apt runs non-interactively (--force-confold, as
#      deploy/install.sh --deb does), and the way a person answers dpkg's question with its
#      default (keep): the edit survives, the new default lands beside it as .dpkg-dist;
#   3. purge: nothing of camcast is left but its system user (kept, as Debian keeps system users);
#   4. install and upgrade without editing the config: it follows the new default, silently.
# No service starts: no systemd runs in the chroot (as when an image is built).
# Ends with "deb: N passed, M failed".
# SC2016: dpkg-query's ${Field} formats are dpkg's, in single quotes on purpose.
# shellcheck disable=SC2016
set -euo pipefail

BASE=
DEB=
UPGRADE=
while [ $# -gt 0 ]; do
  case $1 in
    --base) BASE=${2:?}; shift ;;
    --deb) DEB=${2:?}; shift ;;
    --upgrade) UPGRADE=${2:?}; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
for f in "$BASE" "$DEB" "$UPGRADE"; do [ -f "$f" ] || { echo "missing file: '$f' (see the usage at the top)" >&2; exit 2; }; done
[ "$(id -u)" = 0 ] || { echo "must run as root (chroot)" >&2; exit 2; }
arch-test arm64 >/dev/null || { echo "arm64 binaries do not run here (binfmt_misc + qemu-user-static; image/build.sh registers them)" >&2; exit 2; }

# shellcheck source=scripts/checks.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/checks.sh"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/camcast-deb-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir "$root"
t0=$SECONDS
tar -C "$root" --numeric-owner -xpf "$BASE"
echo "arm64 root file system from $BASE in $((SECONDS - t0)) s"
cp "$DEB" "$root/tmp/v1.deb"
cp "$UPGRADE" "$root/tmp/v2.deb"
in_root() { chroot "$root" "$@"; }
v1=$(dpkg-deb -f "$DEB" Version)
v2=$(dpkg-deb -f "$UPGRADE" Version)

# Every path in the root except what an install legitimately leaves behind (dpkg's database and
# logs, the user database and its backups, deb-systemd-helper's own directories).
tree() {
  (cd "$root" && find . -path ./var/lib/dpkg -prune -o -path ./var/log -prune -o -path ./tmp -prune -o -path ./var/cache/debconf -prune \
    -o -path ./proc -prune -o -print | grep -vE '^\./etc/(passwd|group|shadow|gshadow)-?$' | grep -vE '^\./var/lib/systemd/deb-systemd-(helper-enabled|helper-masked|user-helper-enabled)$' | sort)
}
tree >"$work/tree.before"

# ---- 1. install ------------------------------------------------------------------------------
if in_root dpkg -i /tmp/v1.deb >"$work/install.log" 2>&1; then ok "dpkg -i camcast $v1"; else bad "dpkg -i camcast $v1"; cat "$work/install.log"; fi
check "dpkg: camcast $v1 installed" test "$(in_root dpkg-query -W -f '${Status} ${Version}' camcast)" = "install ok installed $v1"
for f in /usr/bin/camcast /usr/lib/systemd/system/camcast.service /usr/lib/sysusers.d/camcast.conf \
  /usr/lib/udev/rules.d/99-camcast.rules /etc/camcast/camcast.toml; do
  check "installed $f" test -f "$root$f"
done
check "camcast user created by the postinst (systemd-sysusers), no login shell" grep -qE '^camcast:x:[0-9]+:[0-9]+:camcast network camera:/:/usr/sbin/nologin$' "$root/etc/passwd"
check "camcast is in group video" grep -qE '^video:x:[0-9]+:(.*,)?camcast(,|$)' "$root/etc/group"
check "camcast is in group gpio" grep -qE '^gpio:x:[0-9]+:(.*,)?camcast(,|$)' "$root/etc/group"
check "camcast.service enabled (multi-user.target.wants -> the packaged unit)" \
  test "$(readlink "$root/etc/systemd/system/multi-user.target.wants/camcast.service")" = /lib/systemd/system/camcast.service -o \
  "$(readlink "$root/etc/systemd/system/multi-user.target.wants/camcast.service")" = /usr/lib/systemd/system/camcast.service
check "deb-systemd-helper knows it enabled camcast.service" test -f "$root/var/lib/systemd/deb-systemd-helper-enabled/camcast.service.dsh-also"
check "systemctl (offline) reports camcast.service enabled" test "$(in_root systemctl is-enabled camcast.service 2>/dev/null)" = enabled
check "/etc/camcast/camcast.toml is a registered conffile" bash -c "chroot '$root' dpkg-query -W -f '\${Conffiles}' camcast | grep -q '/etc/camcast/camcast.toml [0-9a-f]\{32\}'"
check "the installed camcast runs (--help, aarch64 under qemu-user)" bash -c "chroot '$root' /usr/bin/camcast --help | grep -q -- '--config'"

# ---- 2. upgrade with an edited config ----------------------------------------------------------
sed -i 's/^max_viewers = 64$/max_viewers = 5/' "$root/etc/camcast/camcast.toml"
grep -q '^max_viewers = 5$' "$root/etc/camcast/camcast.toml" || bad "could not edit camcast.toml (no 'max_viewers = 64' line)"
cp "$root/etc/camcast/camcast.toml" "$work/edited.toml"
if in_root dpkg -i --force-confdef --force-confold /tmp/v2.deb >"$work/upgrade.log" 2>&1; then ok "upgrade to $v2 (dpkg --force-confold, as apt -y and install.sh --deb run it)"; else bad "upgrade to $v2"; fi
cat "$work/upgrade.log"
check "dpkg: camcast $v2 installed" test "$(in_root dpkg-query -W -f '${Status} ${Version}' camcast)" = "install ok installed $v2"
check "the edited camcast.toml is kept" cmp -s "$work/edited.toml" "$root/etc/camcast/camcast.toml"
check "the new default is beside it as camcast.toml.dpkg-dist" bash -c "grep -q '^linger_secs = 3$' '$root/etc/camcast/camcast.toml.dpkg-dist'"
check "still enabled after the upgrade" test "$(in_root systemctl is-enabled camcast.service 2>/dev/null)" = enabled
# The same upgrade answered by a person at dpkg's prompt with its default, N (keep yours).
# Back to v1 first (a downgrade that keeps the edited config), so that v2 is an upgrade again.
if ! in_root dpkg -i --force-confdef --force-confold /tmp/v1.deb </dev/null >"$work/downgrade.log" 2>&1; then
  bad "downgrade to $v1 for the second upgrade"
  cat "$work/downgrade.log"
fi
rm -f "$root/etc/camcast/camcast.toml.dpkg-dist" "$root/etc/camcast/camcast.toml.dpkg-old"
if printf 'N\n' | in_root dpkg -i /tmp/v2.deb >"$work/upgrade2.log" 2>&1; then ok "upgrade to $v2 answering dpkg's conffile question with its default (N)"; else bad "upgrade to $v2 with the prompt"; cat "$work/upgrade2.log"; fi
check "... dpkg asked about camcast.toml" grep -q "Configuration file '/etc/camcast/camcast.toml'" "$work/upgrade2.log"
check "... the edited camcast.toml is kept" cmp -s "$work/edited.toml" "$root/etc/camcast/camcast.toml"

# ---- 3. purge --------------------------------------------------------------------------------
mkdir -p "$root/etc/camcast/tls" && echo key >"$root/etc/camcast/tls/key.pem" # as the SD image's first boot makes
if in_root dpkg --purge camcast >"$work/purge.log" 2>&1; then ok "dpkg --purge camcast"; else bad "dpkg --purge camcast"; cat "$work/purge.log"; fi
check "dpkg: camcast not installed" not bash -c "chroot '$root' dpkg-query -W -f '\${Status}' camcast 2>/dev/null | grep -q installed"
tree >"$work/tree.after"
if cmp -s "$work/tree.before" "$work/tree.after"; then ok "purge left no file of camcast (the tree is as before the install)"; else
  bad "purge left files behind:"
  diff "$work/tree.before" "$work/tree.after" || true
fi
check "no camcast entries in deb-systemd-helper's state" test -z "$(find "$root/var/lib/systemd" -name '*camcast*' -print -quit)"
check "the system user camcast stays (Debian keeps system users on purge)" grep -q '^camcast:' "$root/etc/passwd"

# ---- 4. an unedited config follows the new default --------------------------------------------
in_root dpkg -i /tmp/v1.deb >/dev/null 2>&1 || bad "reinstall $v1 after the purge"
if in_root dpkg -i /tmp/v2.deb </dev/null >"$work/upgrade3.log" 2>&1; then ok "upgrade to $v2 with the config unedited (no question asked)"; else bad "upgrade with an unedited config"; cat "$work/upgrade3.log"; fi
check "the unedited camcast.toml now holds the new default" grep -q '^linger_secs = 3$' "$root/etc/camcast/camcast.toml"
check "... with no .dpkg-dist beside it" test ! -e "$root/etc/camcast/camcast.toml.dpkg-dist"

checks_summary deb
