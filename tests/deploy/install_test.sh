#!/usr/bin/env bash
# tests/deploy/install_test.sh — checks deploy/: install.sh (--root, twice, idempotence, config
# preservation, --dry-run), the unit (systemd-analyze verify + security score), the sysusers
# file (systemd-sysusers --root), and the default config (every key of src/config.rs, parsed
# by camcast itself when a host build is at hand).
#
#   tests/deploy/install_test.sh [--camcast HOST_BINARY]
#
# Ends with "deploy: N passed, M failed"; exits non-zero when anything failed. Needs:
# systemd (systemd-analyze, systemd-sysusers), python3 (tomllib), shellcheck is run by
# .ci/deploy-check, not here.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

CAMCAST_HOST_BIN=
[ "${1:-}" = --camcast ] && CAMCAST_HOST_BIN=${2:?}

# The exposure score may not exceed this (systemd-analyze counts tenths: 20 = 2.0).
MAX_EXPOSURE_TENTHS=20

# shellcheck source=scripts/checks.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/checks.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/camcast-deploy-test.XXXXXX")
trap 'rm -rf "$work"' EXIT

# A stand-in for the aarch64 binary: install.sh only copies it.
fakebin=$work/camcast-aarch64
printf '#!/bin/sh\necho fake camcast\n' >"$fakebin"
chmod 755 "$fakebin"

install_sh() { deploy/install.sh --binary "$fakebin" "$@"; }

# Everything about a tree that an install could change: type, mode, owner, size, mtime,
# inode, content hash, link target.
snapshot() {
  (cd "$1" && find . -printf '%y %m %U:%G %s %T@ %i %p -> %l\n' | sort -k7) >"$2"
  (cd "$1" && find . -type f -exec sha256sum {} + | sort -k2) >>"$2"
}

# ---- 1. first install into an empty root -----------------------------------------------------
root=$work/root
mkdir "$root"
install_sh --root "$root" >"$work/run1.log" 2>&1 || { cat "$work/run1.log"; bad "first --root install exits 0"; }
cat "$work/run1.log"
check "first run reports a change" grep -q '^install: result: changed$' "$work/run1.log"

expected_tree=$(
  cat <<'EOF'
d 755 ./etc
d 755 ./etc/camcast
f 644 ./etc/camcast/camcast.toml
d 755 ./etc/systemd
d 755 ./etc/systemd/system
f 644 ./etc/systemd/system/camcast.service
d 755 ./etc/systemd/system/multi-user.target.wants
l 777 ./etc/systemd/system/multi-user.target.wants/camcast.service -> /etc/systemd/system/camcast.service
d 755 ./etc/sysusers.d
f 644 ./etc/sysusers.d/camcast.conf
d 755 ./etc/udev
d 755 ./etc/udev/rules.d
f 644 ./etc/udev/rules.d/99-camcast.rules
d 755 ./usr
d 755 ./usr/bin
f 755 ./usr/bin/camcast
d 755 ./usr/local
d 755 ./usr/local/share
d 755 ./usr/local/share/camcast
f 644 ./usr/local/share/camcast/camcast.toml.default
EOF
)
actual_tree=$(cd "$root" && find . -mindepth 1 -printf '%y %m %p\n' | sort -k3 | sed 's/^l \([0-9]*\) \(.*\)$/l \1 \2/' |
  while read -r type mode path; do
    if [ "$type" = l ]; then echo "$type $mode $path -> $(readlink "$path")"; else echo "$type $mode $path"; fi
  done)
if [ "$actual_tree" = "$expected_tree" ]; then
  ok "file tree, types and modes are exactly as expected"
else
  bad "file tree differs from the expected one:"
  diff <(echo "$expected_tree") <(echo "$actual_tree") || true
fi
check "binary installed byte for byte" cmp -s "$fakebin" "$root/usr/bin/camcast"
check "unit installed byte for byte" cmp -s deploy/camcast.service "$root/etc/systemd/system/camcast.service"
check "sysusers installed byte for byte" cmp -s deploy/camcast.sysusers "$root/etc/sysusers.d/camcast.conf"
check "udev rules installed byte for byte" cmp -s deploy/99-camcast.rules "$root/etc/udev/rules.d/99-camcast.rules"
check "default config installed" cmp -s deploy/camcast.toml "$root/etc/camcast/camcast.toml"

