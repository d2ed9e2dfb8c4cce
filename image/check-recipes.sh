#!/usr/bin/env bash
# image/check-recipes.sh — structure and syntax checks of the Buildroot external tree
# (image/buildroot), without Buildroot itself:
#   - external.desc names the tree; external.mk and Config.in source files that exist;
#   - every Config.in parses as Kconfig (kconfiglib from PyPI, in a cached venv), with the
#     options the package needs;
#   - camcast.mk evaluates under GNU make with stand-ins for Buildroot's infrastructure, its
#     version matches Cargo.toml, and its install commands, run into a scratch target
#     directory, install exactly the files the deploy/ tree ships.
# Ends with "recipes: N passed, M failed".
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
br=$repo/image/buildroot
cd "$repo"

# shellcheck source=scripts/checks.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/checks.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---- layout ------------------------------------------------------------------------------------
check "external.desc: name: CAMCAST" grep -qx 'name: CAMCAST' "$br/external.desc"
check "external.desc: a desc: line" grep -qE '^desc: .+' "$br/external.desc"
# shellcheck disable=SC2016 # a make variable, literally
check "external.mk includes package/*/*.mk" grep -qF '$(BR2_EXTERNAL_CAMCAST_PATH)/package/*/*.mk' "$br/external.mk"
while read -r src; do
  f=${src//\$BR2_EXTERNAL_CAMCAST_PATH/$br}
  check "Config.in sources an existing ${f#"$repo"/}" test -f "$f"
done < <(sed -n 's/^source "\(.*\)"$/\1/p' "$br/Config.in")

# ---- Kconfig -----------------------------------------------------------------------------------
venv=${CAMCAST_KCONFIG_VENV:-/var/tmp/camcast-kconfiglib-venv}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import kconfiglib' 2>/dev/null; then
  python3 -m venv "$venv" >/dev/null
  "$venv/bin/pip" install -q kconfiglib >/dev/null
fi
# A stand-in top level: the symbols Buildroot itself defines, then the external tree.
cat >"$work/Kconfig" <<'EOF'
config BR2_PACKAGE_HOST_RUSTC_TARGET_ARCH_SUPPORTS
	def_bool y
config BR2_TOOLCHAIN_HAS_THREADS
	def_bool y
config BR2_USE_MMU
	def_bool y
config BR2_PACKAGE_HOST_RUSTC
	bool
menu "External options"
source "$BR2_EXTERNAL_CAMCAST_PATH/Config.in"
endmenu
EOF
kconfig_check() {
  BR2_EXTERNAL_CAMCAST_PATH=$br "$venv/bin/python" - "$work/Kconfig" <<'EOF'
import sys, kconfiglib
kconf = kconfiglib.Kconfig(sys.argv[1], warn_to_stderr=False)
for w in kconf.warnings:
    print("kconfig warning:", w)
sym = kconf.syms.get("BR2_PACKAGE_CAMCAST")
assert sym is not None and sym.type == kconfiglib.BOOL, "BR2_PACKAGE_CAMCAST must be a bool"
assert sym.nodes[0].help, "BR2_PACKAGE_CAMCAST needs help text"
sym.set_value(2)
assert sym.tri_value == 2, "BR2_PACKAGE_CAMCAST cannot be enabled"
rustc = kconf.syms["BR2_PACKAGE_HOST_RUSTC"]
assert rustc.tri_value == 2, "BR2_PACKAGE_CAMCAST must select BR2_PACKAGE_HOST_RUSTC"
sys.exit(1 if kconf.warnings else 0)
EOF
}
check "Kconfig parses (kconfiglib), BR2_PACKAGE_CAMCAST can be enabled and selects host-rustc" kconfig_check

# ---- camcast.mk under make ---------------------------------------------------------------------
cat >"$work/stub.mk" <<EOF
# Stand-ins for the parts of Buildroot that camcast.mk relies on.
BR2_EXTERNAL_CAMCAST_PATH := $br
RUSTC_TARGET_NAME := aarch64-unknown-linux-gnu
INSTALL := install
TARGET_DIR := $work/target
HOST_DIR := $work/host
STAGING_DIR := $work/staging
TARGET_CC := aarch64-buildroot-linux-gnu-gcc
TARGET_CXX := aarch64-buildroot-linux-gnu-g++
TARGET_AR := aarch64-buildroot-linux-gnu-ar
PKG_COMMON_CARGO_ENV := CARGO_HOME=$work/cargo-home
pkgdir = \$(dir \$(lastword \$(MAKEFILE_LIST)))
pkgname = \$(lastword \$(subst /, ,\$(pkgdir)))
UPPERCASE = \$(shell echo \$(1) | tr a-z- A-Z_)
define cargo-package
CARGO_PACKAGES += \$(pkgname)
endef
include \$(BR2_EXTERNAL_CAMCAST_PATH)/external.mk
.PHONY: show install
show:
	@echo "packages=\$(strip \$(CARGO_PACKAGES)) version=\$(CAMCAST_VERSION) site_method=\$(CAMCAST_SITE_METHOD) site=\$(abspath \$(CAMCAST_SITE))"
	@echo "deps=\$(CAMCAST_DEPENDENCIES)"
	@echo "hooks=\$(CAMCAST_POST_RSYNC_HOOKS)"
	@echo "users=\$(strip \$(CAMCAST_USERS))"
install: @D = $work/build
install:
	\$(CAMCAST_INSTALL_TARGET_CMDS)
	\$(CAMCAST_INSTALL_INIT_SYSTEMD)
EOF
if make -s -f "$work/stub.mk" show >"$work/show" 2>&1; then ok "camcast.mk evaluates under make"; else bad "camcast.mk does not evaluate:"; fi
cat "$work/show"
cargo_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | sed -n 1p)
check "camcast.mk: one cargo package, camcast" grep -q '^packages=camcast ' "$work/show"
check "camcast.mk: CAMCAST_VERSION = Cargo.toml's $cargo_version" grep -q " version=$cargo_version " "$work/show"
check "camcast.mk: local site is this source tree" grep -q "site_method=local site=$repo\$" "$work/show"
check "camcast.mk: vendors crates after the rsync" grep -q '^hooks=.*CAMCAST_VENDOR_CRATES' "$work/show"
check "camcast.mk: user camcast in video,gpio" grep -qE '^users=camcast -1 camcast -1 \* - - video,gpio ' "$work/show"
mkdir -p "$work/build/target/aarch64-unknown-linux-gnu/release"
cp -r deploy "$work/build/"
printf 'fake\n' >"$work/build/target/aarch64-unknown-linux-gnu/release/camcast"
if make -s -f "$work/stub.mk" install >"$work/install.log" 2>&1; then ok "camcast.mk install commands run"; else bad "camcast.mk install commands fail:"; cat "$work/install.log"; fi
(cd "$work/target" && find . -type f -printf '%m %p\n' | sort) >"$work/installed"
cat "$work/installed"
check "camcast.mk installs binary, config, udev rules and unit" diff -u - "$work/installed" <<'EOF'
644 ./etc/camcast/camcast.toml
644 ./etc/udev/rules.d/99-camcast.rules
644 ./usr/lib/systemd/system/camcast.service
755 ./usr/bin/camcast
EOF

checks_summary recipes