# ---- 2. second run changes nothing -------------------------------------------------------------
snapshot "$root" "$work/before2"
install_sh --root "$root" >"$work/run2.log" 2>&1 || bad "second --root install exits 0"
snapshot "$root" "$work/after2"
check "second run reports nothing to do" grep -q '^install: result: nothing to do$' "$work/run2.log"
check "second run says every file is unchanged" test "$(grep -c '^install: unchanged' "$work/run2.log")" -eq 7
if cmp -s "$work/before2" "$work/after2"; then ok "second run left the tree untouched (inode, mtime, content)"; else
  bad "second run changed the tree"
  diff "$work/before2" "$work/after2" || true
fi

# ---- 3. a user-edited config survives; no .new while the default is unchanged ----------------
sed -i 's/^max_viewers = 64$/max_viewers = 5/' "$root/etc/camcast/camcast.toml"
cp "$root/etc/camcast/camcast.toml" "$work/edited.toml"
install_sh --root "$root" >"$work/run3.log" 2>&1 || bad "third --root install exits 0"
check "edited config kept" cmp -s "$work/edited.toml" "$root/etc/camcast/camcast.toml"
check "no camcast.toml.new while the shipped default is unchanged" test ! -e "$root/etc/camcast/camcast.toml.new"
check "third run reports nothing to do" grep -q '^install: result: nothing to do$' "$work/run3.log"

# ---- 4. a changed default: the edited config survives, the new default lands in .new -----------
newdeploy=$work/newdeploy
mkdir -p "$newdeploy/deploy"
cp -r deploy/. "$newdeploy/deploy/"
sed -i 's/^linger_secs = 2$/linger_secs = 3/' "$newdeploy/deploy/camcast.toml"
"$newdeploy/deploy/install.sh" --binary "$fakebin" --root "$root" >"$work/run4.log" 2>&1 || bad "install with a new default exits 0"
cat "$work/run4.log"
check "edited config still kept after the default changed" cmp -s "$work/edited.toml" "$root/etc/camcast/camcast.toml"
check "camcast.toml.new holds the new default" cmp -s "$newdeploy/deploy/camcast.toml" "$root/etc/camcast/camcast.toml.new"
check "the remembered default is updated" cmp -s "$newdeploy/deploy/camcast.toml" "$root/usr/local/share/camcast/camcast.toml.default"
snapshot "$root" "$work/before5"
"$newdeploy/deploy/install.sh" --binary "$fakebin" --root "$root" >"$work/run5.log" 2>&1 || bad "rerun exits 0"
snapshot "$root" "$work/after5"
check "rerun with the same new default changes nothing" cmp -s "$work/before5" "$work/after5"

# An unedited config follows a changed default (like a dpkg conffile), with no .new.
root2=$work/root2
mkdir "$root2"
install_sh --root "$root2" >/dev/null 2>&1
"$newdeploy/deploy/install.sh" --binary "$fakebin" --root "$root2" >"$work/run6.log" 2>&1 || bad "update of an unedited config exits 0"
check "an unedited config is updated to the new default" cmp -s "$newdeploy/deploy/camcast.toml" "$root2/etc/camcast/camcast.toml"
check "... without a camcast.toml.new" test ! -e "$root2/etc/camcast/camcast.toml.new"

# ---- 5. --dry-run lists every action and touches nothing ---------------------------------------
empty=$work/empty
mkdir "$empty"
install_sh --dry-run --root "$empty" >"$work/dry1.log" 2>&1 || bad "--dry-run exits 0"
cat "$work/dry1.log"
check "--dry-run into an empty root created nothing" test -z "$(find "$empty" -mindepth 1)"
check "--dry-run lists the 6 files it would install" test "$(grep -c '^install: \[dry-run\] would install ' "$work/dry1.log")" -eq 6
check "--dry-run lists enabling the unit" grep -q 'would enable camcast.service' "$work/dry1.log"
snapshot "$root" "$work/before7"
"$newdeploy/deploy/install.sh" --dry-run --binary "$fakebin" --root "$root" >/dev/null 2>&1
sed -i 's/^fps = 30$/fps = 25/' "$newdeploy/deploy/camcast.toml"
printf 'changed\n' >>"$newdeploy/deploy/camcast.service"
"$newdeploy/deploy/install.sh" --dry-run --binary "$fakebin" --root "$root" >"$work/dry2.log" 2>&1
snapshot "$root" "$work/after7"
check "--dry-run over an installed root touched nothing" cmp -s "$work/before7" "$work/after7"
check "--dry-run names the changed unit" grep -q 'would install /etc/systemd/system/camcast.service' "$work/dry2.log"
check "--dry-run names the config's .new" grep -q 'would install /etc/camcast/camcast.toml.new' "$work/dry2.log"

# --dry-run over SSH contacts nothing: ssh and scp on PATH record any call.
fakepath=$work/fakepath
mkdir "$fakepath"
for tool in ssh scp; do
  printf '#!/bin/sh\necho "%s $*" >>"%s/called"\nexit 99\n' "$tool" "$work" >"$fakepath/$tool"
  chmod 755 "$fakepath/$tool"
done
PATH=$fakepath:$PATH install_sh --dry-run pi@camcast.invalid >"$work/dry3.log" 2>&1 || bad "--dry-run over SSH exits 0"
cat "$work/dry3.log"
check "--dry-run over SSH ran neither ssh nor scp" test ! -e "$work/called"
check "--dry-run over SSH lists the copy, the install and the restart" \
  bash -c "grep -q 'would copy to pi@camcast.invalid' '$work/dry3.log' && grep -q 'systemctl restart camcast.service' '$work/dry3.log' && test \$(grep -c 'would install /' '$work/dry3.log') -eq 6"
# And without --dry-run it does use ssh (the fake fails at once).
if PATH=$fakepath:$PATH install_sh pi@camcast.invalid >/dev/null 2>&1; then bad "a failing ssh fails the install"; else ok "a failing ssh fails the install"; fi
check "... after trying ssh pi@camcast.invalid" grep -q '^ssh .*pi@camcast.invalid mktemp' "$work/called"
# --deb: the package over SSH (the real install runs in image/boot-test.sh); here its dry run.
fakedeb=$work/camcast_9.9.9-1_arm64.deb
printf 'not really a package\n' >"$fakedeb"
rm -f "$work/called"
PATH=$fakepath:$PATH deploy/install.sh --dry-run --deb "$fakedeb" pi@camcast.invalid >"$work/dry4.log" 2>&1 || bad "--deb --dry-run over SSH exits 0"
cat "$work/dry4.log"
check "--deb --dry-run over SSH ran neither ssh nor scp" test ! -e "$work/called"
check "--deb --dry-run lists the copy and apt-get install --force-confold of the package" \
  bash -c "grep -q 'would copy to pi@camcast.invalid:<tmpdir>/: camcast_9.9.9-1_arm64.deb' '$work/dry4.log' && grep -q 'apt-get install -y -o Dpkg::Options::=--force-confold <tmpdir>/camcast_9.9.9-1_arm64.deb' '$work/dry4.log'"
check "--deb with --root, with --binary, or with a missing file is refused" bash -c \
  "! deploy/install.sh --deb '$fakedeb' --root '$root' >/dev/null 2>&1 && ! deploy/install.sh --deb '$fakedeb' --binary '$fakebin' pi@h >/dev/null 2>&1 && ! deploy/install.sh --deb '$work/none.deb' pi@h >/dev/null 2>&1"
# An install by an older install.sh put the binary in /usr/local/bin: the next install removes it.
mkdir -p "$root2/usr/local/bin"
cp "$fakebin" "$root2/usr/local/bin/camcast"
install_sh --root "$root2" >"$work/run8.log" 2>&1 || bad "install over a legacy /usr/local/bin/camcast exits 0"
check "an earlier install's /usr/local/bin/camcast is removed" \
  bash -c "test ! -e '$root2/usr/local/bin/camcast' && grep -q 'removed /usr/local/bin/camcast' '$work/run8.log' && grep -q 'result: changed' '$work/run8.log'"
check "usage errors exit non-zero" bash -c "! deploy/install.sh --root '$root' pi@host --binary '$fakebin' >/dev/null 2>&1 && ! deploy/install.sh >/dev/null 2>&1"

# ---- 6. the unit: systemd-analyze verify (in a root with systemd's units) and security ---------
vroot=$work/vroot
mkdir -p "$vroot/usr/lib/systemd"
install_sh --root "$vroot" >/dev/null 2>&1
cp -a /usr/lib/systemd/system "$vroot/usr/lib/systemd/"
# verify exits 0 even for unknown or unparsable settings: any output at all is a failure.
if out=$(systemd-analyze verify --root="$vroot" camcast.service 2>&1) && [ -z "$out" ]; then
  ok "systemd-analyze verify camcast.service: clean"
else
  bad "systemd-analyze verify camcast.service:"
  echo "$out"
fi
security=$(systemd-analyze security --offline=true deploy/camcast.service 2>&1 || true)
echo "$security" | grep -E '^✗' || true
score=$(echo "$security" | sed -n 's/.*Overall exposure level for camcast.service: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security --offline=true deploy/camcast.service: exposure $score (must be <= 2.0)"
check "security: no unparsable settings" bash -c "! grep -qiE 'unknown (key|lvalue)|failed to parse' <<<\"\$1\"" _ "$security"
if systemd-analyze security --offline=true --threshold="$MAX_EXPOSURE_TENTHS" deploy/camcast.service >/dev/null 2>&1; then
  ok "security exposure $score <= 2.0 (--threshold=$MAX_EXPOSURE_TENTHS)"
else
  bad "security exposure $score > 2.0"
fi

# ---- 7. the sysusers file creates the user in video and gpio -----------------------------------
sroot=$work/sroot
mkdir -p "$sroot/etc"
printf 'root:x:0:0:root:/root:/bin/bash\n' >"$sroot/etc/passwd"
printf 'root:x:0:\nvideo:x:44:\n' >"$sroot/etc/group"
: >"$sroot/etc/shadow"
: >"$sroot/etc/gshadow"
mkdir -p "$sroot/etc/sysusers.d"
cp deploy/camcast.sysusers "$sroot/etc/sysusers.d/camcast.conf"
if systemd-sysusers --root="$sroot" >"$work/sysusers.log" 2>&1; then
  ok "systemd-sysusers accepts camcast.sysusers"
else
  bad "systemd-sysusers failed:"
  cat "$work/sysusers.log"
fi
check "user camcast created, with no login shell" grep -qE '^camcast:x:[0-9]+:[0-9]+:camcast network camera:/:/usr/sbin/nologin$' "$sroot/etc/passwd"
check "camcast is in group video" grep -qE '^video:x:44:(.*,)?camcast(,|$)' "$sroot/etc/group"
check "group gpio created with camcast in it" grep -qE '^gpio:x:[0-9]+:(.*,)?camcast(,|$)' "$sroot/etc/group"

# ---- 8. the default config: every key of src/config.rs, valid TOML, accepted by camcast ---------
keys_in_source() { # the field names of a section struct (declared inside `settings! { ... }`)
  awk -v s="$1" '$0 ~ "^ *(pub )?struct " s " *\\{" {on=1; next} on && /^ *\}/ {on=0} on && /^ *(pub )?[a-z_]+: / {sub(/^ *(pub )?/, ""); sub(/:.*/, ""); print}' src/config.rs
}
for section in server:ServerSection camera:CameraSection http:HttpSection; do
  name=${section%%:*}
  keys=$(keys_in_source "${section#*:}")
  [ -n "$keys" ] || bad "found no keys of ${section#*:} in src/config.rs"
  for key in $keys; do
    # A key with a default is set to it; a key without one (e.g. device) is shown commented
    # out, as "# key = example" (a table such as controls as "# [camera.key]").
    if python3 - "$name" "$key" <<'EOF'; then ok "camcast.toml sets [$name] $key"; else bad "camcast.toml lacks [$name] $key"; fi
import re, sys, tomllib
section, key = sys.argv[1], sys.argv[2]
text = open("deploy/camcast.toml").read()
doc = tomllib.loads(text)
if key in doc.get(section, {}):
    sys.exit(0)
commented = re.search(rf"^# ?({re.escape(key)} = .+|\[{re.escape(section)}\.{re.escape(key)}\])$", text, re.M)
print(f"  [{section}] {key}: " + ("commented out (no default)" if commented else "missing"))
sys.exit(0 if commented else 1)
EOF
  done
done
check "camcast.toml: listen = \"[::]:1234\"" grep -qx 'listen = "\[::\]:1234"' deploy/camcast.toml
check "camcast.toml: led = \"sysfs:ACT\"" grep -qx 'led = "sysfs:ACT"' deploy/camcast.toml
check "camcast.toml: every key has a comment above it" python3 - <<'EOF'
import re, sys
lines = open("deploy/camcast.toml").read().splitlines()
bad = [l for i, l in enumerate(lines) if re.match(r"^[a-z_]+ *=", l) and not (i > 0 and lines[i - 1].startswith("#"))]
print("\n".join("  uncommented: " + l for l in bad))
sys.exit(1 if bad else 0)
EOF

if [ -z "$CAMCAST_HOST_BIN" ]; then
  for c in "${CARGO_TARGET_DIR:-target}/debug/camcast" "${CARGO_TARGET_DIR:-target}/release/camcast"; do
    [ -x "$c" ] && CAMCAST_HOST_BIN=$c && break
  done
fi
if [ -n "$CAMCAST_HOST_BIN" ]; then
  log=$work/camcast.log
  "$CAMCAST_HOST_BIN" --config deploy/camcast.toml --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --source test-pattern --led none >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q 'serving gRPC' "$log" && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if grep -q 'serving gRPC' "$log"; then ok "camcast starts with deploy/camcast.toml ($CAMCAST_HOST_BIN)"; else
    bad "camcast rejects deploy/camcast.toml:"
    cat "$log"
  fi
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
else
  echo "note: no host camcast build found; deploy/camcast.toml checked as TOML only"
fi

checks_summary deploy
